// A page using @beeline/client from TypeScript: what `just client-check`
// compiles against client/index.d.ts (tsc --noEmit, strict).
import { createClient, type BeelineClient, type BeelinePath, BeelineWebSocket } from '@beeline/client';

const client: BeelineClient = createClient({ signalBase: '/webrtc', indicator: '#beeline-indicator', budgetMs: 8000 });

// The page's own path display, next to (or instead of) the built-in indicator.
function showPath(path: BeelinePath): string {
  switch (path) {
    case 'pending':
      return 'connecting';
    case 'direct':
      return 'direct';
    case 'fallback':
      return 'normal path';
  }
}
client.addEventListener('pathchange', (event) => {
  const label: string = showPath(event.detail.path);
  document.title = `chat (${label})`;
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
socket.onmessage = (event: MessageEvent) => console.log(socket.path, event.data);
socket.addEventListener('close', (event) => console.log(event.code, event.reason));

export const outcome: Promise<'direct' | 'fallback'> = client.ready;
