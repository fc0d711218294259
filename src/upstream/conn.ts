// One HTTP/1.1 connection to a backend: writes request bytes with backpressure, parses the
// response strictly, and hands head/body/end/failure to the exchange that owns it right now.
import type { Socket } from "bun";
import { INFORMATIONAL_RESPONSES_MAX } from "../core/limits.ts";
import { ProxyError } from "../proxy/errors.ts";
import { hexdumpLines } from "../telemetry/hexdump.ts";
import { log } from "../telemetry/log.ts";
import { concat } from "./bytes.ts";
import { ChunkedDecoder, H1ParseError, parseResponseHead, type ResponseHead } from "./h1parse.ts";
import type { BackendPool } from "./pool.ts";
import { describe } from "./pool.ts";

/** What a connection reports to the request that is using it. */
export interface ExchangeSink {
  readonly method: string;
  /** True once every request byte (head and body) has been written. */
  readonly requestComplete: boolean;
  /** `whole`: the complete body when it arrived together with the head (then no onBody follows). */
  onHead(head: ResponseHead, whole: Uint8Array | null): void;
  onBody(bytes: Uint8Array): void;
  onEnd(): void;
  /** `beforeResponse`: no response byte arrived; `reused`: the connection had served earlier requests. */
  onFail(err: ProxyError, beforeResponse: boolean, reused: boolean): void;
}

enum Phase {
  Idle = 0,
  Head = 1,
  Body = 2,
}

export class H1Conn {
  sock: Socket<H1Conn> | null = null;
  readonly ready: Promise<void>;
  timedOut = false;
  /** Requests started on this connection; > 1 means it came from the idle pool. */
  requests = 0;
  private resolveReady!: () => void;
  private rejectReady!: (err: ProxyError) => void;
  private isReady = false;
  private closed = false;
  private ex: ExchangeSink | null = null;
  private phase = Phase.Idle;
  private headBuf: Uint8Array | null = null;
  private gotBytes = false;
  private informational = 0;
  private framing: ResponseHead["framing"] = "none";
  private remaining = 0;
  private keepAlive = true;
  private chunked: ChunkedDecoder | null = null;
  private pending: Uint8Array | null = null;
  private drainWaiter: (() => void) | null = null;
  private lastError: string | null = null;
  /** Bound once per connection so the chunked decoder needs no per-request closure. */
  private readonly emitBody = (bytes: Uint8Array): void => this.ex?.onBody(bytes);

