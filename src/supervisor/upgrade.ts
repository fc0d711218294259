// Zero-downtime binary upgrade (SIGUSR2), in both modes:
//   1. the old instance starts SELF + ARGS (the file now at the binary's path) with ENV_UPGRADE_FROM
//      naming its own region, as a detached process of its own;
//   2. the new instance skips the "port in use" check (the old one holds the port; reusePort lets both
//      listen), takes over the old region's health state, and once it serves writes its pid into the
//      old region's H_UPGRADE_READY_PID;
//   3. the old instance sees that, drains and exits. If the new one exits first or never gets ready,
//      the old one keeps serving and says why.
// The region doubles as the channel, so the new instance needs no pipe or IPC with the old one.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { H_MAGIC, H_UPGRADE_READY_PID, MAGIC } from "../shm/layout.ts";
import { openRegion, type Region, RegionError } from "../shm/region.ts";
import { log } from "../telemetry/log.ts";
import { ARGS, ENV_PORT, ENV_REGION, ENV_ROLE, ENV_SLOT, ENV_SLOTS, ENV_UPGRADE_FROM, SELF } from "./self.ts";

/** How long the old instance waits for the new one to serve before giving up on the upgrade. */
export const UPGRADE_READY_TIMEOUT_MS = 30_000;
/** Poll interval for the new instance's ready mark (Atomics.wait does not work on mapped files). */
const UPGRADE_POLL_MS = 20;

/** Result of an upgrade attempt, from the old instance's side. */
export type UpgradeOutcome = { ok: true; pid: number } | { ok: false; why: string };

/**
 * Linux resets connections still waiting in a SO_REUSEPORT listener's accept queue when that listener
 * closes, unless net.ipv4.tcp_migrate_req is 1 (5.14+): then they move to another listener of the port.
 * Measured here under load: a few reset fresh connections per upgrade with 0, none with 1.
 */
const MIGRATE_REQ_SYSCTL = "/proc/sys/net/ipv4/tcp_migrate_req";

function warnIfQueuedConnectionsDrop(): void {
  try {
    if (readFileSync(MIGRATE_REQ_SYSCTL, "utf8").trim() === "0") {
      log.warn(
        "upgrade",
        "net.ipv4.tcp_migrate_req is 0: connections queued on the old listeners when they close are reset; " +
          "set it to 1 (sysctl -w net.ipv4.tcp_migrate_req=1) for upgrades without failed connections",
      );
    }
  } catch {
    // Not Linux, or an older kernel without the setting.
  }
}

/** A new instance being started: its pid, a way to stop it, and how the attempt ends. */
export interface Successor {
  readonly pid: number;
  readonly outcome: Promise<UpgradeOutcome>;
  kill(): void;
}

/** Old side: start the successor; `outcome` settles when it serves (or fails). */
export function startSuccessor(own: Region): Successor {
  warnIfQueuedConnectionsDrop();
  Atomics.store(own.words, H_UPGRADE_READY_PID, 0);
  const env: Record<string, string | undefined> = { ...process.env, [ENV_UPGRADE_FROM]: own.path };
  for (const k of [ENV_ROLE, ENV_REGION, ENV_SLOT, ENV_SLOTS, ENV_PORT]) delete env[k];
  log.info("upgrade", `starting ${[...SELF, ...ARGS].join(" ")}`);
  const child = spawn(SELF[0]!, [...SELF.slice(1), ...ARGS], { detached: true, stdio: "inherit", env });
  let exited: string | null = null;
  child.on("exit", (code, signal) => {
    exited = signal ? `signal ${signal}` : `exit code ${code}`;
  });
  child.on("error", (err) => {
    exited = String(err);
  });
  child.unref();
  const deadline = performance.now() + UPGRADE_READY_TIMEOUT_MS;
  let poll: ReturnType<typeof setInterval> | null = null;
  const outcome = new Promise<UpgradeOutcome>((resolve) => {
    poll = setInterval(() => {
      const pid = Atomics.load(own.words, H_UPGRADE_READY_PID);
      if (pid !== 0 && pid === child.pid) {
        clearInterval(poll!);
        resolve({ ok: true, pid });
      } else if (exited !== null) {
        clearInterval(poll!);
        resolve({ ok: false, why: `the new instance ended before serving (${exited})` });
      } else if (performance.now() > deadline) {
        clearInterval(poll!);
        child.kill("SIGTERM");
        resolve({ ok: false, why: `the new instance did not serve within ${UPGRADE_READY_TIMEOUT_MS} ms` });
      }
    }, UPGRADE_POLL_MS);
  });
  return {
    pid: child.pid ?? 0,
    outcome,
    kill() {
      if (poll !== null) clearInterval(poll);
      child.kill("SIGTERM");
    },
  };
}

/** New side: the old instance's region, when this process was started by an upgrade. */
export function predecessorRegion(): Region | null {
  const path = process.env[ENV_UPGRADE_FROM];
  if (path === undefined || path === "") return null;
  try {
    return openRegion(path);
  } catch (err) {
    // Another layout version (or gone): start fresh; the old one still hands over when we report ready.
    log.warn(
      "upgrade",
      `${err instanceof RegionError ? err.message : String(err)}; starting with fresh state`,
    );
    return null;
  }
}

/**
 * New side, once serving: tell the old instance it may go. Written through a raw mapping, not
 * openRegion: the header words up to H_UPGRADE_READY_PID keep their place in every layout version, so
 * this works even when the new build's layout differs from the old one's.
 */
export function announceReady(): void {
  const path = process.env[ENV_UPGRADE_FROM];
  if (path === undefined || path === "") return;
  try {
    const bytes = Bun.mmap(path, { shared: true });
    const words = new Int32Array(bytes.buffer, bytes.byteOffset, H_UPGRADE_READY_PID + 1);
    if (Atomics.load(words, H_MAGIC) !== MAGIC) throw new RegionError(`${path}: not a zzz-lb region`);
    Atomics.store(words, H_UPGRADE_READY_PID, process.pid);
  } catch (err) {
    log.err("upgrade", `cannot tell the old instance to stop (${String(err)}); stop it yourself`);
  }
}

/** Whether this process was started as an upgrade (the port is legitimately held by the old instance). */
export function isUpgrade(): boolean {
  return (process.env[ENV_UPGRADE_FROM] ?? "") !== "";
}
