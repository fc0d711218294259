// One proxied request: picks a connection, sends the request (streaming its body), turns the
// backend's answer into the Response that Bun.serve streams to the client, and maps failures.
// The exchange object itself is the response body's stream source and the abort listener, so the
// hot path allocates no closures per request.
import type { HostHeaderPolicy } from "../config/options.ts";
import type { PickRequest } from "../core/balancer.ts";
import { responseFields } from "../core/headers.ts";
import { RESPONSE_CHUNKS_QUEUED_MAX, WHOLE_BODY_AS_BYTES_MAX } from "../core/limits.ts";
import { decideRetry, isIdempotentMethod } from "../core/retry.ts";
import { errorResponse, ProxyError } from "../proxy/errors.ts";
import type { Backend, Fleet } from "../proxy/fleet.ts";
import type { WafVerdict } from "../proxy/waf.ts";
import { log } from "../telemetry/log.ts";
import type { MetricsRow } from "../telemetry/metrics.ts";
import { concat } from "./bytes.ts";
import type { ExchangeSink, H1Conn } from "./conn.ts";
import type { DeadlineNode, FifoDeadlines } from "./deadlines.ts";
import type { ResponseHead } from "./h1parse.ts";

const RESPONSE_QUEUE = new CountQueuingStrategy({ highWaterMark: RESPONSE_CHUNKS_QUEUED_MAX });
const CRLF = Buffer.from("\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");
const encoder = new TextEncoder();

export interface ExchangeInput {
  fleet: Fleet;
  /** The backend picked for the first attempt. */
  first: Backend;
  /** Reused across retries: each failed backend is added to its exclude set. */
  pick: PickRequest;
  method: string;
  /** "METHOD target HTTP/1.1\r\n" */
  requestLine: string;
  /** Header lines after Host, and the blank line (built once; Host depends on the backend). */
  rest: string;
  /** The client's Host ("" if none) and the policy that decides the Host sent upstream. */
  clientHost: string;
  hostPolicy: HostHeaderPolicy;
  /** Bytes: a small body read whole (replayable); a stream: a large one forwarded as it arrives. */
  body: ReadableStream<Uint8Array> | Uint8Array | null;
  /** Send `body` with chunked framing (its length is unknown). */
  chunked: boolean;
  hasIdempotencyKey: boolean;
  /** Sticky cookie name when the strategy is sticky, else null. */
  stickyCookie: string | null;
  setSticky: boolean;
  /** Where this request waits for its response head (--upstream-timeout-ms). */
  deadlines: FifoDeadlines;
  signal: AbortSignal;
  /** For log lines. */
  target: string;
  /** The WAF's verdict (request context for tracing), or null when no WAF runs. */
  waf: WafVerdict | null;
  /** Called once when the exchange ends, however it ends (the WAF's connection-cap count). */
  onDone: (() => void) | null;
}

/** Failures that happen while connecting: no byte of the request can have reached the backend. */
const CONNECT_PHASE = new Set(["connect_refused", "connect_timeout", "tls_failed"]);

export class Exchange implements ExchangeSink, DeadlineNode {
  readonly method: string;
  requestComplete = false;
  private readonly input: ExchangeInput;
  private readonly fleet: Fleet;
  private backend: Backend;
  private row = 0 as MetricsRow;
  private attemptStartMs = 0;
  private attemptOpen = false;
  private headBytes: Uint8Array | null = null;
  private headHost = "";
  private resolveResponse!: (r: Response) => void;
  private conn: H1Conn | null = null;
  private controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  deadlineAt = 0;
  prevDeadline: DeadlineNode | null = null;
  nextDeadline: DeadlineNode | null = null;
  onDeadlineList = false;
  private status = 0;
  private answered = false;
  private done = false;
  private retries = 0;
  private freshRetried = false;
  private bodyStarted = false;
  private paused = false;

  constructor(input: ExchangeInput) {
    this.input = input;
    this.fleet = input.fleet;
    this.backend = input.first;
    this.method = input.method;
  }

  run(): Promise<Response> {
    const response = new Promise<Response>((resolve) => {
      this.resolveResponse = resolve;
    });
    this.input.signal.addEventListener("abort", this);
    this.input.deadlines.add(this);
    // Date.now(): the budget's ring is shared by all workers, so they need one clock.
    this.fleet.budget.recordRequest(Date.now());
    this.attempt(this.backend, true);
    return response;
  }

