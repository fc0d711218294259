// Creating, finding and mapping the shared region file (layout in ./layout.ts).
//
// The file lives in /dev/shm when present (memory, never written back to disk), else the temp dir. Its
// name holds the port, the creating pid and a sequence number (`zzz-lb-8080-1234-0.shm`), so an instance and the one that
// replaces it during a binary upgrade never share a file, and a file whose pid is dead is a leftover of a
// crash: it is removed at the next start. It is created at full size before anyone maps it and is never
// truncated while mapped (a mapped page past the end of a file is SIGBUS).
import { closeSync, existsSync, ftruncateSync, openSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  H_MAGIC,
  H_OWNER_PID,
  H_SIZE_BYTES,
  H_VERSION,
  LAYOUT_VERSION,
  MAGIC,
  REGION_BYTES,
} from "./layout.ts";
import { initWafSeed } from "./waf.ts";

export class RegionError extends Error {
  override readonly name = "RegionError";
}

export interface Region {
  readonly path: string;
  readonly bytes: Uint8Array;
  /** The whole region as int32 words (every Atomics call goes through this view). */
  readonly words: Int32Array;
}

const NAME_RE = /^zzz-lb-(\d+)-(\d+)-(\d+)\.shm$/;
/** Regions this process created (an sp test process may run several proxies). */
let created = 0;

export function regionDir(): string {
  return existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: alive but not ours.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes region files of dead instances (crashed runs); returns the paths removed. */
export function removeStaleRegions(dir = regionDir()): string[] {
  const removed: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = NAME_RE.exec(name);
    if (m === null) continue;
    const pid = Number(m[2]);
    if (pid === process.pid || isAlive(pid)) continue;
    try {
      rmSync(join(dir, name), { force: true });
      removed.push(join(dir, name));
    } catch {
      // Not ours to remove (another user's): leave it.
    }
  }
  return removed;
}

function map(path: string): Region {
  const bytes = Bun.mmap(path, { shared: true });
  if (bytes.byteLength < REGION_BYTES)
    throw new RegionError(`${path}: ${bytes.byteLength} bytes, layout needs ${REGION_BYTES}`);
  return { path, bytes, words: new Int32Array(bytes.buffer, bytes.byteOffset, REGION_BYTES >> 2) };
}

/** Creates this instance's region at full size, zeroed, with the header written. */
export function createRegion(port: number, dir = regionDir()): Region {
  const path = join(dir, `zzz-lb-${port}-${process.pid}-${created++}.shm`);
  rmSync(path, { force: true });
  const fd = openSync(path, "w+", 0o600);
  try {
    ftruncateSync(fd, REGION_BYTES); // sparse zeroes: the layout's initial state is all zero
  } finally {
    closeSync(fd);
  }
  const r = map(path);
  Atomics.store(r.words, H_VERSION, LAYOUT_VERSION);
  Atomics.store(r.words, H_SIZE_BYTES, REGION_BYTES);
  Atomics.store(r.words, H_OWNER_PID, process.pid);
  initWafSeed(r);
  Atomics.store(r.words, H_MAGIC, MAGIC); // last: a reader that sees the magic sees the rest
  return r;
}

/** Maps an existing region; throws RegionError when it is not one of this layout. */
export function openRegion(path: string): Region {
  if (!existsSync(path)) throw new RegionError(`${path}: no such shared region`);
  const r = map(path);
  const w = r.words;
  if (Atomics.load(w, H_MAGIC) !== MAGIC) throw new RegionError(`${path}: not a zzz-lb region`);
  const version = Atomics.load(w, H_VERSION);
  if (version !== LAYOUT_VERSION)
    throw new RegionError(`${path}: layout version ${version}, this build uses ${LAYOUT_VERSION}`);
  if (Atomics.load(w, H_SIZE_BYTES) !== REGION_BYTES)
    throw new RegionError(`${path}: size ${Atomics.load(w, H_SIZE_BYTES)}, this build uses ${REGION_BYTES}`);
  return r;
}

/** Removes the file (on clean exit). The mapping stays valid until the process exits. */
export function removeRegion(r: Region): void {
  rmSync(r.path, { force: true });
}
