// The path indicator: which way requests go, in words, with the measured
// round trip and setup time on hover and on keyboard focus.

/** What the indicator says for each path. */
export const PATH_LABELS = Object.freeze({
  loopback: '\u26a1 loopback',
  direct: '\u26a1 direct',
  relay: '\u26a1 TURN relay',
  normal: 'normal path',
});

const PATH_DESCRIPTIONS = Object.freeze({
  loopback: 'Connected to home through its loopback listener on this machine',
  direct: 'Connected directly to home over WebRTC',
  relay: 'Connected to home over WebRTC through a TURN relay',
  normal: 'Connected to home through the public server',
});

function formatMs(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return null;
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** The details line for a client's current path: "round trip 0.4 ms, setup 25 ms". */
export function describeTiming(timing) {
  const parts = [];
  const rtt = formatMs(timing?.rttMs);
  const setup = formatMs(timing?.setupMs);
  parts.push(`round trip ${rtt ?? 'not measured yet'}`);
  if (setup) parts.push(`setup ${setup}`);
  return parts.join(', ');
}

/**
 * Shows the client's path in `element` (an element or a selector): the path
 * in words ('⚡ loopback', '⚡ direct', '⚡ TURN relay', 'normal path'), and,
 * while the pointer is over it or it has keyboard focus, the measured round
 * trip and setup time. The element is made a polite live region (role
 * status) and focusable, so screen readers announce a change of path and
 * keyboard users can read the details.
 */
export function installIndicator(client, element) {
  const el = typeof element === 'string' ? globalThis.document?.querySelector(element) : element;
  if (!el) return;
  const doc = el.ownerDocument ?? globalThis.document;
  el.setAttribute('role', 'status');
  el.setAttribute('aria-live', 'polite');
  el.setAttribute('aria-atomic', 'true');
  if (!el.hasAttribute('tabindex')) el.setAttribute('tabindex', '0');
  el.dataset.beelineIndicator = '';
  const label = doc.createElement('span');
  label.className = 'beeline-path';
  const details = doc.createElement('span');
  details.className = 'beeline-details';
  details.hidden = true;
  el.replaceChildren(label, details);
  let showing = 0; // hover and focus each count
  const render = () => {
    const path = client.path;
    const text = describeTiming(client.timing);
    label.textContent = PATH_LABELS[path] ?? String(path);
    // Empty while hidden, so the element's text is what is shown.
    details.textContent = showing > 0 ? ` (${text})` : '';
    details.hidden = showing === 0;
    el.dataset.path = path;
    el.title = `${PATH_DESCRIPTIONS[path] ?? ''}; ${text}`;
    el.hidden = false;
  };
  const show = () => {
    showing += 1;
    render();
  };
  const hide = () => {
    showing = Math.max(0, showing - 1);
    render();
  };
  el.addEventListener('mouseenter', show);
  el.addEventListener('mouseleave', hide);
  el.addEventListener('focus', show);
  el.addEventListener('blur', hide);
  client.addEventListener('pathchange', render);
  client.addEventListener('timingchange', render);
  render();
}
