#!/usr/bin/env bun
// Entry point: parse flags, then run in the role this process has: mp supervisor (default on Linux),
// mp worker (spawned by the supervisor, ZZZ_LB_ROLE=worker), or single process (--mode sp).
import { availableParallelism } from "node:os";
import { CliError, notYetUsed, parseArgs } from "./cli/parse.ts";
import { ConfigError } from "./config/backends-file.ts";
import type { Options } from "./config/options.ts";
import { WORKERS_MAX } from "./core/limits.ts";
import { startProxy } from "./proxy/server.ts";
import type { Region } from "./shm/region.ts";
import { removeStaleRegions } from "./shm/region.ts";
import type { Control } from "./supervisor/control.ts";
import { ENV_ROLE } from "./supervisor/self.ts";
import { startSupervisor } from "./supervisor/supervisor.ts";
import {
  announceReady,
  isUpgrade,
  predecessorRegion,
  type Successor,
  startSuccessor,
} from "./supervisor/upgrade.ts";
import { runWorker } from "./supervisor/worker.ts";
import { log, setLogLevel } from "./telemetry/log.ts";

/** Exit status for bad flags or config, as in the CLI reference. */
const EXIT_USAGE = 2;

/** What the signal handlers act on, in either mode. */
interface Instance {
  readonly region: Region;
  readonly control: Control;
  reload(): void;
  /** Stop accepting, finish in-flight requests (bounded by --drain-timeout-ms), clean up. */
  drain(): Promise<void>;
}

function usage(message: string): never {
  process.stderr.write(`err(cli): ${message}\n`);
  process.exit(EXIT_USAGE);
}

/**
 * Makes sure no other program (or another zzz-lb) listens on the port: with reusePort we would
 * otherwise share it silently and split its traffic. Returns the port (resolved when 0). Skipped on a
 * binary upgrade, where the old instance holds the port on purpose.
 */
function claimPort(host: string, port: number): number {
  try {
    const probe = Bun.listen({ hostname: host, port, socket: { data() {} } });
    const got = probe.port;
    probe.stop(true);
    return got;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    log.err(
      "main",
      code === "EADDRINUSE"
        ? `cannot listen on ${host}:${port}: the port is in use by another program`
        : `cannot listen on ${host}:${port}: ${String(err)}`,
    );
    process.exit(1);
  }
}

const SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR2"] as const;
type Signal = (typeof SIGNALS)[number];

/**
 * Signals that arrive while the instance starts (workers can take seconds) are held and acted on once
 * it serves, instead of hitting their default action (which kills the process and orphans its files).
 */
function holdSignals(): { held: Signal[]; release(): void } {
  const held: Signal[] = [];
  const handlers = SIGNALS.map((sig) => {
    const h = () => held.push(sig);
    process.on(sig, h);
    return [sig, h] as const;
  });
  return {
    held,
    release() {
      for (const [sig, h] of handlers) process.off(sig, h);
    },
  };
}

/** Installs the handlers; returns them so signals held during startup can be replayed. */
function installSignals(options: Options, instance: Instance): Record<Signal, () => void> {
  let leaving = false;
  let successor: Successor | null = null;
  const leave = (why: string) => {
    if (leaving) return;
    leaving = true;
    if (successor !== null) {
      // Stopping in the middle of an upgrade stops the new instance too: "stop" means stop.
      log.info("upgrade", `stopping the new instance (pid ${successor.pid}) as well`);
      successor.kill();
      successor = null;
    }
    log.info("main", `${why}: draining (up to ${options.drainTimeoutMs} ms)`);
    void instance.drain().then(() => {
      log.info("main", "stopped");
      process.exit(0);
    });
  };
  const act: Record<Signal, () => void> = {
    SIGTERM: () => leave("SIGTERM"),
    SIGINT: () => leave("SIGINT"),
    SIGHUP: () => {
      const files = [options.configFile, options.wafConfig].filter((f) => f !== null);
      log.info(
        "main",
        files.length > 0 ? `SIGHUP: reloading ${files.join(", ")}` : "SIGHUP: no config file to reload",
      );
      instance.reload();
    },
    SIGUSR2: () => {
      if (leaving) return log.info("main", "SIGUSR2 ignored: this instance is stopping");
      if (successor !== null)
        return log.info("main", `SIGUSR2 ignored: an upgrade is in progress (pid ${successor.pid})`);
      log.info("main", "SIGUSR2: binary upgrade");
      const s = startSuccessor(instance.region);
      successor = s;
      void s.outcome.then((r) => {
        if (successor !== s) return; // stopped meanwhile
        successor = null;
        if (r.ok) leave(`upgrade: pid ${r.pid} serves`);
        else log.err("upgrade", `${r.why}; this instance keeps serving`);
      });
    },
  };
  for (const sig of SIGNALS) process.on(sig, act[sig]);
  return act;
}

