// The path indicator.

import { INDICATOR_TEXT } from './common.mjs';


/**
 * Shows "⚡ direct" in `element` while the client's path is direct, and hides
 * it otherwise. `element` may be an element or a selector.
 */
export function installIndicator(client, element) {
  const el = typeof element === 'string' ? globalThis.document?.querySelector(element) : element;
  if (!el) return;
  const update = () => {
    if (client.path === 'direct') {
      el.textContent = INDICATOR_TEXT;
      el.title = 'Connected directly to home over WebRTC';
      el.hidden = false;
    } else {
      el.hidden = true;
    }
  };
  client.addEventListener('pathchange', update);
  update();
}