  private attempt(backend: Backend, allowIdle: boolean): void {
    this.backend = backend;
    backend.inFlight++;
    // By row, not index: a reload may have moved or removed this backend since it was picked.
    this.row = this.fleet.metrics.requestStartedRow(backend.row);
    this.attemptOpen = true;
    this.attemptStartMs = performance.now();
    const pool = backend.pool;
    const idle = allowIdle ? pool.takeIdle() : null;
    if (idle !== null) {
      this.send(idle);
      return;
    }
    pool.connect().then(
      (conn) => this.send(conn),
      (err: unknown) =>
        this.onFail(
          err instanceof ProxyError ? err : new ProxyError("connect_refused", String(err)),
          true,
          false,
        ),
    );
  }

  /** Request line + Host + the rest, for the current backend (cached while the Host stays the same). */
  private head(): Uint8Array {
    const input = this.input;
    const pool = this.backend.pool;
    const useBackend =
      input.hostPolicy === "backend" || (input.hostPolicy === "auto" && (pool.spec.tls || !input.clientHost));
    const host = useBackend ? pool.hostHeader : input.clientHost;
    if (this.headBytes === null || host !== this.headHost) {
      this.headHost = host;
      this.headBytes = Buffer.from(`${input.requestLine}host: ${host}\r\n${input.rest}`, "latin1");
    }
    return this.headBytes;
  }

  private send(conn: H1Conn): void {
    if (this.done) {
      this.backend.pool.release(conn); // the client left while we were connecting
      return;
    }
    this.conn = conn;
    conn.begin(this);
    const body = this.input.body;
    if (body === null || body instanceof Uint8Array) {
      conn.write(body === null ? this.head() : concat(this.head(), body));
      this.requestComplete = true;
      return;
    }
    this.bodyStarted = true;
    void this.pumpBody(conn, body);
  }

