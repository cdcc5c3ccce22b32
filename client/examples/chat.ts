// A page using @beeline/client from TypeScript: what `just client-check`
// compiles against client/index.d.ts (tsc --noEmit, strict).
import { createClient, type BeelineClient, type BeelinePath, type PathTiming, BeelineWebSocket } from '@beeline/client';

const client: BeelineClient = createClient({ signalBase: '/webrtc', indicator: '#beeline-indicator', budgetMs: 8000 });

// The page's own path display, next to (or instead of) the built-in indicator.
function showPath(path: BeelinePath): string {
  switch (path) {
    case 'loopback':
      return 'on this machine';
    case 'direct':
      return 'direct';
    case 'relay':
      return 'via TURN';
    case 'normal':
      return 'through the server';
  }
}
client.addEventListener('pathchange', (event) => {
  const label: string = showPath(event.detail.path);
  const rtt: number | null = event.detail.rttMs;
  document.title = `chat (${label}${rtt === null ? '' : `, ${rtt.toFixed(1)} ms`}; was ${showPath(event.detail.previous)})`;
});
client.addEventListener('timingchange', (event) => {
  const timing: PathTiming = event.detail;
  console.log(timing.path, timing.rttMs, timing.setupMs);
});

export async function send(message: string): Promise<string> {
  const res: Response = await client.fetch('/v1/chat', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ message }),
  });
  if (!res.ok || res.body === null) throw new Error(`chat answered ${res.status}`);
  const decoder = new TextDecoder();
  let text = '';
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  return text + decoder.decode();
}

// `fetch` is bound, so it can be passed around like the global one.
const { fetch: beelineFetch } = client;
export const health: Promise<Response> = beelineFetch('/healthz');

const socket: BeelineWebSocket = client.websocket('/ws/echo', ['echo.v1']);
socket.binaryType = 'arraybuffer';
socket.onopen = () => socket.send('hello');
socket.onmessage = (event: MessageEvent) => console.log(socket.path === 'loopback' ? 'near' : socket.path, event.data);
socket.addEventListener('close', (event) => console.log(event.code, event.reason));

export const chosen: Promise<BeelinePath> = client.ready;
export const now: BeelinePath = client.path;
export const nearest: boolean = client.timing.path === 'loopback';
