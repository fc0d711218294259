// Per-backend pool of HTTP/1.1 connections over Bun.connect (plain or TLS).
// Measured on this machine: Bun's fetch keeps only 64 idle sockets and churns through tens of
// thousands of connections at 200 concurrent clients; this pool reuses a few hundred.
import type { Socket, SocketHandler } from "bun";
import type { BackendSpec } from "../config/options.ts";
import { CONNECT_TIMEOUT_MS, IDLE_CONN_TIMEOUT_MS, IDLE_CONNS_PER_BACKEND_MAX } from "../core/limits.ts";
import { ProxyError } from "../proxy/errors.ts";
import { log } from "../telemetry/log.ts";
import { H1Conn } from "./conn.ts";

export interface PoolOptions {
  insecure: boolean;
  trace: boolean;
  tlsTrace: boolean;
}

export interface PoolStats {
  opened: number;
  reused: number;
  idle: number;
}

/** ALPN offer in Bun's length-prefixed wire form; HTTP/2 arrives with its own issue. */
const ALPN_HTTP1 = Buffer.from("\x08http/1.1");
const IDLE_CONN_TIMEOUT_S = Math.ceil(IDLE_CONN_TIMEOUT_MS / 1000);

const handlers: SocketHandler<H1Conn> = {
  open(sock) {
    sock.data.onOpen(sock);
  },
  handshake(sock, success, authorizationError) {
    sock.data.onHandshake(sock, success, authorizationError);
  },
  data(sock, bytes) {
    sock.data.onData(bytes);
  },
  drain(sock) {
    sock.data.onDrain();
  },
  end(sock) {
    // The backend half-closed: for close-delimited bodies that is the end; either way we are done.
    sock.data.onClose(null);
    sock.end();
  },
  close(sock, err) {
    sock.data.onClose(err ?? null);
  },
  error(sock, err) {
    sock.data.onSocketError(err);
  },
  timeout(sock) {
    sock.data.onTimeout();
  },
  connectError(sock, err) {
    sock.data.onSocketError(err);
  },
};

export class BackendPool {
  readonly key: string;
  /** Host header value naming this backend (port omitted when it is the scheme's default). */
  readonly hostHeader: string;
  private readonly idle: H1Conn[] = [];
  readonly stats: PoolStats = { opened: 0, reused: 0, idle: 0 };
  private retired = false;

  constructor(
    readonly spec: BackendSpec,
    readonly opts: PoolOptions,
  ) {
    const name = spec.host.includes(":") ? `[${spec.host}]` : spec.host;
    this.key = `${name}:${spec.port}`;
    this.hostHeader = spec.port === (spec.tls ? 443 : 80) ? name : this.key;
  }

  /** A ready idle connection, most recently used first (its socket is the warmest). */
  takeIdle(): H1Conn | null {
    while (this.idle.length > 0) {
      const conn = this.idle.pop()!;
      if (conn.usable()) {
        conn.sock!.timeout(0);
        this.stats.reused++;
        this.stats.idle = this.idle.length;
        return conn;
      }
    }
    return null;
  }

  /** This backend left the configuration: close idle connections now, and the rest as they finish. */
  retire(): void {
    this.retired = true;
    this.closeAll();
  }

  release(conn: H1Conn): void {
    if (!conn.usable() || this.retired) {
      conn.destroy();
      return;
    }
    // Over the cap, close the least recently used connection (the bottom of the stack), not this warm one.
    if (this.idle.length >= IDLE_CONNS_PER_BACKEND_MAX) this.idle.shift()!.destroy();
    conn.sock!.timeout(IDLE_CONN_TIMEOUT_S);
    this.idle.push(conn);
    this.stats.idle = this.idle.length;
  }

  /** Called by a connection that closed while idle. */
  forget(conn: H1Conn): void {
    const i = this.idle.indexOf(conn);
    if (i >= 0) {
      this.idle[i] = this.idle[this.idle.length - 1]!;
      this.idle.pop();
      this.stats.idle = this.idle.length;
    }
  }

  /** Opens a new connection; resolves once it can carry a request (after the TLS handshake). */
  async connect(): Promise<H1Conn> {
    const conn = new H1Conn(this);
    const spec = this.spec;
    const timer = setTimeout(connectTimedOut, CONNECT_TIMEOUT_MS, conn);
    try {
      const sock: Socket<H1Conn> = await Bun.connect<H1Conn>({
        hostname: spec.host,
        port: spec.port,
        data: conn,
        socket: handlers,
        tls: spec.tls
          ? {
              // "" sends no SNI (RFC 6066 forbids IP literals there); undefined would send the IP.
              // The certificate is still checked against the IP either way.
              serverName: isIpLiteral(spec.host) ? "" : spec.host,
              rejectUnauthorized: !this.opts.insecure,
              ALPNProtocols: ALPN_HTTP1,
            }
          : undefined,
      });
      conn.attach(sock);
      await conn.ready;
    } catch (err) {
      conn.destroy();
      throw err instanceof ProxyError
        ? err
        : new ProxyError(conn.timedOut ? "connect_timeout" : "connect_refused", describe(err));
    } finally {
      clearTimeout(timer);
    }
    if (conn.timedOut) {
      conn.destroy();
      throw new ProxyError("connect_timeout", `no connection to ${this.key} within ${CONNECT_TIMEOUT_MS} ms`);
    }
    this.stats.opened++;
    log.debug("pool", `opened connection to ${this.key}${spec.tls ? " (tls)" : ""}`);
    return conn;
  }

  closeAll(): void {
    for (const conn of this.idle) conn.destroy();
    this.idle.length = 0;
    this.stats.idle = 0;
  }
}

function connectTimedOut(conn: H1Conn): void {
  conn.failConnect(new ProxyError("connect_timeout", `connect timed out after ${CONNECT_TIMEOUT_MS} ms`));
}

function isIpLiteral(host: string): boolean {
  return host.includes(":") || /^\d+\.\d+\.\d+\.\d+$/.test(host);
}

export function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: string }).code;
    return code ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
