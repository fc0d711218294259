// The backend pool end to end: strategies, passive and active health, retries, backends.json hot reload
// under load, /metrics and the CLI/signal surface. Real Bun.serve (or raw TCP) backends on 127.0.0.1, an
// in-process proxy unless a process boundary matters.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "bun";
import { RETRY_AFTER_S_NO_BACKEND } from "../src/proxy/errors.ts";
import { PROBE_USER_AGENT } from "../src/upstream/probe.ts";
import {
  backend,
  closedPort,
  logLines,
  proxy,
  rawHttpBackend,
  spawnMain as spawnChild,
  waitFor,
} from "./helpers.ts";

/**
 * Per-test limit for the tests that take seconds (load loops, probes, child processes): bun's default is
 * 5 s, which a loaded 2-core machine can exceed without anything being wrong.
 */
const SLOW_TEST_MS = 30_000;

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type Backend = ReturnType<typeof backend>;

/** A backend that answers its own id (or runs `handler`); stopped after the test. */
function named(id: string, handler?: Parameters<typeof backend>[0]): Backend & { id: string } {
  const b = backend(handler ?? (() => new Response(id)));
  cleanups.push(b.stop);
  return Object.assign(b, { id });
}

/** Requests a backend saw from clients, not from the active probes. */
function traffic(b: { seen: { headers: Headers }[] }): number {
  let n = 0;
  for (const s of b.seen) if (s.headers.get("user-agent") !== PROBE_USER_AGENT) n++;
  return n;
}

const addr = (b: { port: number }) => `127.0.0.1:${b.port}`;

function lb(backends: string[], extra: string[] = [], activeProbes = false) {
  const p = proxy(backends, extra, { activeProbes });
  cleanups.push(p.close);
  return p;
}

/** Sends `n` sequential GETs and returns the response bodies. */
async function bodies(url: string, n: number, init?: RequestInit): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await fetch(url, init);
    out.push(await res.text());
    expect(res.status).toBe(200);
  }
  return out;
}

function tally(list: string[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const s of list) t[s] = (t[s] ?? 0) + 1;
  return t;
}

const logSince = (from: number) => logLines.slice(from);

/** `clients` concurrent sequential GET loops, `maxRequests` in all, until stop(); failures are kept. */
function startLoad(url: string, clients: number, maxRequests: number) {
  const st = { started: 0, done: 0, failures: [] as string[], stopped: false };
  const loop = async () => {
    while (!st.stopped && st.started < maxRequests) {
      st.started++;
      try {
        const res = await fetch(url);
        const text = await res.text();
        if (res.status !== 200) st.failures.push(`${res.status} ${text.trim()}`);
      } catch (e) {
        st.failures.push(String(e));
      }
      st.done++;
    }
  };
  const finished = Promise.all(Array.from({ length: clients }, loop)).then(() => undefined);
  const stop = async () => {
    st.stopped = true;
    await finished;
  };
  cleanups.push(stop);
  return { st, finished, stop };
}

/** A gate that requests can wait on until the test opens it. */
function gate() {
  let open: () => void = () => {};
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { opened, open };
}

/** A Bun.serve backend on a given port (to restart one where it was), recording what it received. */
function serveOn(port: number, id: string) {
  const seen: { headers: Headers }[] = [];
  const server: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port,
    fetch(req) {
      seen.push({ headers: req.headers });
      return new Response(id);
    },
  });
  cleanups.push(() => server.stop(true));
  return { server, seen, port, stop: () => server.stop(true) };
}

function tmpDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "zzz-pool-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function configText(backends: { port: number; weight?: number }[]): string {
  const list = backends.map((b) => ({
    host: "127.0.0.1",
    port: b.port,
    ...(b.weight ? { weight: b.weight } : {}),
  }));
  return JSON.stringify({ backends: list }, null, 2) + "\n";
}

