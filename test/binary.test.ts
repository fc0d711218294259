// The compiled binary, as an operator runs and upgrades it: built once with the flags build.ts uses,
// started from another directory, replaced with `mv` while it runs, then told SIGUSR2. Under keep-alive
// and fresh-connection load nothing may fail, and the new instance must run the new file. Processes are
// found through /proc; everything the file starts is killed and the ~105 MB build is removed afterwards.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { regionDir } from "../src/shm/region.ts";
import { PROBE_USER_AGENT } from "../src/upstream/probe.ts";
import { closedPort, waitFor } from "./helpers.ts";
import { Load } from "./load.ts";
import { childrenOf, ensureQueuedConnectionsMigrate, isAlive } from "./procs.ts";

// ---------------------------------------------------------------------------------------------------------
// Bounds

const HOST = "127.0.0.1";
const REPO_ROOT = join(import.meta.dir, "..");
/** The build (~5 s on a busy 2-core machine) plus start, upgrade and stop. */
const TEST_TIMEOUT_MS = 60_000;
/** `bun build --compile` of src/main.ts; measured 0.5-5 s here. */
const BUILD_DEADLINE_MS = 45_000;
/** A started instance logs its listening line within this (binary start + 2 workers on 2 busy cores). */
const START_DEADLINE_MS = 15_000;
/** From SIGUSR2 until the old instance has drained and exited (it drains idle connections at once). */
const UPGRADE_DEADLINE_MS = 15_000;
/** After SIGTERM with no request in flight, the instance and its workers are gone within this. */
const STOP_DEADLINE_MS = 5_000;
/** Probes once at start only, so the backend sees (nearly) only the test's requests. */
const PROBE_INTERVAL_MS = "60000";
/** Successes every client must add once the new instance serves alone: it serves both kinds of client. */
const OK_AFTER_UPGRADE_MIN = 20;
const WORKERS = 2;

// ---------------------------------------------------------------------------------------------------------
// Processes (the /proc helpers are in ./procs.ts)

/** argv of a process as the kernel holds it. */
const cmdlineOf = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").slice(0, -1);

const LISTENING_RE =
  /info\(main\): listening on http:\/\/[^:]+:(\d+) \(mp, (\d+) workers?, supervisor pid (\d+)\)/g;

/** Successful requests of one kind of client. */
const okOf = (load: Load, kind: "keep-alive" | "fresh") =>
  load.clients.filter((c) => c.kind === kind).reduce((n, c) => n + c.ok, 0);

/** Every mp `listening on` line so far: port, workers, supervisor pid. */
function listeningLines(stderr: string) {
  return [...stderr.matchAll(LISTENING_RE)].map((m) => ({
    port: Number(m[1]),
    workers: Number(m[2]),
    pid: Number(m[3]),
  }));
}

// ---------------------------------------------------------------------------------------------------------
// The build, and cleanup of everything this file starts

let dir = "";
/** Where the operator's binary lives, and the new build they `mv` over it. */
let binPath = "";
let newPath = "";
let buildMs = 0;
/** Instance pids (the first is our child; upgraded ones are not): killed with their workers at the end. */
const instancePids = new Set<number>();
const usedPorts = new Set<number>();
const cleanups: (() => unknown)[] = [];

