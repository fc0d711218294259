// An mp worker: maps the supervisor's region, serves with reusePort, reports ready over IPC, drains
// on SIGTERM, and exits when the IPC channel goes away (the supervisor died, even by kill -9: a
// spawned child is not killed with its parent, so this is what prevents orphans).
import type { Options } from "../config/options.ts";
import { type Serving, serve } from "../proxy/server.ts";
import { openRegion } from "../shm/region.ts";
import { log } from "../telemetry/log.ts";
import { ENV_PORT, ENV_REGION, ENV_SLOT, ENV_SLOTS } from "./self.ts";

/** A worker whose supervisor vanished stops at once (after this long for in-flight requests). */
export const ORPHAN_DRAIN_MS = 500;

/** Messages a worker sends its supervisor. */
export interface WorkerMessage {
  readonly type: "ready";
  readonly slot: number;
}

export function runWorker(options: Options): void {
  const slot = Number(process.env[ENV_SLOT]);
  const slots = Number(process.env[ENV_SLOTS]);
  const port = Number(process.env[ENV_PORT] ?? options.port);
  const name = `worker ${slot} (pid ${process.pid})`;
  // Sent to the whole process group by a terminal or `kill -HUP -pgid`: the supervisor acts on them.
  // Installed first: their default action would kill a worker that is still starting.
  process.on("SIGHUP", () => {});
  process.on("SIGUSR2", () => {});
  let serving: Serving;
  try {
    serving = serve({ ...options, port }, openRegion(process.env[ENV_REGION] ?? ""), slot, slots);
  } catch (err) {
    // One line for the supervisor's log; it respawns us with backoff and reports repeated failures.
    log.err("worker", `${name} cannot start: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }

  let stopping = false;
  const stop = (why: string, capMs: number) => {
    if (stopping) return;
    stopping = true;
    log.debug("worker", `${name}: ${why}: draining`);
    const hard = setTimeout(() => process.exit(0), capMs);
    void serving.stop().then(() => {
      clearTimeout(hard);
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => stop("SIGTERM", options.drainTimeoutMs + 1000));
  process.on("SIGINT", () => stop("SIGINT", options.drainTimeoutMs + 1000));
  process.on("disconnect", () => stop("supervisor gone", ORPHAN_DRAIN_MS));
  process.send?.({ type: "ready", slot } satisfies WorkerMessage);
}