let tmpSeq = 0;
/** Writes the config in place (truncate + write) or as an editor does (write a temp file, rename it over). */
function writeConfig(file: string, text: string, inPlace: boolean): void {
  if (inPlace) {
    writeFileSync(file, text);
    return;
  }
  const tmp = `${file}.tmp${tmpSeq++}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

const keysOf = (p: { fleet: { backends: readonly { key: string }[] } }) => p.fleet.backends.map((b) => b.key);

/** Value of one exact series (`name{labels}`) in Prometheus text; NaN when absent. */
function series(text: string, name: string): number {
  for (const line of text.split("\n")) {
    if (line.startsWith(name + " ")) return Number(line.slice(name.length + 1));
  }
  return Number.NaN;
}

/** Sum over every series of metric `name` whose labels contain all of `labels`. */
function sumOf(text: string, name: string, ...labels: string[]): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{")) continue;
    const close = line.indexOf("} ");
    const labelText = line.slice(name.length + 1, close);
    if (labels.every((l) => labelText.includes(l))) sum += Number(line.slice(close + 2));
  }
  return sum;
}

function cookieOf(res: Response, name: string): string | null {
  for (const c of res.headers.getSetCookie()) {
    const eq = c.indexOf("=");
    if (c.slice(0, eq) === name) return c.slice(eq + 1).split(";")[0]!;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------------

describe("strategies", () => {
  test("round_robin: 9 sequential requests over 3 backends -> 3/3/3", async () => {
    const bs = ["a", "b", "c"].map((id) => named(id));
    const p = lb(bs.map(addr));
    const got = await bodies(p.url + "/", 9);
    expect(tally(got)).toEqual({ a: 3, b: 3, c: 3 });
    expect(bs.map((b) => b.seen.length)).toEqual([3, 3, 3]);
  });

  test("weighted 5,1,1 from a -c file -> the smooth sequence a,a,b,a,c,a,a (twice)", async () => {
    const bs = ["a", "b", "c"].map((id) => named(id));
    const file = join(tmpDir(), "backends.json");
    writeFileSync(file, configText(bs.map((b, i) => ({ port: b.port, weight: [5, 1, 1][i] }))));
    const p = lb([], ["-c", file, "-s", "weighted"]);
    const got = await bodies(p.url + "/", 14);
    const cycle = ["a", "a", "b", "a", "c", "a", "a"];
    expect(got).toEqual([...cycle, ...cycle]);
  });

  test("random reaches every backend within 200 requests", async () => {
    const bs = ["a", "b", "c"].map((id) => named(id));
    const p = lb(bs.map(addr), ["-s", "random"]);
    const seen = new Set<string>();
    // (2/3)^200 * 3: the chance that a fair random pick misses one is about 1e-35.
    for (let i = 0; i < 200 && seen.size < 3; i++) seen.add((await bodies(p.url + "/", 1))[0]!);
    expect([...seen].sort()).toEqual(["a", "b", "c"]);
  });

  async function stickyScenario(cookieName: string, extra: string[]) {
    const bs = ["a", "b", "c"].map((id) => named(id));
    const p = lb(bs.map(addr), ["-s", "sticky", ...extra]);

    const first = await fetch(p.url + "/");
    const firstBody = await first.text();
    expect(first.status).toBe(200);
    const cookie = cookieOf(first, cookieName);
    expect(cookie).not.toBeNull();
    const home = bs.find((b) => b.id === firstBody)!;
    // An opaque id: neither the backend's address nor its port shows in it.
    expect(cookie!).not.toContain("127.0.0.1");
    expect(cookie!).not.toContain(String(home.port));
    expect(cookie!.length).toBeGreaterThan(0);
    expect(first.headers.get("set-cookie")).toContain("Path=/");

    // With the cookie: always the same backend, and no new cookie.
    const withCookie = { headers: { cookie: `other=1; ${cookieName}=${cookie}` } };
    for (let i = 0; i < 6; i++) {
      const res = await fetch(p.url + "/", withCookie);
      expect(await res.text()).toBe(home.id);
      expect(cookieOf(res, cookieName)).toBeNull();
    }
    expect(traffic(home)).toBe(7);

    // Its backend dies: the client lands elsewhere (no error) and is told its new home.
    await home.stop();
    const moved = await fetch(p.url + "/", withCookie);
    const movedBody = await moved.text();
    expect(moved.status).toBe(200);
    expect(movedBody).not.toBe(home.id);
    const newCookie = cookieOf(moved, cookieName);
    expect(newCookie).not.toBeNull();
    expect(newCookie).not.toBe(cookie);
    const again = await bodies(p.url + "/", 5, { headers: { cookie: `${cookieName}=${newCookie}` } });
    expect(again).toEqual(Array(5).fill(movedBody));
  }

  test("sticky: ZZZ_BACKEND_ID pins the client; when its backend dies it moves and gets a new cookie", async () => {
    await stickyScenario("ZZZ_BACKEND_ID", []);
  });

  test("sticky with --cookie-name X uses that cookie name", async () => {
    await stickyScenario("X", ["--cookie-name", "X"]);
  });

  test("sticky named by the -c file (not by a flag) sets and honours the cookie too", async () => {
    const a = named("a");
    const b = named("b");
    const file = join(tmpDir(), "backends.json");
    writeFileSync(
      file,
      JSON.stringify({
        backends: [
          { host: "127.0.0.1", port: a.port },
          { host: "127.0.0.1", port: b.port },
        ],
        strategy: "sticky",
      }),
    );
    const p = lb([], ["-c", file]);
    const first = await fetch(p.url + "/");
    const cookie = cookieOf(first, "ZZZ_BACKEND_ID");
    expect(cookie).not.toBeNull();
    const pinned = await first.text();
    const again = await bodies(p.url + "/", 4, { headers: { cookie: `ZZZ_BACKEND_ID=${cookie}` } });
    expect(again).toEqual([pinned, pinned, pinned, pinned]);
  });

  /** Three backends where /hold waits for the gate; returns which one holds it and the others. */
  async function holdOne(strategy: string) {
    const g = gate();
    cleanups.push(g.open); // never leave a held request (and the backend's stop) hanging
    const hold = (id: string) => async (req: Request) => {
      if (new URL(req.url).pathname === "/hold") await g.opened;
      return new Response(id);
    };
    const bs = ["a", "b", "c"].map((id) => named(id, hold(id)));
    const p = lb(bs.map(addr), ["-s", strategy]);
    const held = fetch(p.url + "/hold");
    const busy = await waitFor("the /hold request at a backend", () =>
      bs.find((b) => b.seen.some((s) => s.url.endsWith("/hold"))),
    );
    await waitFor("in-flight count 1 on the busy backend", () =>
      p.fleet.backends.some((b) => b.inFlight === 1),
    );
    const idle = bs.filter((b) => b !== busy);
    return { p, g, held, busy, idle };
  }

  test("least_conn: with one backend busy, the next requests go to the idle ones, evenly", async () => {
    const { p, g, held, busy, idle } = await holdOne("least_conn");
    const got = await bodies(p.url + "/fast", 6);
    expect(got).not.toContain(busy.id);
    expect(tally(got)).toEqual({ [idle[0]!.id]: 3, [idle[1]!.id]: 3 });
    g.open();
    const res = await held;
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(busy.id);
  });

  test("p2c: with one backend busy, the next requests go to the idle ones", async () => {
    const { p, g, held, busy } = await holdOne("p2c");
    const got = await bodies(p.url + "/fast", 20);
    expect(got).not.toContain(busy.id);
    expect(busy.seen.filter((s) => s.url.endsWith("/fast"))).toHaveLength(0);
    g.open();
    const res = await held;
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(busy.id);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe("health", () => {
  test(
    "a backend killed under 300 GETs (3 clients): no client error; down after 3 failures, one warn line",
    async () => {
      const bs = ["a", "b", "c"].map((id) => named(id));
      const p = lb(bs.map(addr));
      const from = logLines.length;
      const load = startLoad(p.url + "/", 3, 300);
      await waitFor("60 requests before the kill", () => load.st.done >= 60);
      await bs[1]!.stop();
      const killedAt = traffic(bs[1]!);
      await load.finished;

      expect(load.st.failures).toEqual([]);
      expect(load.st.done).toBe(300);
      expect(p.fleet.isUp(p.fleet.backends[1]!)).toBe(false);
      expect(p.fleet.isUp(p.fleet.backends[0]!)).toBe(true);
      expect(p.fleet.isUp(p.fleet.backends[2]!)).toBe(true);
      expect(traffic(bs[1]!)).toBe(killedAt);
      const down = logSince(from).filter((l) => l.startsWith("warn(health):"));
      expect(down).toHaveLength(1);
      expect(down[0]).toStartWith(`warn(health): backend ${addr(bs[1]!)} down: 3 consecutive failures`);
      // The survivors took everything after the kill.
      expect(traffic(bs[0]!) + traffic(bs[2]!) + killedAt).toBe(300);
    },
    SLOW_TEST_MS,
  );

  test(
    "a killed backend restarted on the same port gets traffic again within 2 probe intervals",
    async () => {
      const PROBE_INTERVAL_MS = 200;
      const bs = ["a", "b", "c"].map((id) => named(id));
      const p = lb(
        bs.map(addr),
        ["--probe-interval-ms", String(PROBE_INTERVAL_MS), "--probe-timeout-ms", "100"],
        true,
      );
      const port = bs[1]!.port;
      const from = logLines.length;
      await bs[1]!.stop();
      // Probes (and any traffic) find it dead: 3 failures.
      await waitFor("the killed backend marked down", () => p.fleet.isUp(p.fleet.backends[1]!) === false);
      expect(logSince(from).some((l) => l.startsWith(`warn(health): backend ${addr(bs[1]!)} down: `))).toBe(
        true,
      );
      expect(tally(await bodies(p.url + "/", 6))).toEqual({ a: 3, c: 3 });

      const back = serveOn(port, "b2");
      const restartedAt = performance.now();
      // healthy_threshold 2 = two successful probes; each can start up to one probe tick (100 ms) late.
      const within = 2 * PROBE_INTERVAL_MS + 2 * 100 + 300;
      await waitFor(
        "client traffic on the restarted backend",
        async () => {
          await fetch(p.url + "/").then((r) => r.text());
          return traffic(back) > 0;
        },
        within,
      );
      const tookMs = performance.now() - restartedAt;
      expect(tookMs).toBeLessThan(within);
      expect(p.fleet.isUp(p.fleet.backends[1]!)).toBe(true);
      expect(logSince(from).some((l) => l.startsWith(`info(health): backend ${addr(bs[1]!)} up: `))).toBe(
        true,
      );
      expect(tally(await bodies(p.url + "/", 6))).toEqual({ a: 2, b2: 2, c: 2 });
    },
    SLOW_TEST_MS,
  );

  test("all backends down -> 503 with Retry-After, answered in under 100 ms", async () => {
    const bs = ["a", "b"].map((id) => named(id));
    const p = lb(bs.map(addr));
    for (const b of bs) await b.stop();
    // Each request fails on both; 3 of them take both down (bounded loop).
    for (let i = 0; i < 10 && p.fleet.healthyCount() > 0; i++) await (await fetch(p.url + "/")).text();
    expect(p.fleet.healthyCount()).toBe(0);
    const t0 = performance.now();
    const res = await fetch(p.url + "/");
    const text = await res.text();
    const ms = performance.now() - t0;
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe(String(RETRY_AFTER_S_NO_BACKEND));
    expect(text).toContain("503");
    expect(ms).toBeLessThan(100);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe("retries never repeat an unsafe request", () => {
  /** A backend that reads each whole request, counts it, then drops the connection without answering. */
  function resetting() {
    const b = rawHttpBackend((_req, conn) => conn.destroy());
    cleanups.push(b.stop);
    return b;
  }

  test("a POST whose backend resets after reading the body -> 502; it reached that backend once, no other", async () => {
    const bad = resetting();
    const good = named("good");
    const p = lb([`127.0.0.1:${bad.port}`, addr(good)]); // round robin: the first request goes to `bad`
    const body = "x".repeat(1000);
    const res = await fetch(p.url + "/submit", { method: "POST", body });
    await res.text();
    expect(res.status).toBe(502);
    expect(bad.requests).toHaveLength(1);
    expect(bad.requests[0]!.method).toBe("POST");
    expect(new TextDecoder().decode(bad.requests[0]!.body)).toBe(body);
    expect(good.seen).toHaveLength(0);
  });

  test("a GET in the same situation is answered 200 by the other backend; the resetting one saw it once", async () => {
    const bad = resetting();
    const good = named("good");
    const p = lb([`127.0.0.1:${bad.port}`, addr(good)]);
    const res = await fetch(p.url + "/read");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("good");
    expect(bad.requests).toHaveLength(1);
    expect(bad.requests[0]!.target).toBe("/read");
    expect(good.seen).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe("backends.json hot reload", () => {
  test(
    "20 rewrites under 2,000+ requests: zero failures, new backends get traffic within 1 s, bad JSON changes nothing",
    async () => {
      const CLIENTS = 4;
      const bs = ["a", "b", "c", "d"].map((id) => named(id));
      const file = join(tmpDir(), "backends.json");
      const textFor = (set: number[]) => configText(set.map((i) => ({ port: bs[i]!.port })));
      writeFileSync(file, textFor([0, 1]));
      const p = lb([], ["-c", file]);
      expect(keysOf(p)).toEqual([addr(bs[0]!), addr(bs[1]!)]);
      const load = startLoad(p.url + "/", CLIENTS, 100_000);

      // 20 changes: adds, removes, a reorder, and one invalid file in the middle.
      const steps: (number[] | "invalid")[] = [
        [0, 1, 2],
        [1, 2],
        [1, 2, 3],
        [3],
        [0, 3],
        "invalid",
        [0, 2, 3],
        [2],
        [0, 1, 2, 3],
        [1, 3],
        [0, 1],
        [0, 2],
        [2, 3],
        [1, 2, 3],
        [0],
        [0, 1, 2, 3],
        [3, 2, 1, 0],
        [1],
        [0, 1, 3],
        [0, 2],
      ];
      expect(steps).toHaveLength(20);
      let current = [0, 1];
      for (const [k, step] of steps.entries()) {
        const inPlace = k % 2 === 0;
        if (step === "invalid") {
          const from = logLines.length;
          const before = keysOf(p);
          writeConfig(file, '{"backends": [{"host": "127.0.0.1", "port": 1', inPlace);
          const line = await waitFor("the err(config) line", () =>
            logSince(from).find((l) => l.startsWith("err(config):")),
          );
          expect(line).toContain(file);
          expect(line).toContain("invalid JSON");
          expect(line).toContain("keeping the last good config");
          expect(keysOf(p)).toEqual(before);
          continue;
        }
        const t0 = performance.now();
        const added = step.filter((i) => !current.includes(i));
        writeConfig(file, textFor(step), inPlace);
        const want = step.map((i) => addr(bs[i]!));
        await waitFor(
          `step ${k}: the new list ${want.join(",")}`,
          () => keysOf(p).join() === want.join(),
          1000,
        );
        const applied = bs.map(traffic);
        const left = Math.max(1, 1000 - (performance.now() - t0));
        await waitFor(
          `step ${k}: traffic on added ${added.map((i) => bs[i]!.id).join(",")}`,
          () => added.every((i) => traffic(bs[i]!) > applied[i]!),
          left,
        );
        expect(performance.now() - t0).toBeLessThan(1000);
        // Removed backends: at most the requests already on their way when the list changed.
        for (const i of current.filter((j) => !step.includes(j))) {
          expect(traffic(bs[i]!) - applied[i]!).toBeLessThanOrEqual(CLIENTS);
        }
        current = step;
      }
      await waitFor("2,000 requests through the reloads", () => load.st.done >= 2000, 20_000);
      await load.stop();
      expect(load.st.failures).toEqual([]);
      expect(load.st.done).toBeGreaterThanOrEqual(2000);

      // Only the final list gets traffic now.
      const settled = bs.map(traffic);
      await bodies(p.url + "/", 20);
      const grew = bs.map((b, i) => traffic(b) - settled[i]!);
      expect(grew).toEqual([10, 0, 10, 0]);
    },
    SLOW_TEST_MS,
  );

  test(
    "a backend removed while a slow request is on it: that request still completes from it",
    async () => {
      const g = gate();
      cleanups.push(g.open);
      const slow = (id: string) => async (req: Request) => {
        if (new URL(req.url).pathname === "/slow") await g.opened;
        return new Response(`${id} done`);
      };
      const bs = ["a", "b"].map((id) => named(id, slow(id)));
      const file = join(tmpDir(), "backends.json");
      writeFileSync(file, configText(bs));
      const p = lb([], ["-c", file]);
      const pending = fetch(p.url + "/slow");
      const busy = await waitFor("the slow request at a backend", () =>
        bs.find((b) => b.seen.some((s) => s.url.endsWith("/slow"))),
      );
      const other = bs.find((b) => b !== busy)!;
      const from = logLines.length;
      writeConfig(file, configText([other]), true);
      await waitFor("the reload without the busy backend", () => keysOf(p).join() === addr(other));
      expect(logSince(from)).toContain(
        `info(config): reloaded ${file}: 1 backend (-1 removed: ${addr(busy)})`,
      );
      expect(tally(await bodies(p.url + "/", 4))).toEqual({ [`${other.id} done`]: 4 });
      g.open();
      const res = await pending;
      expect(res.status).toBe(200);
      expect(await res.text()).toBe(`${busy.id} done`);
    },
    SLOW_TEST_MS,
  );

  test("a backend added by a reload is probed too: one failing its health path is taken out", async () => {
    const good = named("good");
    // Answers traffic, but its health path says it is not ready.
    const sick = named("sick", (req) =>
      new URL(req.url).pathname === "/healthz" ? new Response("no", { status: 503 }) : new Response("sick"),
    );
    const dir = tmpDir();
    const file = join(dir, "backends.json");
    writeFileSync(file, configText([good]));
    const p = lb(
      [],
      [
        "-c",
        file,
        "--health-path",
        "/healthz",
        "--probe-interval-ms",
        "100",
        "--probe-timeout-ms",
        "50",
        "--unhealthy-threshold",
        "2",
      ],
      true,
    );
    const from = logLines.length;
    writeConfig(file, configText([good, sick]), false);
    await waitFor("the reload that adds the sick backend", () => keysOf(p).length === 2);
    await waitFor("probes to mark the new backend down", () =>
      logSince(from).some((l) => l.startsWith(`warn(health): backend ${addr(sick)} down`)),
    );
    expect(p.fleet.healthyCount()).toBe(1);
    expect(tally(await bodies(p.url + "/", 6))).toEqual({ good: 6 });
  });
});

describe("reload while a request is between pick and send", () => {
  test("a slow-body POST picked before a reload that removes its backend still finishes there", async () => {
    const dir = tmpDir();
    const file = join(dir, "backends.json");
    const bs = ["a", "b", "c"].map((id) =>
      named(id, async (req) => new Response(`${id}:${(await req.arrayBuffer()).byteLength}`)),
    );
    writeFileSync(file, configText(bs));
    const p = lb([], ["-c", file]);
    // Round robin: a, b, then the slow POST goes to c.
    expect(await bodies(p.url + "/", 2)).toEqual(["a:0", "b:0"]);
    let got = "";
    const client = await Bun.connect({
      hostname: "127.0.0.1",
      port: p.port,
      socket: {
        data(_s, d) {
          got += Buffer.from(d).toString("latin1");
        },
      },
    });
    cleanups.push(() => client.terminate());
    client.write("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345");
    await waitFor("the proxy to have read the head", () => p.server.pendingRequests > 0);
    // c and b leave; another request makes the worker adopt the new table before the POST goes out.
    writeConfig(file, configText([bs[0]!]), false);
    p.reload();
    await waitFor(
      "the reload",
      async () => (await (await fetch(p.url + "/")).text()) === "a:0" && keysOf(p).length === 1,
    );
    client.write("67890");
    await waitFor("the POST's answer", () => got.includes("\r\n\r\n") && got.endsWith("c:10"));
    expect(got).toStartWith("HTTP/1.1 200");
  });
});

// ---------------------------------------------------------------------------------------------------------

describe("/metrics", () => {
  test("counts match what clients got: requests, classes, per backend; failures and retries after a kill", async () => {
    const ok = named("ok");
    const bad = named("bad", () => new Response("oops", { status: 500 }));
    const p = lb([addr(ok), addr(bad)]);
    const N = 10;
    const statuses: number[] = [];
    for (let i = 0; i < N; i++) {
      const res = await fetch(p.url + "/x");
      await res.text();
      statuses.push(res.status);
    }
    expect(tally(statuses.map(String))).toEqual({ 200: 5, 500: 5 });

    const res = await fetch(p.url + "/metrics");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    let m = await res.text();
    expect(series(m, "lb_requests_total")).toBe(N);
    expect(series(m, 'lb_responses_total{class="2xx"}')).toBe(5);
    expect(series(m, 'lb_responses_total{class="5xx"}')).toBe(5);
    expect(sumOf(m, "lb_backend_responses_total")).toBe(N);
    expect(sumOf(m, "lb_backend_responses_total", `backend="${addr(ok)}"`, 'class="2xx"')).toBe(5);
    expect(sumOf(m, "lb_backend_responses_total", `backend="${addr(bad)}"`, 'class="5xx"')).toBe(5);
    expect(sumOf(m, "lb_backend_failures_total")).toBe(0);
    // The backends saw only the N client requests: /metrics is answered by the proxy.
    expect(ok.seen.length + bad.seen.length).toBe(N);

    // Kill one: its transport failures and the retries they caused show up; clients see no error.
    await bad.stop();
    const M = 8;
    expect(tally(await bodies(p.url + "/y", M))).toEqual({ ok: M });
    m = await (await fetch(p.url + "/metrics")).text();
    expect(series(m, "lb_requests_total")).toBe(N + M);
    expect(series(m, 'lb_responses_total{class="2xx"}')).toBe(5 + M);
    expect(series(m, 'lb_responses_total{class="5xx"}')).toBe(5);
    // unhealthy_threshold 3: three refused connects (each retried on `ok`) take it down.
    const badLabel = `backend="${addr(bad)}"`;
    expect(sumOf(m, "lb_backend_failures_total", badLabel, 'reason="connect_refused"')).toBe(3);
    expect(sumOf(m, "lb_backend_retries_total", badLabel, 'reason="before_send"')).toBe(3);
    expect(sumOf(m, "lb_backend_failures_total", `backend="${addr(ok)}"`)).toBe(0);
    expect(series(m, `lb_backend_up{${badLabel}}`)).toBe(0);
    expect(series(m, "lb_backends_unhealthy")).toBe(1);
    expect(sumOf(m, "lb_backend_responses_total", `backend="${addr(ok)}"`)).toBe(5 + M);
    expect(sumOf(m, "lb_backend_in_flight")).toBe(0);
  });

  test("--metrics-path /_lb/m moves the endpoint; /metrics then goes to the backend", async () => {
    const be = named("backend");
    const p = lb([addr(be)], ["--metrics-path", "/_lb/m"]);
    const res = await fetch(p.url + "/_lb/m");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(series(await res.text(), "lb_requests_total")).toBe(0);
    expect(be.seen).toHaveLength(0);
    const proxied = await fetch(p.url + "/metrics");
    expect(await proxied.text()).toBe("backend");
    expect(be.seen.map((s) => new URL(s.url).pathname)).toEqual(["/metrics"]);
  });

  test("--metrics-path= turns the endpoint off: /metrics goes to the backend", async () => {
    const be = named("backend");
    const p = lb([addr(be)], ["--metrics-path="]);
    const res = await fetch(p.url + "/metrics");
    expect(await res.text()).toBe("backend");
    expect(be.seen.map((s) => new URL(s.url).pathname)).toEqual(["/metrics"]);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe("the real entry point", () => {
  function spawnMain(args: string[]) {
    const m = spawnChild(args);
    cleanups.push(() => m.proc.kill("SIGKILL"));
    return m;
  }

  test(
    "-b and -c together -> exit 2 with one err(cli) line",
    async () => {
      const file = join(tmpDir(), "backends.json");
      writeFileSync(file, configText([{ port: 9 }]));
      const { proc, stderr, stderrDone } = spawnMain(["-b", "127.0.0.1:9", "-c", file]);
      expect(await proc.exited).toBe(2);
      await stderrDone;
      const lines = stderr().trimEnd().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toStartWith("err(cli): ");
      expect(lines[0]).toContain("-b");
      expect(lines[0]).toContain("-c FILE");
      expect(lines[0]).toContain("not both");
      expect(await new Response(proc.stdout).text()).toBe("");
    },
    SLOW_TEST_MS,
  );

  test(
    "SIGHUP re-reads the -c file (log lines), and the proxy keeps serving",
    async () => {
      const be = named("backend");
      const file = join(tmpDir(), "backends.json");
      writeFileSync(file, configText([be]));
      const port = closedPort();
      const { proc, stderr, stderrDone } = spawnMain([
        "--mode",
        "sp",
        "-h",
        "127.0.0.1",
        "-p",
        String(port),
        "-c",
        file,
      ]);
      await waitFor("the listening line", () => stderr().includes("info(main): listening"), 10_000);
      // Sent the moment the proxy says it listens: its handlers must already be in place.
      proc.kill("SIGHUP");
      await waitFor("the reload line", () => stderr().includes(`info(config): reloaded ${file}: 1 backend`));
      expect(stderr()).toContain(`info(main): SIGHUP: reloading ${file}`);
      const res = await fetch(`http://127.0.0.1:${port}/`);
      expect(await res.text()).toBe("backend");
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
      await stderrDone;
      expect(stderr()).not.toContain("err(");
    },
    SLOW_TEST_MS,
  );
});
