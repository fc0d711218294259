// One proxied request: picks a connection, sends the request (streaming its body), turns the
// backend's answer into the Response that Bun.serve streams to the client, and maps failures.
// The exchange object itself is the response body's stream source and the abort listener, so the
// hot path allocates no closures per request.
import { isIdempotent, responseFields } from "../core/headers.ts";
import { errorResponse, ProxyError } from "../proxy/errors.ts";
import { log } from "../telemetry/log.ts";
import { concat } from "./bytes.ts";
import type { ExchangeSink, H1Conn } from "./conn.ts";
import type { DeadlineNode, FifoDeadlines } from "./deadlines.ts";
import type { ResponseHead } from "./h1parse.ts";
import type { BackendPool } from "./pool.ts";

/**
 * Largest body sent to Bun.serve as bytes rather than as a stream. Measured here (Bun 1.4.5, a
 * Response resolved after an I/O callback): bytes beat a one-chunk stream up to 8 KiB (59k vs 49k
 * req/s) and fall off a cliff above it (16 KiB: 9k vs 43k req/s).
 */
const WHOLE_BODY_AS_BYTES_MAX = 8 * 1024;
/** Response chunks queued for a slow client before the backend socket is paused. */
const RESPONSE_CHUNKS_QUEUED_MAX = 8;
const RESPONSE_QUEUE = new CountQueuingStrategy({ highWaterMark: RESPONSE_CHUNKS_QUEUED_MAX });
const CRLF = Buffer.from("\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");
const encoder = new TextEncoder();

export interface ExchangeInput {
  pool: BackendPool;
  method: string;
  /** Request line and header block, ready to write (latin1 string). */
  head: string;
  /** Bytes: a small body read whole (replayable); a stream: a large one forwarded as it arrives. */
  body: ReadableStream<Uint8Array> | Uint8Array | null;
  /** Send `body` with chunked framing (its length is unknown). */
  chunked: boolean;
  /** Where this request waits for its response head (--upstream-timeout-ms). */
  deadlines: FifoDeadlines;
  signal: AbortSignal;
  /** For log lines. */
  target: string;
}

export class Exchange implements ExchangeSink, DeadlineNode {
  readonly method: string;
  requestComplete = false;
  private readonly pool: BackendPool;
  private readonly headBytes: Uint8Array;
  private readonly input: ExchangeInput;
  private resolveResponse!: (r: Response) => void;
  private conn: H1Conn | null = null;
  private controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  deadlineAt = 0;
  prevDeadline: DeadlineNode | null = null;
  nextDeadline: DeadlineNode | null = null;
  onDeadlineList = false;
  private answered = false;
  private done = false;
  private retried = false;
  private paused = false;

  constructor(input: ExchangeInput) {
    this.input = input;
    this.pool = input.pool;
    this.method = input.method;
    this.headBytes = Buffer.from(input.head, "latin1");
  }

  run(): Promise<Response> {
    const response = new Promise<Response>((resolve) => {
      this.resolveResponse = resolve;
    });
    this.input.signal.addEventListener("abort", this);
    this.input.deadlines.add(this);
    this.attempt(true);
    return response;
  }

  private attempt(allowIdle: boolean): void {
    const idle = allowIdle ? this.pool.takeIdle() : null;
    if (idle !== null) {
      this.send(idle);
      return;
    }
    this.pool.connect().then(
      (conn) => this.send(conn),
      (err: unknown) =>
        this.failBeforeResponse(
          err instanceof ProxyError ? err : new ProxyError("connect_refused", String(err)),
        ),
    );
  }

  private send(conn: H1Conn): void {
    if (this.done) {
      this.pool.release(conn); // the client left while we were connecting
      return;
    }
    this.conn = conn;
    conn.begin(this);
    const body = this.input.body;
    if (body === null || body instanceof Uint8Array) {
      conn.write(body === null ? this.headBytes : concat(this.headBytes, body));
      this.requestComplete = true;
      return;
    }
    void this.pumpBody(conn, body);
  }

  /** Streams the client's body upstream as it arrives, waiting for the socket when it is full. */
  private async pumpBody(conn: H1Conn, body: ReadableStream<Uint8Array>): Promise<void> {
    const chunked = this.input.chunked;
    const reader = body.getReader();
    try {
      if (!conn.write(this.headBytes)) await conn.drained();
      for (;;) {
        const { done, value } = await reader.read();
        if (this.done || this.conn !== conn) {
          await reader.cancel();
          return;
        }
        if (done) break;
        if (value.length === 0) continue;
        const ok = conn.write(chunked ? frameChunk(value) : value);
        if (!ok) await conn.drained();
      }
      if (chunked) conn.write(LAST_CHUNK);
      this.requestComplete = true;
    } catch (err) {
      // The client's body stream failed: it disconnected or sent a malformed chunked body.
      if (!this.done) this.giveUp(new ProxyError("client_aborted", `request body failed: ${String(err)}`));
    }
  }

