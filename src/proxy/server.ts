// Starts the listening server for one process, wires the backend fleet, health probes and the
// backends.json watcher, and stops everything gracefully.
import { readFileSync, statSync } from "node:fs";
import type { Server } from "bun";
import {
  type BackendsFile,
  ConfigError,
  describeReload,
  parseBackendsFile,
} from "../config/backends-file.ts";
import type { HealthOptions, Options } from "../config/options.ts";
import { type FileWatch, watchBackendsFile } from "../config/watch.ts";
import { CLIENT_IDLE_TIMEOUT_S, CONFIG_BYTES_MAX, REQUEST_BODY_BYTES_MAX } from "../core/limits.ts";
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

/** Backends and settings from -b flags, or from the -c file (which then owns the list). */
function initialConfig(options: Options): BackendsFile {
  const path = options.configFile;
  if (path === null) return { backends: options.backends, health: {} };
  if (statSync(path).size > CONFIG_BYTES_MAX) {
    throw new ConfigError(path, "", `larger than ${CONFIG_BYTES_MAX} bytes`);
  }
  return parseBackendsFile(readFileSync(path, "utf8"), path);
}

/** File key of each health option, for the override warning. */
const HEALTH_FLAG: Record<keyof HealthOptions, string> = {
  healthPath: "--health-path",
  probeIntervalMs: "--probe-interval-ms",
  probeTimeoutMs: "--probe-timeout-ms",
  unhealthyThreshold: "--unhealthy-threshold",
  healthyThreshold: "--healthy-threshold",
};

/**
 * Effective settings: a flag given on the command line wins over the file, the file wins over the
 * built-in default. Throws ConfigError when the merged probe timeout exceeds the interval.
 */
function settingsOf(options: Options, file: BackendsFile, flagsGiven: ReadonlySet<string>, source: string) {
  const health = { ...options.health };
  for (const key of Object.keys(HEALTH_FLAG) as (keyof HealthOptions)[]) {
    const fromFile = file.health[key];
    if (fromFile === undefined) continue;
    if (flagsGiven.has(HEALTH_FLAG[key])) {
      log.warn("config", `${HEALTH_FLAG[key]} on the command line overrides ${key} from ${source}`);
    } else (health as Record<string, unknown>)[key] = fromFile;
  }
  if (health.probeTimeoutMs > health.probeIntervalMs) {
    throw new ConfigError(
      source,
      "",
      `probe timeout ${health.probeTimeoutMs} ms is longer than the probe interval ${health.probeIntervalMs} ms`,
    );
  }
  let strategy = options.strategy;
  if (file.strategy !== undefined) {
    if (flagsGiven.has("--strategy"))
      log.warn("config", `--strategy on the command line overrides ${source}`);
    else strategy = file.strategy;
  }
  return { health: health as HealthOptions, strategy };
}

export interface StartOptions {
  /** Active health probes (default on). In-process tests that count backend requests turn them off. */
  readonly activeProbes?: boolean;
  /** Long names of the flags given on the command line: they win over the -c file's settings. */
  readonly flagsGiven?: ReadonlySet<string>;
}

export function startProxy(options: Options, start: StartOptions = {}): Running {
  const flagsGiven = start.flagsGiven ?? new Set<string>();
  const source = options.configFile ?? "flags";
  let current = initialConfig(options);
  const fleet = new Fleet(
    { ...options, ...settingsOf(options, current, flagsGiven, source) },
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
        let settings: ReturnType<typeof settingsOf>;
        try {
          settings = settingsOf(options, next, flagsGiven, file);
        } catch (err) {
          fleet.metrics.reload(false, Date.now());
          log.err("config", `${(err as Error).message} (keeping the last good config)`);
          return;
        }
        fleet.replace(next.backends, settings.health, settings.strategy);
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
