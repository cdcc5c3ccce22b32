// Type declarations for @beeline/client, beeline's browser client
// (client/src, built into the bundle signal-api serves at {base}/client.js).
// Hand-written; `just client-check` compiles client/examples/*.ts against them.

/**
 * Which way requests go: 'loopback' (home-peer's loopback listener on this
 * machine), 'direct' (the WebRTC data channel), 'relay' (the data channel
 * through a TURN relay), 'normal' (the public server: while the channel is
 * being set up, when it failed, after it closed).
 */
export type BeelinePath = 'loopback' | 'direct' | 'relay' | 'normal';

/** The current path's measurements, in ms (null: not measured). */
export interface PathTiming {
  path: BeelinePath;
  /** The loopback probe's round trip, the channel's hello/agree exchange, or the normal path's session request. */
  rttMs: number | null;
  /** From the client's start until the path was usable (null on the normal path). */
  setupMs: number | null;
}

/** Options of {@link createClient}. */
export interface CreateClientOptions {
  /** Where the signaling endpoints live (default '/webrtc'). */
  signalBase?: string;
  /** Whether to set up the direct and loopback paths at all (default: `globalThis.__WEBRTC_ENABLED__ === true`). */
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
  /** The normal path's WebSocket, also used for the loopback listener (default: the browser's). */
  WebSocket?: typeof WebSocket;
  /** Use home-peer's loopback listener when the session offers one and its probe proves it (default true). */
  loopback?: boolean;
  /** What the loopback probe and loopback requests use (default: the global fetch). */
  loopbackFetch?: typeof fetch;
  /** Whether a ReadableStream request body streams up (default: whether the browser supports request streams). */
  requestStreams?: boolean;
  /**
   * Run requests and WebSockets on one resumable connection when the session offers it (docs/protocol.md §4.8):
   * it starts on the frame connection through signal-api's home link, moves to the data channel when it opens
   * and back when its path dies, and streams in flight carry on across both moves. 'auto' (the default) does so
   * where signal-api's normal path is the home link (no `--relay-upstream`); true also where it is a tunnel.
   */
  resume?: boolean | 'auto';
  /** Start setting up the direct path this long after the session exists, in ms (default 0); the setup budget starts then. */
  directAfterMs?: number;
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

/** The resumable connection's state (docs/protocol.md §4.8). */
export interface ResumeState {
  /** What it writes to now: the data channel, the frame connection through signal-api's home link, or nothing (between carriers). */
  carrier: 'channel' | 'link' | null;
  /** How many times it moved from one carrier to another. */
  switches: number;
}

/** Detail of a `pathchange` event. */
export interface PathChangeDetail {
  path: BeelinePath;
  previous: BeelinePath;
  rttMs: number | null;
  setupMs: number | null;
}

export interface BeelineClientEventMap {
  /** The path requests take changed. */
  pathchange: CustomEvent<PathChangeDetail>;
  /** A new measurement of the current or another path arrived (detail: the current path's). */
  timingchange: CustomEvent<PathTiming>;
}

/** The client {@link createClient} returns: an EventTarget with a fetch-compatible `fetch`. */
export interface BeelineClient extends EventTarget {
  /**
   * Like the global fetch: same-origin requests go over the nearest path
   * that is up (loopback, then the data channel), everything else over the
   * normal path. A request whose loopback connection fails before any
   * response is sent again over the next path. Bound, so
   * `const { fetch } = client` works.
   */
  fetch: typeof fetch;
  /** The path requests take now. */
  readonly path: BeelinePath;
  /** The current path's round trip and setup time. */
  readonly timing: PathTiming;
  /** Resolves with the path once it is chosen (the loopback probe settled, and the channel opened or setup ended); never rejects. */
  readonly ready: Promise<BeelinePath>;
  /** Resolves once the channel's protocol is settled, or with null when no channel opened. */
  readonly negotiated: Promise<ProtocolInfo | null>;
  /** What the channel's hello/agree settled, or null. */
  readonly protocol: ProtocolInfo | null;
  /** The signaling session id, once the session exists. */
  readonly sessionId: string | null;
  /** The resumable connection (option `resume`), or null when requests do not run on one. */
  readonly resume: ResumeState | null;
  /** Called with the new path on every change. */
  onpathchange: ((path: BeelinePath) => void) | null;
  /** A WebSocket to `url` on the home service, over the loopback listener or the data channel when one is up. */
  websocket(url: string | URL, protocols?: string | string[]): BeelineWebSocket;
  /** Shows the path in `element` (or the element a selector names). */
  installIndicator(element: Element | string): void;
  /** Says the page's cookies changed where the client cannot see it: the sealed jar is refreshed before the next channel request. */
  cookiesChanged(): void;
  /** Closes the direct and loopback paths for good; later requests take the normal path. */
  close(): void;

  addEventListener<K extends keyof BeelineClientEventMap>(type: K, listener: (this: BeelineClient, event: BeelineClientEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof BeelineClientEventMap>(type: K, listener: (this: BeelineClient, event: BeelineClientEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** Creates the client and, when enabled, starts setting up the direct path. */
export function createClient(options?: CreateClientOptions): BeelineClient;

/**
 * Shows the client's path in `element` (an element or a selector) in words
 * ('⚡ loopback', '⚡ direct', '⚡ TURN relay', 'normal path') and, on hover
 * and keyboard focus, the measured round trip and setup time. Makes the
 * element a polite live region (role status) and focusable.
 */
export function installIndicator(client: BeelineClient, element: Element | string): void;

/** What the indicator says for each path. */
export const PATH_LABELS: Readonly<Record<BeelinePath, string>>;
/** The indicator's details line: "round trip 0.4 ms, setup 25 ms". */
export function describeTiming(timing: PathTiming | null | undefined): string;

/** How long the loopback probe may take (150 ms). */
export const LOOPBACK_PROBE_MS: number;
/** How long a tab remembers that a loopback listener was unusable (30 s). */
export const LOOPBACK_CACHE_MS: number;
/** The `loopback` member of a session answer, checked (an http URL on a loopback address, a ticket, a proof), or null. */
export function parseLoopbackOffer(value: unknown): { url: string; ticket: string; proof: string } | null;

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
  /** Which path the socket opened on: 'loopback' (home-peer's loopback listener), 'direct' (the data channel) or 'relay' (signal-api's relay). */
  readonly path: 'loopback' | 'direct' | 'relay';
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