  onHead(head: ResponseHead, whole: Uint8Array | null): void {
    this.input.deadlines.remove(this);
    if (head.status > 599) {
      this.conn?.fail(new ProxyError("bad_response", `${this.pool.key} answered status ${head.status}`));
      return;
    }
    const fields = responseFields(head.headers);
    let body: ReadableStream<Uint8Array> | Uint8Array | null = null;
    // A body that arrived whole goes out as bytes, which Bun.serve sends faster than a stream; but
    // Bun adds "content-type: application/octet-stream" to a bytes body that lacks one, so such a
    // response still takes the stream path to pass through unchanged.
    if (whole !== null && fields.hasContentType && whole.length <= WHOLE_BODY_AS_BYTES_MAX) body = whole;
    else if (head.framing !== "none") body = new ReadableStream<Uint8Array>(this, RESPONSE_QUEUE);
    if (whole !== null && body !== whole) this.onBody(whole);
    this.answered = true;
    this.resolveResponse(new Response(body, { status: head.status, headers: fields.pairs }));
  }

  // UnderlyingDefaultSource: called synchronously by the ReadableStream constructor.
  start(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.controller = controller;
  }

  pull(): void {
    if (this.paused) {
      this.paused = false;
      this.conn?.resume();
    }
  }

  cancel(): void {
    // The client stopped reading (disconnected mid-body): the backend connection cannot be reused.
    if (this.done) return;
    this.done = true;
    this.cleanup();
    this.conn?.abandon();
    log.debug("proxy", `${this.method} ${this.input.target}: client closed during the response body`);
  }

  onBody(bytes: Uint8Array): void {
    const c = this.controller;
    if (c === null || this.done) return;
    c.enqueue(bytes);
    if ((c.desiredSize ?? 1) <= 0 && !this.paused) {
      this.paused = true;
      this.conn?.pause();
    }
  }

  onEnd(): void {
    this.done = true;
    this.cleanup();
    this.controller?.close();
  }

  onFail(err: ProxyError, beforeResponse: boolean, reused: boolean): void {
    if (this.done) return;
    // A pooled connection the backend had already closed: nothing was processed, so replaying is
    // safe for idempotent requests whose body we still hold (none, or a buffered one).
    if (
      beforeResponse &&
      reused &&
      !this.retried &&
      !this.answered &&
      !(this.input.body instanceof ReadableStream) &&
      isIdempotent(this.method)
    ) {
      this.retried = true;
      this.conn = null;
      log.debug(
        "proxy",
        `${this.method} ${this.input.target}: stale pooled connection, retrying on a new one`,
      );
      this.attempt(false);
      return;
    }
    if (this.answered) {
      // Headers already went out: all we can do is cut the client's connection short.
      this.done = true;
      this.cleanup();
      log.warn(
        "proxy",
        `${this.method} ${this.input.target}: response from ${this.pool.key} cut short: ${err.message}`,
      );
      // No reason: Bun.serve prints an errored body stream's reason (with a stack) to stderr, and
      // the warn line above already names the cause.
      this.controller?.error();
      return;
    }
    this.failBeforeResponse(err);
  }

  private failBeforeResponse(err: ProxyError): void {
    if (this.done) return;
    this.done = true;
    this.cleanup();
    const res = errorResponse(err.code);
    log.warn("proxy", `${this.method} ${this.input.target} -> ${res.status} ${err.code}: ${err.message}`);
    this.answered = true;
    this.resolveResponse(res);
  }

  /** Ends the exchange from our side (timeout, client gone): drop the connection, answer if we still can. */
  giveUp(err: ProxyError): void {
    if (this.done) return;
    this.conn?.abandon();
    this.conn = null;
    if (this.answered) {
      this.done = true;
      this.cleanup();
      this.controller?.error(); // no reason: see onFail
      return;
    }
    if (err.code === "client_aborted") {
      log.debug("proxy", `${this.method} ${this.input.target}: ${err.message}`);
      this.done = true;
      this.cleanup();
      this.answered = true;
      this.resolveResponse(errorResponse(err.code));
      return;
    }
    this.failBeforeResponse(err);
  }

  /** AbortSignal listener: the client disconnected. */
  handleEvent(): void {
    this.giveUp(new ProxyError("client_aborted", "client disconnected"));
  }

  deadlineExpired(): void {
    const ms = this.input.deadlines.timeoutMs;
    this.giveUp(
      new ProxyError("upstream_timeout", `no response headers from ${this.pool.key} within ${ms} ms`),
    );
  }

  private cleanup(): void {
    this.input.deadlines.remove(this);
    this.input.signal.removeEventListener("abort", this);
  }
}

function frameChunk(data: Uint8Array): Uint8Array {
  const size = encoder.encode(data.length.toString(16) + "\r\n");
  const out = new Uint8Array(size.length + data.length + 2);
  out.set(size, 0);
  out.set(data, size.length);
  out.set(CRLF, size.length + data.length);
  return out;
}