  constructor(readonly pool: BackendPool) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    // A rejection nobody awaits (connection died while idle) must not become an unhandled error.
    this.ready.catch(() => {});
  }

  attach(sock: Socket<H1Conn>): void {
    this.sock = sock;
    sock.setNoDelay?.(true);
  }

  usable(): boolean {
    return this.isReady && !this.closed && this.ex === null && this.sock !== null;
  }

  onOpen(sock: Socket<H1Conn>): void {
    this.sock = sock;
    if (!this.pool.spec.tls) this.markReady();
  }

  onHandshake(sock: Socket<H1Conn>, success: boolean, authError: Error | null): void {
    const verify = !this.pool.opts.insecure;
    // Bun reports success=false for a host-name mismatch even with rejectUnauthorized: false, although
    // the handshake completed (a cipher was agreed) and the connection works: with --insecure that is
    // no failure. A real handshake failure (e.g. a plain-HTTP peer) agrees on no cipher.
    const completed = success || (!verify && sock.getCipher?.()?.name != null);
    if (!completed || (authError && verify)) {
      const why = authError ? describe(authError) : "handshake failed";
      this.failConnect(new ProxyError("tls_failed", `TLS to ${this.pool.key}: ${why}`));
      return;
    }
    if (this.pool.opts.tlsTrace) {
      const cipher = sock.getCipher?.();
      log.info("tls_trace", "=== TLS Handshake Complete ===");
      log.info("tls_trace", `  Host: ${this.pool.key}`);
      log.info("tls_trace", `  Version: ${sock.getTLSVersion?.() ?? "unknown"}`);
      log.info("tls_trace", `  Cipher Suite: ${cipher?.name ?? "unknown"}`);
      log.info("tls_trace", `  ALPN Protocol: ${sock.alpnProtocol || "none"}`);
      log.info("tls_trace", `  CA Verification: ${verify ? "system trust store" : "none (--insecure)"}`);
      log.info("tls_trace", `  Host Verification: ${verify ? "enabled" : "disabled"}`);
    }
    this.markReady();
  }

  private markReady(): void {
    if (this.isReady || this.closed) return;
    this.isReady = true;
    this.resolveReady();
  }

  failConnect(err: ProxyError): void {
    if (err.code === "connect_timeout") this.timedOut = true;
    this.rejectReady(err);
    this.destroy();
  }

  /** Starts a request on this connection. */
  begin(ex: ExchangeSink): void {
    this.ex = ex;
    this.phase = Phase.Head;
    this.gotBytes = false;
    this.informational = 0;
    this.headBuf = null;
    this.requests++;
  }

  /** Writes all of `bytes` eventually; returns false when the caller must await drained(). */
  write(bytes: Uint8Array): boolean {
    const sock = this.sock;
    if (this.closed || sock === null) return true; // the close handler reports the failure
    if (this.pool.opts.trace) traceBytes("REQUEST TO BACKEND", bytes);
    if (this.pending !== null) {
      // Only one writer exists per connection and it awaits drained(); append defensively.
      this.pending = concat(this.pending, bytes);
      return false;
    }
    const n = sock.write(bytes);
    if (n >= bytes.length) return true;
    this.pending = bytes.subarray(Math.max(n, 0));
    return false;
  }

  drained(): Promise<void> {
    if (this.pending === null || this.closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.drainWaiter = resolve;
    });
  }

  onDrain(): void {
    const pending = this.pending;
    if (pending === null || this.sock === null) return;
    const n = this.sock.write(pending);
    if (n < pending.length) {
      this.pending = pending.subarray(Math.max(n, 0));
      return;
    }
    this.pending = null;
    this.wakeWriter();
  }

  private wakeWriter(): void {
    const w = this.drainWaiter;
    this.drainWaiter = null;
    w?.();
  }

  onData(bytes: Uint8Array): void {
    if (this.pool.opts.trace) traceBytes("RESPONSE FROM BACKEND", bytes);
    const ex = this.ex;
    if (ex === null) {
      // Bytes nobody asked for: the connection's framing can no longer be trusted.
      this.destroy();
      return;
    }
    this.gotBytes = true;
    if (this.phase === Phase.Head) this.readHead(ex, bytes);
    else this.readBody(bytes);
  }

  private readHead(ex: ExchangeSink, bytes: Uint8Array): void {
    const buf = this.headBuf === null ? bytes : concat(this.headBuf, bytes);
    let off = 0;
    for (;;) {
      let head: ResponseHead | null;
      try {
        head = parseResponseHead(buf, off, buf.length, ex.method);
      } catch (err) {
        const code = err instanceof H1ParseError ? err.code : "parse";
        this.fail(new ProxyError("bad_response", `${this.pool.key} sent a malformed response (${code})`));
        return;
      }
      if (head === null) {
        this.headBuf = off === 0 && buf !== bytes ? buf : buf.slice(off);
        return;
      }
      off += head.headBytes;
      if (head.status >= 100 && head.status < 200) {
        // Interim answers (100 Continue, 103 Early Hints) are consumed here: Bun.serve has no way to
        // send them to the client. 101 would switch protocols, which we never asked for.
        if (head.status === 101 || ++this.informational > INFORMATIONAL_RESPONSES_MAX) {
          this.fail(new ProxyError("bad_response", `${this.pool.key} sent unexpected ${head.status}`));
          return;
        }
        if (off === buf.length) {
          this.headBuf = null;
          return;
        }
        continue;
      }
      this.headBuf = null;
      this.phase = Phase.Body;
      this.framing = head.framing;
      this.keepAlive = head.keepAlive;
      this.remaining = head.contentLength;
      this.chunked = head.framing === "chunked" ? new ChunkedDecoder() : null;
      const avail = buf.length - off;
      if (head.framing === "length" && avail >= head.contentLength) {
        ex.onHead(head, buf.subarray(off, off + head.contentLength));
        if (this.ex === ex) this.finish(avail > head.contentLength);
        return;
      }
      ex.onHead(head, null);
      if (this.ex !== ex) return; // failed or abandoned inside onHead
      if (head.framing === "none") {
        this.finish(off < buf.length);
        return;
      }
      if (off < buf.length) this.readBody(buf.subarray(off));
      return;
    }
  }

  private readBody(bytes: Uint8Array): void {
    const ex = this.ex!;
    switch (this.framing) {
      case "length": {
        if (bytes.length < this.remaining) {
          this.remaining -= bytes.length;
          ex.onBody(bytes);
          return;
        }
        const extra = bytes.length > this.remaining;
        ex.onBody(extra ? bytes.subarray(0, this.remaining) : bytes);
        this.remaining = 0;
        this.finish(extra);
        return;
      }
      case "chunked": {
        let used: number;
        try {
          used = this.chunked!.feed(bytes, this.emitBody);
        } catch (err) {
          const code = err instanceof H1ParseError ? err.code : "parse";
          this.fail(
            new ProxyError("bad_response", `${this.pool.key} sent a malformed chunked body (${code})`),
          );
          return;
        }
        if (this.chunked!.done) this.finish(used < bytes.length);
        return;
      }
      default:
        ex.onBody(bytes); // close-delimited: the body ends when the connection does
    }
  }

  /** The response is complete. `leftover`: the backend sent more than one response's worth. */
  private finish(leftover: boolean): void {
    const ex = this.ex!;
    this.ex = null;
    this.phase = Phase.Idle;
    this.chunked = null;
    const reuse = this.keepAlive && !leftover && ex.requestComplete && this.pending === null;
    ex.onEnd();
    if (reuse) this.pool.release(this);
    else this.destroy();
  }

  /** Fails the current exchange and drops the connection. */
  fail(err: ProxyError): void {
    const ex = this.ex;
    const before = this.phase === Phase.Head && !this.gotBytes;
    this.ex = null;
    this.destroy();
    ex?.onFail(err, before, this.requests > 1);
  }

  /** The exchange gives up (client gone, timeout): the connection's state is unknown, drop it. */
  abandon(): void {
    this.ex = null;
    this.destroy();
  }

  onSocketError(err: Error): void {
    this.lastError = describe(err);
  }

  onTimeout(): void {
    if (this.ex === null) this.destroy(); // idle too long
  }

  onClose(err: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.forget(this);
    if (err) this.lastError = describe(err);
    this.wakeWriter();
    if (!this.isReady) {
      this.rejectReady(
        new ProxyError(
          this.pool.spec.tls ? "tls_failed" : "connect_refused",
          `${this.pool.key}: ${this.lastError ?? "closed during connect"}`,
        ),
      );
      return;
    }
    const ex = this.ex;
    if (ex === null) return;
    if (this.phase === Phase.Body && this.framing === "close") {
      this.ex = null;
      this.phase = Phase.Idle;
      ex.onEnd();
      return;
    }
    const before = this.phase === Phase.Head && !this.gotBytes;
    const what = this.phase === Phase.Head ? "before a complete response head" : "in the middle of the body";
    this.ex = null;
    ex.onFail(
      new ProxyError(
        "upstream_reset",
        `${this.pool.key} closed the connection ${what}${this.lastError ? ` (${this.lastError})` : ""}`,
      ),
      before,
      this.requests > 1,
    );
  }

  destroy(): void {
    if (!this.closed) {
      this.closed = true;
      this.pool.forget(this);
      this.wakeWriter();
    }
    this.sock?.terminate();
  }

  pause(): void {
    this.sock?.pause();
  }

  resume(): void {
    this.sock?.resume();
  }
}

function traceBytes(title: string, bytes: Uint8Array): void {
  log.info("trace", `=== ${title} (${bytes.length} bytes) ===`);
  for (const line of hexdumpLines(bytes)) log.info("trace", line);
}
