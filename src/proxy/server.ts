// Starts the listening server for one process, wires the backend fleet, health probes and the
// backends.json watcher, and stops everything gracefully.
import { readFileSync } from "node:fs";
import type { Server } from "bun";
import { type BackendsFile, describeReload, parseBackendsFile } from "../config/backends-file.ts";
import type { BackendSpec, HealthOptions, Options } from "../config/options.ts";
import { type FileWatch, watchBackendsFile } from "../config/watch.ts";
import { CLIENT_IDLE_TIMEOUT_S, REQUEST_BODY_BYTES_MAX } from "../core/limits.ts";
import { log } from "../telemetry/log.ts";
import { FifoDeadlines } from "../upstream/deadlines.ts";
import type { BackendPool } from "../upstream/pool.ts";
import { Fleet } from "./fleet.ts";
import { createHandler } from "./handler.ts";

export interface Running {
  readonly server: Server<undefined>;
  readonly fleet: Fleet;
  /** Connection pools of the current backends (tests inspect their stats). */
  readonly pools: readonly BackendPool[];
  /** Re-reads the config file now (SIGHUP); a no-op without -c. */
  reload(): void;
  /** Stops accepting, lets in-flight requests finish (bounded by drainTimeoutMs), closes pools. */
  stop(): Promise<void>;
}

/** Backends and health settings from -b flags, or from the -c file (which then owns the list). */
function initialConfig(options: Options): BackendsFile {
  if (options.configFile === null) return { backends: options.backends, health: {} };
  return parseBackendsFile(readFileSync(options.configFile, "utf8"), options.configFile);
}

function healthOf(options: Options, file: BackendsFile): HealthOptions {
  return { ...options.health, ...file.health };
}

export interface StartOptions {
  /** Active health probes (default on). In-process tests that count backend requests turn them off. */
  readonly activeProbes?: boolean;
}

export function startProxy(options: Options, start: StartOptions = {}): Running {
  let current = initialConfig(options);
  const fleet = new Fleet(
    { ...options, strategy: current.strategy ?? options.strategy, health: healthOf(options, current) },
    current.backends,
  );
  const deadlines = new FifoDeadlines(options.upstreamTimeoutMs);
  const handle = createHandler({ options, fleet, deadlines });
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
  if (start.activeProbes !== false) fleet.startProbes();

  let watch: FileWatch | null = null;
  if (options.configFile !== null) {
    const file = options.configFile;
    watch = watchBackendsFile(
      file,
      (next) => {
        const specs: readonly BackendSpec[] = next.backends;
        fleet.replace(specs, healthOf(options, next));
        fleet.metrics.reload(true, Date.now());
        log.info("config", describeReload(file, current, next));
        current = next;
      },
      (err) => {
        fleet.metrics.reload(false, Date.now());
        log.err("config", `${err.message} (keeping the last good config)`);
      },
      { initial: current },
    );
  }

  let stopping: Promise<void> | null = null;
  return {
    server,
    fleet,
    get pools() {
      return fleet.backends.map((b) => b.pool);
    },
    reload() {
      watch?.trigger();
    },
    stop() {
      stopping ??= (async () => {
        watch?.close();
        const drain = server.stop(false);
        const timer = setTimeout(() => server.stop(true), options.drainTimeoutMs);
        await drain;
        clearTimeout(timer);
        fleet.close();
      })();
      return stopping;
    },
  };
}
