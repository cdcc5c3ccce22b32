// Type declarations for @beeline/client, beeline's browser client
// (client/src, built into the bundle signal-api serves at {base}/client.js).
// Hand-written; `just client-check` compiles client/examples/*.ts against them.

/** Which way requests go: 'pending' while the channel is being set up (requests take the normal path meanwhile), 'direct' over the data channel, 'fallback' over the normal path. */
export type BeelinePath = 'pending' | 'direct' | 'fallback';

/** What `ready` settles on. */
export type BeelineOutcome = 'direct' | 'fallback';

/** Options of {@link createClient}. */
export interface CreateClientOptions {
  /** Where the signaling endpoints live (default '/webrtc'). */
  signalBase?: string;
  /** Whether to set up the direct path at all (default: `globalThis.__WEBRTC_ENABLED__ === true`). */
  enabled?: boolean;
  /** How long setup may take before it is abandoned, in ms (default 8000). */
  budgetMs?: number;
  /** How long to wait for the home's `agree` before speaking protocol v1, in ms (default 2000). */
  negotiateMs?: number;
  /** How long a request over the channel waits for its response head before `fetch` rejects with a TimeoutError, in ms (default 120000; 0: no limit). */
  headTimeoutMs?: number;
  /** Per-stream window for response bodies, in bytes (default 262144). */
  window?: number;
  /** The protocol v2 features to ask for (default: all of {@link FEATURES}). */
  features?: readonly string[];
  /** Carry the session's sealed cookie jar (default true; docs/cookies.md). */
  cookies?: boolean;
  /** An element, or a selector, that shows the path (see {@link installIndicator}). */
  indicator?: Element | string;
  /** The normal path (default: the global fetch). */
  fallbackFetch?: typeof fetch;
  /** What signaling requests use (default: the global fetch). */
  signalFetch?: typeof fetch;
  /** What relative URLs resolve against and what counts as same-origin (default: `location.href`). */
  baseUrl?: string;
  /** The RTCPeerConnection to use (tests pass a fake; null acts like a browser without WebRTC). */
  RTCPeerConnection?: typeof RTCPeerConnection | null;
  /** The normal path's WebSocket (default: the browser's). */
  WebSocket?: typeof WebSocket;
  /** Whether a ReadableStream request body streams up (default: whether the browser supports request streams). */
  requestStreams?: boolean;
}

/** What the channel's hello/agree settled. */
export interface ProtocolInfo {
  version: 1 | 2;
  features?: string[];
  binary?: boolean;
  window?: number;
  maxStreams?: number;
  maxWsMessage?: number;
}

/** Detail of a `pathchange` event. */
export interface PathChangeDetail {
  path: BeelinePath;
}

export interface BeelineClientEventMap {
  pathchange: CustomEvent<PathChangeDetail>;
}

/** The client {@link createClient} returns: an EventTarget with a fetch-compatible `fetch`. */
export interface BeelineClient extends EventTarget {
  /**
   * Like the global fetch: same-origin requests go over the direct path when
   * it is up, everything else (and everything while it is not) over the
   * normal path. Bound, so `const { fetch } = client` works.
   */
  fetch: typeof fetch;
  /** The path requests take now. */
  readonly path: BeelinePath;
  /** Resolves once setup ends; never rejects. */
  readonly ready: Promise<BeelineOutcome>;
  /** Resolves once the channel's protocol is settled, or with null when no channel opened. */
  readonly negotiated: Promise<ProtocolInfo | null>;
  /** What the channel's hello/agree settled, or null. */
  readonly protocol: ProtocolInfo | null;
  /** The signaling session id, once the session exists. */
  readonly sessionId: string | null;
  /** Called with the new path on every change. */
  onpathchange: ((path: BeelinePath) => void) | null;
  /** A WebSocket to `url` on the home service, over the direct path when it is up. */
  websocket(url: string | URL, protocols?: string | string[]): BeelineWebSocket;
  /** Shows the path in `element` (or the element a selector names). */
  installIndicator(element: Element | string): void;
  /** Says the page's cookies changed where the client cannot see it: the sealed jar is refreshed before the next channel request. */
  cookiesChanged(): void;
  /** Closes the direct path for good; later requests take the normal path. */
  close(): void;