beforeAll(
  async () => {
    ensureQueuedConnectionsMigrate();
    dir = mkdtempSync(join(tmpdir(), "zzz-lb-binary-test-"));
    const built = join(dir, "v1", "load_balancer");
    // The CLI form of build.ts's Bun.build({ compile: { outfile }, minify: true }).
    const t0 = performance.now();
    const b = Bun.spawn(
      [process.execPath, "build", "--compile", "--minify", "src/main.ts", "--outfile", built],
      { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe", timeout: BUILD_DEADLINE_MS, killSignal: "SIGKILL" },
    );
    const [code, out, err] = await Promise.all([
      b.exited,
      new Response(b.stdout).text(),
      new Response(b.stderr).text(),
    ]);
    buildMs = performance.now() - t0;
    if (code !== 0) throw new Error(`bun build --compile exited ${code}:\n${out}\n${err}`);
    mkdirSync(join(dir, "bin"));
    binPath = join(dir, "bin", "load_balancer");
    newPath = `${binPath}.new`;
    for (const p of [binPath, newPath]) {
      copyFileSync(built, p);
      chmodSync(p, 0o755);
    }
    console.log(
      `build: ${(buildMs / 1000).toFixed(1)} s, ${(statSync(built).size / 1024 / 1024).toFixed(1)} MB`,
    );
  },
  { timeout: BUILD_DEADLINE_MS + 5_000 },
);

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  // A failed test leaves instances behind (an upgraded one is not our child): workers first, then them.
  const leftovers: number[] = [];
  for (const pid of instancePids) leftovers.push(...childrenOf(pid), pid);
  for (const pid of leftovers) if (isAlive(pid)) process.kill(pid, "SIGKILL");
  await waitFor("test processes to be gone", () => leftovers.every((p) => !isAlive(p)));
  // Region files of instances that did not exit cleanly: only those of this file's ports.
  for (const port of usedPorts)
    for (const n of readdirSync(regionDir()))
      if (n.startsWith(`zzz-lb-${port}-`)) rmSync(join(regionDir(), n), { force: true });
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------

describe("the compiled binary", () => {
  test("--version works from another directory", async () => {
    const p = Bun.spawn([binPath, "--version"], { cwd: "/", stdout: "pipe", stderr: "pipe" });
    const [code, out] = await Promise.all([p.exited, new Response(p.stdout).text()]);
    expect({ code, out }).toEqual({ code: 0, out: `load_balancer ${pkg.version}\n` });
  });

  test(
    "mv over the running binary + SIGUSR2 under load: the new file serves, nothing fails, SIGTERM stops it",
    async () => {
      // A backend that answers at once.
      let served = 0;
      const be = Bun.serve({
        hostname: HOST,
        port: 0,
        fetch(req) {
          if (req.headers.get("user-agent") !== PROBE_USER_AGENT) served++;
          return new Response("ok");
        },
      });
      cleanups.push(() => be.stop(true));

      const port = closedPort();
      usedPorts.add(port);
      const args = ["-b", `${HOST}:${be.port}`, "-h", HOST, "-p", String(port), "-w", String(WORKERS)];
      args.push("--probe-interval-ms", PROBE_INTERVAL_MS);
      // Started by absolute path from "/", as an operator's service manager would.
      const proc = Bun.spawn([binPath, ...args], {
        cwd: "/",
        stdin: "ignore",
        stdout: "ignore",
        stderr: "pipe",
      });
      instancePids.add(proc.pid);
      let stderr = "";
      const stderrDone = (async () => {
        const decoder = new TextDecoder();
        for await (const chunk of proc.stderr) stderr += decoder.decode(chunk, { stream: true });
      })();
      const first = await waitFor(
        "the listening line",
        () => {
          if (proc.exitCode !== null) throw new Error(`exited ${proc.exitCode} before listening:\n${stderr}`);
          return listeningLines(stderr)[0];
        },
        START_DEADLINE_MS,
      );
      const oldPid = proc.pid;
      expect(first).toEqual({ port, workers: WORKERS, pid: oldPid });

      // Workers are the binary itself, started as [binary, ...the user's args] (not through bun).
      const oldWorkers = childrenOf(oldPid);
      expect(oldWorkers).toHaveLength(WORKERS);
      for (const w of [oldPid, ...oldWorkers]) {
        expect(cmdlineOf(w)).toEqual([binPath, ...args]);
        expect(readlinkSync(`/proc/${w}/exe`)).toBe(binPath);
        expect(readFileSync(`/proc/${w}/comm`, "latin1").trim()).toBe("load_balancer");
      }

      const load = new Load(port, { keepAlive: 4, fresh: 4 });
      cleanups.push(() => load.stop());
      await waitFor("load running on every client", () => load.clients.every((c) => c.ok >= 5));

      // The operator's upgrade: rename the new build over the running one (cp would fail: text file busy).
      const newInode = statSync(newPath).ino;
      renameSync(newPath, binPath);
      expect(readlinkSync(`/proc/${oldPid}/exe`)).toBe(`${binPath} (deleted)`);
      const t0 = performance.now();
      process.kill(oldPid, "SIGUSR2");
      const next = await waitFor(
        "a second listening line",
        () => listeningLines(stderr)[1],
        START_DEADLINE_MS,
      );
      const listeningMs = performance.now() - t0;
      instancePids.add(next.pid);
      expect(next.pid).not.toBe(oldPid);
      expect(next).toMatchObject({ port, workers: WORKERS });
      await waitFor(`the old instance ${oldPid} to exit`, () => !isAlive(oldPid), UPGRADE_DEADLINE_MS);
      const upgradeMs = performance.now() - t0;
      await waitFor("the old workers to exit", () => oldWorkers.every((w) => !isAlive(w)), STOP_DEADLINE_MS);
      expect(await proc.exited).toBe(0);

      // The new instance runs the new file at the operator's path, and so do its workers.
      const newWorkers = childrenOf(next.pid);
      expect(newWorkers).toHaveLength(WORKERS);
      for (const p of [next.pid, ...newWorkers]) {
        expect(readlinkSync(`/proc/${p}/exe`)).toBe(binPath);
        expect(statSync(`/proc/${p}/exe`).ino).toBe(newInode);
        expect(cmdlineOf(p)).toEqual([binPath, ...args]);
      }

      // The new instance alone serves every client, keep-alive and fresh.
      const okAtUpgrade = load.clients.map((c) => c.ok);
      await waitFor("every client served by the new instance", () =>
        load.clients.every((c, i) => c.ok >= okAtUpgrade[i]! + OK_AFTER_UPGRADE_MIN),
      );
      await load.stop();
      console.log(
        `upgrade: ${oldPid} -> ${next.pid}: new listening after ${listeningMs.toFixed(0)} ms, old gone after ` +
          `${upgradeMs.toFixed(0)} ms; ${load.total} requests (ok: ${okOf(load, "keep-alive")} keep-alive, ` +
          `${okOf(load, "fresh")} fresh), ${load.failures.length} failed; backend saw ${served}`,
      );
      expect(load.failures.map((f) => `${f.client} ${f.target}: ${f.error}`)).toEqual([]);
      expect(stderr).toContain(`info(main): upgrade: pid ${next.pid} serves: draining`);

      // Stop the new instance (not our child) by pid: it and its workers go.
      const stoppedAtMs = performance.now();
      process.kill(next.pid, "SIGTERM");
      await waitFor(
        "the new instance and its workers to exit",
        () => !isAlive(next.pid) && newWorkers.every((w) => !isAlive(w)),
        STOP_DEADLINE_MS,
      );
      console.log(
        `stop: ${next.pid} and its workers gone after ${(performance.now() - stoppedAtMs).toFixed(0)} ms`,
      );
      await stderrDone;
      expect(stderr.match(/info\(main\): stopped/g)).toHaveLength(2);
      expect(stderr).not.toContain("err(");
    },
    TEST_TIMEOUT_MS,
  );
});
