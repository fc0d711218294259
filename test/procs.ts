// Processes seen through /proc, for the tests that start real instances (mp workers, upgrades).
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";

/** The state letter of /proc/PID/stat, or null when there is no such process. */
export function procState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return null;
  }
}

/** Running (a zombie waiting for a reaper that may never come is gone for our purposes). */
export function isAlive(pid: number): boolean {
  const s = procState(pid);
  return s !== null && s !== "Z" && s !== "X";
}

/** Live children of `pid`, from the ppid field of every /proc/N/stat. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "latin1");
    } catch {
      continue;
    }
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(rest[1]) === pid && rest[0] !== "Z" && rest[0] !== "X") out.push(Number(name));
  }
  return out.sort((a, b) => a - b);
}

const MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req";

/**
 * Zero-failure upgrades need Linux to hand connections queued on a closing SO_REUSEPORT listener to
 * another one (README, "Binary upgrade"); without it a few fresh connections per upgrade are reset.
 * The setting is per network namespace; this machine and CI run the tests as root.
 */
export function ensureQueuedConnectionsMigrate(): void {
  if (!existsSync(MIGRATE_REQ) || readFileSync(MIGRATE_REQ, "utf8").trim() === "1") return;
  try {
    writeFileSync(MIGRATE_REQ, "1");
  } catch (err) {
    throw new Error(`${MIGRATE_REQ} is 0 and cannot be set (${String(err)}): run as root or set it to 1`);
  }
}