  addEventListener<K extends keyof BeelineClientEventMap>(type: K, listener: (this: BeelineClient, event: BeelineClientEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof BeelineClientEventMap>(type: K, listener: (this: BeelineClient, event: BeelineClientEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** Creates the client and, when enabled, starts setting up the direct path. */
export function createClient(options?: CreateClientOptions): BeelineClient;

/** Shows the client's path in `element` (an element or a selector). */
export function installIndicator(client: BeelineClient, element: Element | string): void;

/** True when this browser takes a ReadableStream as a request body. */
export function supportsRequestStreams(): boolean;

/**
 * A WebSocket-compatible object (`client.websocket(url, protocols)`): over
 * the data channel when it is open and the home agreed `websocket`, else a
 * browser WebSocket through signal-api's relay. It stays on the path it
 * opened on; when that path dies the page gets a close event.
 */
export class BeelineWebSocket extends EventTarget {
  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSING: 2;
  static readonly CLOSED: 3;
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSING: 2;
  readonly CLOSED: 3;
  private constructor();
  readonly url: string;
  readonly readyState: 0 | 1 | 2 | 3;
  readonly protocol: string;
  readonly extensions: string;
  readonly bufferedAmount: number;
  binaryType: BinaryType;
  /** Which path the socket opened on: 'direct' (the data channel) or 'relay' (signal-api's relay). */
  readonly path: 'direct' | 'relay';
  onopen: ((this: BeelineWebSocket, event: Event) => unknown) | null;
  onmessage: ((this: BeelineWebSocket, event: MessageEvent) => unknown) | null;
  onerror: ((this: BeelineWebSocket, event: Event) => unknown) | null;
  onclose: ((this: BeelineWebSocket, event: CloseEvent) => unknown) | null;
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  addEventListener<K extends keyof WebSocketEventMap>(type: K, listener: (this: BeelineWebSocket, event: WebSocketEventMap[K]) => unknown, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof WebSocketEventMap>(type: K, listener: (this: BeelineWebSocket, event: WebSocketEventMap[K]) => unknown, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

// ---- errors -------------------------------------------------------------------

/** The channel refused a message, so nothing was sent (the request may take the normal path). */
export class ChannelSendError extends Error {
  name: 'ChannelSendError';
}

/** A frame that breaks docs/protocol.md; `id` is its stream when known. */
export class FrameError extends Error {
  name: 'FrameError';
  constructor(message: string, id?: string | number | null);
  readonly code: 'bad_frame';
  readonly id: string | number | null | undefined;
}

/** A WebSocket record this client refuses; `code` is the close code (1002, 1007, 1009). */
export class RecordError extends Error {
  name: 'RecordError';
  constructor(message: string, code: number);
  readonly code: number;
}

/**
 * Requests over the channel fail like fetch's network errors: a TypeError,
 * with the protocol's error `code` when the home answered one
 * (docs/protocol.md §6, e.g. 'too_many_streams', 'upstream_unreachable').
 */
export interface BeelineStreamError extends TypeError {
  code?: string;
}

// ---- protocol building blocks (tests, benchmarks, other transports) ------------

/** Highest version of the channel protocol this client speaks. */
export const PROTOCOL_VERSION: 2;
/** The protocol features the client asks for in `hello`. */
export const FEATURES: readonly string[];
/** The feature that carries sealed cookie jars. */
export const COOKIES_FEATURE: 'cookies';

/** One frame of docs/protocol.md, decoded (fields vary by `type`). */
export interface Frame {
  type: string;
  id?: string | number;
  [field: string]: unknown;
}

/** The frame encoder/decoder of docs/protocol.md. */
export const codec: Readonly<{
  decodeJson(text: string): Frame | null;
  encodeJson(frame: Frame): string;
  decodeBinary(message: ArrayBuffer | ArrayBufferView): Frame | null;
  encodeBinary(frame: Frame): Uint8Array;
  fromCanonical(obj: object, numericIds?: boolean): Frame | null;
  toCanonical(frame: Frame): object;
  maxDataPayload(id: number | string, maxMessageSize: number): number;
  FrameError: typeof FrameError;
}>;

export function encodeBase64(bytes: Uint8Array): string;
/** Bytes of canonical standard base64, or null when `text` is not. */
export function decodeBase64(text: string): Uint8Array | null;

/** What ChannelProtocol and ChannelStreams send through. */
export interface ChannelLink {
  send(message: string | Uint8Array | ArrayBuffer): void;
  readonly maxMessageSize: number;
  congested?(): boolean;
  drained?(): Promise<void>;
  close?(): void;
}

/** A request as the channel carries it. */
export interface ChannelRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array | ReadableStream<Uint8Array> | null;
  scheme?: string;
}

export interface ChannelRequestOptions {
  signal?: AbortSignal;
  /** Called when the channel closes before the response starts. */
  retry?: () => Promise<Response>;
}

/** The v1 requests in flight on one channel. */
export class ChannelRequests {
  constructor(send: (text: string) => void);
  readonly size: number;
  start(request: ChannelRequest, options?: ChannelRequestOptions): Promise<Response>;
  receive(message: string | ArrayBuffer): void;
  route(frame: Frame): void;
  closeAll(): void;
}

/** The v2 streams on one channel. */
export class ChannelStreams {
  constructor(link: ChannelLink, options?: { binary?: boolean; cancel?: boolean; credit?: boolean; sendWindow?: number; recvWindow?: number; maxStreams?: number; maxHeaderBytes?: number; headTimeoutMs?: number });
  readonly binary: boolean;
  readonly size: number;
  start(request: ChannelRequest, options?: ChannelRequestOptions): Promise<Response>;
  receive(frame: Frame): void;
  receiveBad(error: FrameError): void;
  closeAll(): void;
}

/** One channel's protocol: hello/agree, then v1 or v2. */
export class ChannelProtocol {
  constructor(link: ChannelLink, options?: { window?: number; features?: readonly string[]; timeoutMs?: number; headTimeoutMs?: number });
  readonly requests: ChannelRequests;
  readonly streams: ChannelStreams | null;
  readonly negotiated: Promise<ProtocolInfo>;
  readonly info: ProtocolInfo | null;
  /** The version new requests use: 2 once agreed, else 1. */
  readonly version: 1 | 2;
  open(): void;
  receive(message: string | ArrayBuffer): void;
  closeAll(): void;
}

/** A WebSocket message record: `[kind u8][length u32][payload]`. */
export function encodeRecord(kind: number, payload: Uint8Array): Uint8Array;
/** A close record: empty, or the code then the UTF-8 reason. */
export function encodeCloseRecord(code?: number, reason?: string): Uint8Array;

/** Reassembles records from data frames under a size limit. */
export class RecordReader {
  constructor(limit?: number);
  push(bytes: Uint8Array): void;
  next():
    | { kind: 'text'; data: string }
    | { kind: 'binary' | 'ping' | 'pong'; data: Uint8Array }
    | { kind: 'close'; code: number; reason: string }
    | null;
}