  /** Streams the client's body upstream as it arrives, waiting for the socket when it is full. */
  private async pumpBody(conn: H1Conn, body: ReadableStream<Uint8Array>): Promise<void> {
    const chunked = this.input.chunked;
    const reader = body.getReader();
    try {
      if (!conn.write(this.head())) await conn.drained();
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

  /** Closes the books on the current attempt exactly once. */
  private endAttempt(outcome: "ok" | "failed" | "aborted", code: string): void {
    if (!this.attemptOpen) return;
    this.attemptOpen = false;
    const b = this.backend;
    b.inFlight--;
    const m = this.fleet.metrics;
    if (outcome === "ok")
      m.requestFinished(this.row, this.status, (performance.now() - this.attemptStartMs) / 1000);
    else if (outcome === "failed") m.requestFailed(this.row, code);
    else m.requestAborted(this.row);
  }

  /** The one place a client answer is produced: counted once in lb_requests_total. */
  private answer(res: Response): void {
    this.answered = true;
    this.fleet.metrics.clientRequest(res.status);
    this.resolveResponse(res);
  }

  onHead(head: ResponseHead, whole: Uint8Array | null): void {
    this.input.deadlines.remove(this);
    const b = this.backend;
    if (head.status > 599) {
      this.conn?.fail(new ProxyError("bad_response", `${b.key} answered status ${head.status}`));
      return;
    }
    this.status = head.status;
    this.fleet.recordResult(b, true, "response");
    this.fleet.recordLatency(b, performance.now() - this.attemptStartMs);
    const fields = responseFields(head.headers);
    if (this.input.setSticky && this.input.stickyCookie !== null) {
      fields.pairs.push([
        "set-cookie",
        `${this.input.stickyCookie}=${b.stickyId}; Path=/; HttpOnly; SameSite=Lax`,
      ]);
    }
    let body: ReadableStream<Uint8Array> | Uint8Array | null = null;
    // A body that arrived whole goes out as bytes, which Bun.serve sends faster than a stream; but
    // Bun adds "content-type: application/octet-stream" to a bytes body that lacks one, so such a
    // response still takes the stream path to pass through unchanged.
    if (whole !== null && fields.hasContentType && whole.length <= WHOLE_BODY_AS_BYTES_MAX) body = whole;
    else if (head.framing !== "none") body = new ReadableStream<Uint8Array>(this, RESPONSE_QUEUE);
    if (whole !== null && body !== whole) this.onBody(whole);
    this.answer(new Response(body, { status: head.status, headers: fields.pairs }));
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
    this.endAttempt("aborted", "client_aborted");
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
    this.endAttempt("ok", "");
    // The connection goes back to the pool right after this: one left paused (the last chunk filled
    // the queue, so pull() never resumed it) would never read the next response.
    if (this.paused) {
      this.paused = false;
      this.conn?.resume();
    }
    this.controller?.close();
  }

  onFail(err: ProxyError, beforeResponse: boolean, reused: boolean): void {
    if (this.done) return;
    const b = this.backend;
    this.conn = null;
    this.endAttempt("failed", err.code);
    if (this.answered) {
      // Headers already went out: all we can do is cut the client's connection short.
      this.fleet.recordResult(b, false, err.message);
      this.done = true;
      this.cleanup();
      log.warn(
        "proxy",
        `${this.method} ${this.input.target}: response from ${b.key} cut short: ${err.message}`,
      );
      // No reason: Bun.serve prints an errored body stream's reason (with a stack) to stderr, and
      // the warn line above already names the cause.
      this.controller?.error();
      return;
    }
    const replayable = !(this.input.body instanceof ReadableStream) || !this.bodyStarted;
    // A pooled connection the backend had closed while idle: retry once on a fresh connection to
    // the same backend. Only for idempotent requests: a backend that read a POST and then died looks
    // the same, and a POST is never sent twice. Not a health failure (the backend is fine).
    if (beforeResponse && reused && !this.freshRetried && replayable && isIdempotentMethod(this.method)) {
      this.freshRetried = true;
      log.debug(
        "proxy",
        `${this.method} ${this.input.target}: stale pooled connection to ${b.key}, retrying`,
      );
      this.attempt(b, false);
      return;
    }
    this.fleet.recordResult(b, false, err.message);
    const decision = decideRetry(
      {
        attempt: this.retries,
        bytesMaySent: !CONNECT_PHASE.has(err.code),
        method: this.method,
        hasIdempotencyKey: this.input.hasIdempotencyKey,
        bodyReplayable: replayable,
      },
      this.fleet.budget,
      Date.now(),
    );
    if (decision.retry) {
      this.fleet.exclude(this.input.pick, b);
      const next = this.fleet.pick(this.input.pick);
      if (next !== null) {
        this.retries++;
        this.fleet.metrics.retry(this.row, CONNECT_PHASE.has(err.code) ? "before_send" : "idempotent");
        this.input.setSticky ||= this.fleet.pickedSetSticky;
        log.info(
          "proxy",
          `${this.method} ${this.input.target}: ${err.code} from ${b.key}, retry ${this.retries} on ${next.key} (${decision.reason})`,
        );
        this.attempt(next, true);
        return;
      }
    }
    this.failBeforeResponse(err);
  }

  private failBeforeResponse(err: ProxyError): void {
    if (this.done) return;
    this.done = true;
    this.cleanup();
    const res = errorResponse(err.code);
    log.warn("proxy", `${this.method} ${this.input.target} -> ${res.status} ${err.code}: ${err.message}`);
    this.answer(res);
  }

  /** Ends the exchange from our side (timeout, client gone): drop the connection, answer if we still can. */
  giveUp(err: ProxyError): void {
    if (this.done) return;
    this.conn?.abandon();
    this.conn = null;
    if (err.code === "client_aborted") this.endAttempt("aborted", err.code);
    else {
      this.endAttempt("failed", err.code);
      this.fleet.recordResult(this.backend, false, err.message);
    }
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
      this.answer(errorResponse(err.code));
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
      new ProxyError("upstream_timeout", `no response headers from ${this.backend.key} within ${ms} ms`),
    );
  }

  private cleanup(): void {
    this.input.deadlines.remove(this);
    this.input.signal.removeEventListener("abort", this);
    const done = this.input.onDone;
    if (done !== null) {
      this.input.onDone = null;
      done();
    }
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