async function main(argv: string[]): Promise<void> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs(argv);
  } catch (err) {
    if (err instanceof CliError) usage(`${err.message}\n(see load_balancer --help)`);
    throw err;
  }
  if (parsed.kind !== "run") {
    process.stdout.write(parsed.text + "\n");
    return;
  }
  const options = parsed.options;
  setLogLevel(options.logLevel);
  if (process.env[ENV_ROLE] === "worker") {
    runWorker(options);
    return;
  }
  const missing = notYetUsed(parsed);
  if (missing.length > 0) usage(missing.join("\nerr(cli): "));
  // One source of truth for the backend list: the file is hot-reloaded, flags are not.
  if (options.configFile !== null && options.backends.length > 0)
    usage("use either -b (fixed backends) or -c FILE (hot-reloaded backends), not both");
  if (options.backends.length === 0 && options.configFile === null)
    usage("no backends: give at least one -b HOST:PORT (or run `npm run demo` to try it with demo backends)");
  if (options.insecure)
    log.warn("tls", "--insecure: backend TLS certificates are NOT verified (never in production)");

  const hold = holdSignals();
  const port = isUpgrade() ? options.port : claimPort(options.host, options.port);
  let instance: Instance;
  let what: string;
  try {
    if (options.mode === "sp") {
      for (const p of removeStaleRegions()) log.info("main", `removed a stale region of a crashed run: ${p}`);
      const running = startProxy(
        { ...options, port },
        { flagsGiven: parsed.explicit, inherit: predecessorRegion() },
      );
      instance = {
        region: running.region,
        control: running.control,
        reload: running.reload,
        drain: running.stop,
      };
      what = `sp, pid ${process.pid}`;
    } else {
      const workers = Math.min(options.workers || availableParallelism(), WORKERS_MAX);
      const sup = await startSupervisor({ ...options, port }, port, workers, parsed.explicit);
      instance = sup;
      what = `mp, ${workers} worker${workers === 1 ? "" : "s"}, supervisor pid ${process.pid}`;
    }
  } catch (err: unknown) {
    // A bad config file is a usage error (exit 2), like a bad flag; anything else is 1.
    if (err instanceof ConfigError) {
      log.err("config", err.message);
      process.exit(EXIT_USAGE);
    }
    log.err(
      "main",
      `cannot start on ${options.host}:${port}: ${err instanceof Error ? err.message : String(err)}`,
    );
    process.exit(1);
  }
  hold.release();
  const act = installSignals(options, instance);
  // Announced only once the signal handlers are in place: a SIGHUP sent as soon as this line shows
  // would otherwise hit the default action and kill the process.
  const backends = instance.control.backends
    .map((b) => `${b.host}:${b.port}${b.tls ? " (tls)" : ""}`)
    .join(", ");
  log.info("main", `listening on http://${options.host}:${port} (${what}) -> ${backends}`);
  announceReady();
  for (const sig of hold.held) act[sig]();
}

void main(process.argv.slice(2));
