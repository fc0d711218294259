// The shared region file: two real processes see each other's atomic updates, a file that is not a
// region of this layout is refused with its name, and leftovers of crashed runs are recognised by pid.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { H_MAGIC, H_RR, H_SIZE_BYTES, H_VERSION, LAYOUT_VERSION, MAGIC, REGION_BYTES } from "./layout.ts";
import { createRegion, openRegion, RegionError, removeStaleRegions } from "./region.ts";

/** Increments per process in the cross-process test: enough that unsynchronised adds would collide. */
const ADDS_PER_PROCESS = 1_000_000;
/** Header word between H_UPGRADE_READY_PID and H_RETRY_BUDGET that nothing uses: the start barrier. */
const BARRIER_WORD = 12;
/** A child that never sees its sibling arrive gives up after this long (exit code 3) instead of hanging. */
const BARRIER_TIMEOUT_MS = 10_000;
/** Upper bound for a child process; it is killed after this. */
const CHILD_TIMEOUT_MS = 20_000;

const dir = mkdtempSync(join(tmpdir(), "zzz-lb-region-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A port number for region file names: only the name uses it. */
const PORT = 18_999;

/**
 * The child: maps the region with the product's openRegion, waits until both children are there (so the
 * adds overlap), then adds 1 to H_RR ADDS_PER_PROCESS times.
 */
const CHILD_SOURCE = `
import { openRegion } from ${JSON.stringify(join(import.meta.dir, "region.ts"))};
const [path, word, adds, barrier, timeoutMs] = process.argv.slice(2);
const w = openRegion(path).words;
Atomics.add(w, Number(barrier), 1);
const end = Date.now() + Number(timeoutMs);
while (Atomics.load(w, Number(barrier)) < 2) if (Date.now() > end) process.exit(3);
const n = Number(adds), k = Number(word);
for (let i = 0; i < n; i++) Atomics.add(w, k, 1);
`;

describe("two processes share the region", () => {
  test(`Atomics.add from two bun processes, ${ADDS_PER_PROCESS} each, loses no update`, async () => {
    const r = createRegion(PORT, dir);
    const script = join(dir, "adder.ts");
    writeFileSync(script, CHILD_SOURCE);
    const args = [r.path, H_RR, ADDS_PER_PROCESS, BARRIER_WORD, BARRIER_TIMEOUT_MS].map(String);
    const children = [0, 1].map(() =>
      Bun.spawn([process.execPath, script, ...args], {
        stdio: ["ignore", "inherit", "inherit"],
        timeout: CHILD_TIMEOUT_MS,
        killSignal: "SIGKILL",
      }),
    );
    const codes = await Promise.all(children.map((c) => c.exited));
    expect(codes).toEqual([0, 0]);
    expect(Atomics.load(r.words, BARRIER_WORD)).toBe(2);
    expect(Atomics.load(r.words, H_RR)).toBe(2 * ADDS_PER_PROCESS);
  });

  test("a second mapping in this process sees the first one's stores", () => {
    const a = createRegion(PORT, dir);
    const b = openRegion(a.path);
    Atomics.store(a.words, H_RR, 41);
    Atomics.add(b.words, H_RR, 1);
    expect(Atomics.load(a.words, H_RR)).toBe(42);
  });
});

describe("openRegion refuses what is not a region of this layout, naming the file", () => {
  /** openRegion's error, which must be a RegionError. */
  function refusal(path: string): string {
    try {
      openRegion(path);
    } catch (err) {
      expect(err).toBeInstanceOf(RegionError);
      return (err as Error).message;
    }
    throw new Error(`openRegion(${path}) accepted the file`);
  }

  test("wrong magic", () => {
    const r = createRegion(PORT, dir);
    Atomics.store(r.words, H_MAGIC, 0x12345678);
    const msg = refusal(r.path);
    expect(msg).toContain(r.path);
    expect(msg).toContain("not a zzz-lb region");
  });

  test("wrong layout version", () => {
    const r = createRegion(PORT, dir);
    Atomics.store(r.words, H_VERSION, LAYOUT_VERSION + 1);
    const msg = refusal(r.path);
    expect(msg).toContain(r.path);
    expect(msg).toContain(`layout version ${LAYOUT_VERSION + 1}`);
    expect(msg).toContain(`this build uses ${LAYOUT_VERSION}`);
  });

  test("wrong size in the header", () => {
    const r = createRegion(PORT, dir);
    Atomics.store(r.words, H_SIZE_BYTES, REGION_BYTES - 4096);
    const msg = refusal(r.path);
    expect(msg).toContain(r.path);
    expect(msg).toContain(`size ${REGION_BYTES - 4096}`);
  });

  test("a file shorter than the layout (valid header, truncated body)", () => {
    const path = join(dir, "short.shm");
    const head = new Int32Array(1024);
    head[H_MAGIC] = MAGIC;
    head[H_VERSION] = LAYOUT_VERSION;
    head[H_SIZE_BYTES] = REGION_BYTES;
    writeFileSync(path, new Uint8Array(head.buffer));
    const msg = refusal(path);
    expect(msg).toContain(path);
    expect(msg).toContain(`layout needs ${REGION_BYTES}`);
  });

  test("a missing file", () => {
    const path = join(dir, "missing.shm");
    const msg = refusal(path);
    expect(msg).toContain(path);
    expect(msg).toContain("no such shared region");
  });

  test("a fresh region opens", () => {
    const r = createRegion(PORT, dir);
    expect(openRegion(r.path).words.length).toBe(REGION_BYTES >> 2);
  });
});

describe("removeStaleRegions", () => {
  test("removes a file named with a dead pid, keeps one with a live pid and foreign names", async () => {
    const staleDir = mkdtempSync(join(dir, "stale-"));
    const ended = Bun.spawn([process.execPath, "-e", ""], { stdio: ["ignore", "ignore", "ignore"] });
    await ended.exited; // reaped by Bun: the pid is dead (and not yet reused, pids are not recycled so soon)
    const living = Bun.spawn([process.execPath, "-e", "setTimeout(() => {}, 60_000)"], {
      stdio: ["ignore", "ignore", "ignore"],
      timeout: CHILD_TIMEOUT_MS,
      killSignal: "SIGKILL",
    });
    try {
      const dead = join(staleDir, `zzz-lb-${PORT}-${ended.pid}-0.shm`);
      const live = join(staleDir, `zzz-lb-${PORT}-${living.pid}-0.shm`);
      const foreign = join(staleDir, `other-${ended.pid}.shm`);
      for (const p of [dead, live, foreign]) writeFileSync(p, "");
      expect(removeStaleRegions(staleDir)).toEqual([dead]);
      expect(existsSync(dead)).toBe(false);
      expect(existsSync(live)).toBe(true);
      expect(existsSync(foreign)).toBe(true);
    } finally {
      living.kill("SIGKILL");
      await living.exited;
    }
  });
});
