// Starts the listening server for one process and stops it gracefully.
import type { Server } from "bun";
import type { Options } from "../config/options.ts";
import { CLIENT_IDLE_TIMEOUT_S, REQUEST_BODY_BYTES_MAX } from "../core/limits.ts";
import { log } from "../telemetry/log.ts";
import { FifoDeadlines } from "../upstream/deadlines.ts";
import { BackendPool } from "../upstream/pool.ts";
import { createHandler } from "./handler.ts";

export interface Running {
  readonly server: Server<undefined>;
  readonly pools: readonly BackendPool[];
  /** Stops accepting, lets in-flight requests finish (bounded by drainTimeoutMs), closes pools. */
  stop(): Promise<void>;
}

export function startProxy(options: Options): Running {
  const poolOpts = { insecure: options.insecure, trace: options.trace, tlsTrace: options.tlsTrace };
  const pools = options.backends.map((b) => new BackendPool(b, poolOpts));
  const deadlines = new FifoDeadlines(options.upstreamTimeoutMs);
  const handle = createHandler({ options, pools, rr: { next: 0 }, deadlines });
  const server = Bun.serve({
    hostname: options.host,
    port: options.port,
    reusePort: true,
    idleTimeout: CLIENT_IDLE_TIMEOUT_S,
    maxRequestBodySize: REQUEST_BODY_BYTES_MAX,
    fetch: handle,
    error(err) {
      // Reached only by a bug in our handler: answer 500 and keep serving.
      log.err("proxy", `internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      return new Response("500 Internal Server Error\n", { status: 500 });
    },
  });
  let stopping: Promise<void> | null = null;
  return {
    server,
    pools,
    stop() {
      stopping ??= (async () => {
        const drain = server.stop(false);
        const timer = setTimeout(() => server.stop(true), options.drainTimeoutMs);
        await drain;
        clearTimeout(timer);
        for (const p of pools) p.closeAll();
      })();
      return stopping;
    },
  };
}
