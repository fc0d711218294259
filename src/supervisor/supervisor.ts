// The mp supervisor: owns the region and the control plane, spawns N workers (SELF + ARGS, with IPC),
// respawns the ones that die with exponential backoff, and stops them all on drain.
import type { Subprocess } from "bun";
import type { Options } from "../config/options.ts";
import { createRegion, type Region, removeRegion, removeStaleRegions } from "../shm/region.ts";
import { inheritWafState } from "../shm/waf.ts";
import { log } from "../telemetry/log.ts";
import { Control } from "./control.ts";
import { ARGS, ENV_PORT, ENV_REGION, ENV_ROLE, ENV_SLOT, ENV_SLOTS, ENV_UPGRADE_FROM, SELF } from "./self.ts";
import { predecessorRegion } from "./upgrade.ts";
import { WafControl } from "./waf-control.ts";
import type { WorkerMessage } from "./worker.ts";

/** First respawn delay after a worker dies; doubles per quick death up to RESPAWN_BACKOFF_MAX_MS. */
export const RESPAWN_BACKOFF_MIN_MS = 100;
/** Slowest retry for a worker that keeps dying at start (it is reported, not spun). */
export const RESPAWN_BACKOFF_MAX_MS = 30_000;
/** A worker that lived this long before dying is respawned at the minimum delay again. */
export const WORKER_STABLE_MS = 10_000;
/** Quick deaths in a row after which the supervisor reports a worker as failing at start. */
export const QUICK_DEATHS_REPORTED = 3;
/** How long the first workers may take to serve before the start counts as failed. */
export const WORKER_START_TIMEOUT_MS = 15_000;

interface Slot {
  readonly index: number;
  proc: Subprocess | null;
  startedMs: number;
  ready: boolean;
  backoffMs: number;
  quickDeaths: number;
  respawnTimer: ReturnType<typeof setTimeout> | null;
}

export interface Supervisor {
  readonly region: Region;
  readonly control: Control;
  readonly port: number;
  readonly workers: number;
  /** pids of the live workers (tests, logs). */
  pids(): number[];
  reload(): void;
  /** SIGTERM to every worker, wait for them (bounded by drainTimeoutMs + a margin), clean up. */
  drain(): Promise<void>;
}

/** Margin over drainTimeoutMs before a worker that has not exited is killed. */
const DRAIN_KILL_MARGIN_MS = 2_000;

export async function startSupervisor(
  options: Options,
  port: number,
  workers: number,
  flagsGiven: ReadonlySet<string>,
): Promise<Supervisor> {
  for (const p of removeStaleRegions())
    log.info("supervisor", `removed a stale region of a crashed run: ${p}`);
  const region = createRegion(port);
  let control: Control;
  let waf: WafControl | null = null;
  try {
    control = new Control(options, region, { flagsGiven, slotsInUse: workers + 1 });
    if (options.wafConfig !== null)
      waf = new WafControl(options.wafConfig, region, control.metrics, options.wafShadow);
  } catch (err) {
    removeRegion(region);
    throw err;
  }
  const old = predecessorRegion();
  if (old !== null) {
    control.inherit(old);
    inheritWafState(region, old);
  }
  control.run();
  waf?.run();

  const slots: Slot[] = Array.from({ length: workers }, (_, i) => ({
    index: i + 1,
    proc: null,
    startedMs: 0,
    ready: false,
    backoffMs: RESPAWN_BACKOFF_MIN_MS,
    quickDeaths: 0,
    respawnTimer: null,
  }));
  let draining = false;
  let onReady: (() => void) | null = null;
  let onStartFailure: ((why: string) => void) | null = null;
  let started = false;

  const env = (slot: Slot): Record<string, string | undefined> => {
    const e: Record<string, string | undefined> = {
      ...process.env,
      [ENV_ROLE]: "worker",
      [ENV_REGION]: region.path,
      [ENV_SLOT]: String(slot.index),
      [ENV_SLOTS]: String(workers + 1),
      [ENV_PORT]: String(port),
    };
    delete e[ENV_UPGRADE_FROM];
    return e;
  };

  const spawnWorker = (slot: Slot) => {
    slot.respawnTimer = null;
    slot.ready = false;
    slot.startedMs = performance.now();
    const proc = Bun.spawn([...SELF, ...ARGS], {
      env: env(slot),
      stdio: ["ignore", "inherit", "inherit"],
      ipc(message: WorkerMessage) {
        if (message?.type !== "ready") return;
        slot.ready = true;
        log.debug("supervisor", `worker ${slot.index} (pid ${proc.pid}) serving`);
        if (slots.every((s) => s.ready)) onReady?.();
      },
      onExit(_p, code, signal) {
        if (slot.proc === proc) slot.proc = null;
        if (draining) return;
        const how = signal ? `signal ${signal}` : `exit code ${code}`;
        if (!started) {
          onStartFailure?.(`worker ${slot.index} (pid ${proc.pid}) ended before serving (${how})`);
          return;
        }
        const livedMs = performance.now() - slot.startedMs;
        if (livedMs >= WORKER_STABLE_MS) {
          slot.backoffMs = RESPAWN_BACKOFF_MIN_MS;
          slot.quickDeaths = 0;
        } else slot.quickDeaths++;
        const delay = slot.backoffMs;
        slot.backoffMs = Math.min(slot.backoffMs * 2, RESPAWN_BACKOFF_MAX_MS);
        if (slot.quickDeaths >= QUICK_DEATHS_REPORTED) {
          log.err(
            "supervisor",
            `worker ${slot.index} keeps dying at start (${slot.quickDeaths} times in a row, last: ${how}); next try in ${delay} ms`,
          );
        } else {
          log.warn(
            "supervisor",
            `worker ${slot.index} (pid ${proc.pid}) died (${how}); respawning in ${delay} ms`,
          );
        }
        slot.respawnTimer = setTimeout(() => spawnWorker(slot), delay);
      },
    });
    slot.proc = proc;
  };

  const killAll = (signal: NodeJS.Signals) => {
    for (const s of slots) {
      if (s.respawnTimer !== null) clearTimeout(s.respawnTimer);
      s.respawnTimer = null;
      s.proc?.kill(signal);
    }
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`workers did not serve within ${WORKER_START_TIMEOUT_MS} ms`)),
        WORKER_START_TIMEOUT_MS,
      );
      onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      onStartFailure = (why) => {
        clearTimeout(timer);
        reject(new Error(why));
      };
      for (const s of slots) spawnWorker(s);
    });
  } catch (err) {
    draining = true;
    killAll("SIGKILL");
    control.close();
    waf?.close();
    removeRegion(region);
    throw err;
  }
  started = true;
  onReady = null;

  let drainPromise: Promise<void> | null = null;
  return {
    region,
    control,
    port,
    workers,
    pids: () => slots.flatMap((s) => (s.proc ? [s.proc.pid] : [])),
    reload: () => {
      control.reload();
      waf?.reload();
    },
    drain() {
      drainPromise ??= (async () => {
        draining = true;
        control.close();
        waf?.close();
        const live = slots.flatMap((s) => (s.proc ? [s.proc] : []));
        killAll("SIGTERM");
        const kill = setTimeout(() => killAll("SIGKILL"), options.drainTimeoutMs + DRAIN_KILL_MARGIN_MS);
        await Promise.all(live.map((p) => p.exited));
        clearTimeout(kill);
        removeRegion(region);
      })();
      return drainPromise;
    },
  };
}
