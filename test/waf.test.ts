// The WAF end to end (issue 5 "Done when"): the real entry point with --waf-config, a real counting
// backend, and raw HTTP/1.1 clients bound to distinct loopback source addresses (127.0.0.2, .3, ...)
// so each is a distinct client IP. Every request is on a fresh connection (Connection: close), which
// in mp mode lets the kernel spread them over the workers (SO_REUSEPORT hashes the 4-tuple).

import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WAF_BODY_BUFFER_BYTES_MAX } from "../src/core/limits.ts";
import { PROBE_USER_AGENT } from "../src/upstream/probe.ts";
import { closedPort, type MainProcess, parseRawResponse, spawnMain, waitFor } from "./helpers.ts";

// ---------------------------------------------------------------------------------------------------------
// Bounds

const HOST = "127.0.0.1";
/** A started instance logs its listening line within this (bun start + 2 workers on 2 busy cores). */
const START_DEADLINE_MS = 15_000;
/** One request through the proxy; anything slower is a failure, not a wait. */
const REQUEST_TIMEOUT_MS = 10_000;
/** The probe path; the backend does not count it. Probes run once a minute, so mostly only at start. */
const HEALTH_PATH = "/health";
const PROBE_INTERVAL_MS = "60000";
/** Shutdown bound passed to every instance, so teardown never waits long on a request a test left open. */
const DRAIN_TIMEOUT_MS = "1000";
/** After SIGTERM, the instance must be gone within this, else it is killed. */
const EXIT_DEADLINE_MS = 5_000;
/** The brief's promise for a hot reload to take effect (debounce 100 ms + a 1 s poll as the safety net). */
const RELOAD_PROMISE_MS = 1_500;
/** A WAF refusal that needs no backend and no body: it must come back at once. */
const FAST_REFUSAL_MS = 250;
/** 1 MB of "[": the scanner stops after max_json_depth + 1 bytes, so the answer must not wait for the rest. */
const DEEP_JSON_BYTES = 1024 * 1024;
const DEEP_JSON_ANSWER_MS = 1_000;
/** The stats line period is 10 s; it must show within one period plus scheduling slack. */
const STATS_LINE_DEADLINE_MS = 12_000;
/** Tests that run a proxy for several windows or a stats period get more than the preload's default. */
const LONG_TEST_MS = 60_000;
/** Concurrent requests when a test sends hundreds (bounded so 2 cores are not swamped). */
const PARALLEL_MAX = 16;

type Mode = "sp" | "mp";
const MODES: readonly Mode[] = ["sp", "mp"];

// ---------------------------------------------------------------------------------------------------------
// A counting backend, optionally holding requests until the test releases them

interface Seen {
  readonly path: string;
  /** The last X-Forwarded-For entry: the proxy appends the peer address of the client. */
  readonly peer: string;
  /** The whole X-Forwarded-For value the backend received. */
  readonly xff: string;
  readonly body: string;
}

function countingBackend() {
  const seen: Seen[] = [];
  let holding = 0;
  let release: () => void = () => {};
  let gate = new Promise<void>((r) => {
    release = r;
  });
  const server = Bun.serve({
    hostname: HOST,
    port: 0,
    idleTimeout: 30,
    async fetch(req) {
      const url = new URL(req.url);
      if (req.headers.get("user-agent") === PROBE_USER_AGENT || url.pathname === HEALTH_PATH)
        return new Response("ok");
      const xff = req.headers.get("x-forwarded-for") ?? "";
      const body = await req.text();
      seen.push({ path: url.pathname, peer: xff.split(",").at(-1)!.trim(), xff, body });
      if (url.pathname.startsWith("/hold")) {
        holding++;
        await gate;
        holding--;
      }
      return new Response(`ok ${url.pathname}`);
    },
  });
  return {
    port: server.port!,
    seen,
    /** Requests from client `peer` (optionally only those whose path starts with `prefix`). */
    count: (peer?: string, prefix = "/") =>
      seen.filter((s) => (peer === undefined || s.peer === peer) && s.path.startsWith(prefix)).length,
    held: () => holding,
    /** Lets every held request answer; later /hold requests are held again. */
    releaseAll() {
      release();
      gate = new Promise<void>((r) => {
        release = r;
      });
    },
    stop() {
      release();
      server.stop(true);
    },
  };
}
type Backend = ReturnType<typeof countingBackend>;

// ---------------------------------------------------------------------------------------------------------
// Raw HTTP/1.1 clients bound to a chosen loopback source address

interface Reply {
  status: number;
  headers: Map<string, string>;
  body: string;
  /** From writing the request to a complete response. */
  ms: number;
}

interface Req {
  /** Local (source) address: the client IP the proxy sees. */
  from: string;
  target: string;
  method?: string;
  headers?: Record<string, string>;
  /** Sent with Content-Length unless `chunks` is given. */
  body?: string | Uint8Array;
  /** Sent as a chunked body, one chunk each. */
  chunks?: string[];
  /** Content-Length to declare without sending a body (the refusal must not wait for one). */
  declareLength?: number;
}

function requestBytes(r: Req): Buffer {
  let head = `${r.method ?? "GET"} ${r.target} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n`;
  for (const [k, v] of Object.entries(r.headers ?? {})) head += `${k}: ${v}\r\n`;
  let body: Buffer = Buffer.alloc(0);
  if (r.chunks !== undefined) {
    head += "Transfer-Encoding: chunked\r\n";
    body = Buffer.from(
      r.chunks.map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`).join("") + "0\r\n\r\n",
      "latin1",
    );
  } else if (r.body !== undefined) {
    body = typeof r.body === "string" ? Buffer.from(r.body, "latin1") : Buffer.from(r.body);
    head += `Content-Length: ${body.length}\r\n`;
  } else if (r.declareLength !== undefined) {
    head += `Content-Length: ${r.declareLength}\r\n`;
  }
  return Buffer.concat([Buffer.from(`${head}\r\n`, "latin1"), body]);
}

/**
 * Sends one request on a fresh connection from `r.from` and resolves with the first complete response
 * (the proxy may close or reset right after a refusal; what was answered is what counts). Rejects when
 * no response arrives within REQUEST_TIMEOUT_MS or the connection ends without one.
 */
function send(port: number, r: Req): Promise<Reply> {
  const bytes = requestBytes(r);
  return new Promise<Reply>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let settled = false;
    let started = 0;
    const sock = net.connect({ host: HOST, port, localAddress: r.from });
    const timer = setTimeout(() => done(true), REQUEST_TIMEOUT_MS);
    const done = (ended: boolean, err?: Error) => {
      if (settled) return;
      const buf = Buffer.concat(chunks);
      const res = parseRawResponse(buf, r.method === "HEAD", ended);
      if (res === null) {
        if (!ended) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        reject(
          new Error(
            `no response to ${r.method ?? "GET"} ${r.target.slice(0, 80)} from ${r.from}` +
              ` (${err?.message ?? "closed"}; got ${JSON.stringify(buf.toString("latin1").slice(0, 200))})`,
          ),
        );
        return;
      }
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      const headers = new Map<string, string>();
      for (const line of res.lines) {
        const colon = line.indexOf(":");
        headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
      }
      resolve({
        status: res.status,
        headers,
        body: Buffer.from(res.body).toString("latin1"),
        ms: performance.now() - started,
      });
    };
    sock.on("connect", () => {
      started = performance.now();
      sock.write(bytes);
    });
    sock.on("data", (d: Buffer) => {
      chunks.push(d);
      done(false);
    });
    sock.on("end", () => done(true));
    sock.on("close", () => done(true));
    sock.on("error", (e) => done(true, e));
  });
}

/** Runs `n` requests made by `make(i)`, at most PARALLEL_MAX at a time; replies in order. */
async function sendMany(port: number, n: number, make: (i: number) => Req): Promise<Reply[]> {
  const out: Reply[] = new Array(n);
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < n; i = next++) out[i] = await send(port, make(i));
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_MAX, n) }, lane));
  return out;
}

/** The JSON body of a WAF refusal. */
function wafBody(r: Reply): { error: string; rule?: string; retry_after_s?: number } {
  expect(r.headers.get("content-type")).toBe("application/json");
  return JSON.parse(r.body);
}

/** A 429 from the WAF: Retry-After a positive integer equal to retry_after_s, the body names reason and rule. */
function expectTooMany(r: Reply, reason: string, rule?: string): number {
  expect(r.status).toBe(429);
  const retry = r.headers.get("retry-after") ?? "";
  expect(retry).toMatch(/^[1-9]\d*$/);
  const body = wafBody(r);
  expect(body.error).toBe(reason);
  if (rule === undefined) expect(body.rule).toBeUndefined();
  else expect(body.rule).toBe(rule);
  expect(body.retry_after_s).toBe(Number(retry));
  return Number(retry);
}

const statuses = (rs: readonly Reply[]) => rs.map((r) => r.status);

// ---------------------------------------------------------------------------------------------------------
// Instances of the real entry point

interface Lb {
  readonly port: number;
  readonly file: string;
  readonly m: MainProcess;
  stderr(): string;
  /** Rewrites the WAF file in place (as an editor saving it would). */
  write(waf: unknown): void;
  /** One sample of /metrics: the value of `name{labels}` (0 when the series is absent). */
  metric(name: string, labels: string): Promise<number>;
  metricsText(): Promise<string>;
}

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function wafText(waf: unknown): string {
  return typeof waf === "string" ? waf : JSON.stringify(waf, null, 2);
}

/** Starts `src/main.ts` in front of `be` with `waf` as its --waf-config file; stopped after the test. */
async function startLb(waf: unknown, be: Backend, mode: Mode, extra: string[] = []): Promise<Lb> {
  const dir = mkdtempSync(join(tmpdir(), "zzz-waf-test-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "waf.json");
  writeFileSync(file, wafText(waf));
  const modeArgs = mode === "sp" ? ["--mode", "sp"] : ["--mode", "mp", "-w", "2"];
  // A port found free can be taken before we bind it: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = closedPort();
    const m = spawnMain([
      ...modeArgs,
      "-h",
      HOST,
      "-p",
      String(port),
      "-b",
      `${HOST}:${be.port}`,
      "--health-path",
      HEALTH_PATH,
      "--probe-interval-ms",
      PROBE_INTERVAL_MS,
      "--drain-timeout-ms",
      DRAIN_TIMEOUT_MS,
      "--waf-config",
      file,
      ...extra,
    ]);
    const stop = async () => {
      if (m.proc.exitCode !== null || m.proc.signalCode !== null) return;
      m.proc.kill("SIGTERM");
      const exited = await Promise.race([
        m.proc.exited.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), EXIT_DEADLINE_MS)),
      ]);
      if (!exited) m.proc.kill("SIGKILL");
    };
    cleanups.push(stop);
    const state = await waitFor(
      "the listening line (or an exit)",
      () =>
        m.stderr().includes("info(main): listening on") ? "up" : m.proc.exitCode !== null ? "exit" : null,
      START_DEADLINE_MS,
    );
    if (state === "exit") {
      await m.stderrDone;
      if (m.stderr().includes("in use")) continue;
      throw new Error(`the proxy did not start:\n${m.stderr()}`);
    }
    // A fresh connection per scrape (fetch would reuse one, and so one worker).
    const metricsText = async () => {
      const r = await send(port, { from: HOST, target: "/metrics" });
      expect(r.status).toBe(200);
      return r.body;
    };
    return {
      port,
      file,
      m,
      stderr: m.stderr,
      write: (w) => writeFileSync(file, wafText(w)),
      metricsText,
      async metric(name, labels) {
        return metricValue(await metricsText(), name, labels);
      },
    };
  }
  throw new Error("no free port after 3 attempts");
}

function metricValue(text: string, name: string, labels: string): number {
  const prefix = `${name}{${labels}} `;
  const line = text.split("\n").find((l) => l.startsWith(prefix));
  return line === undefined ? 0 : Number(line.slice(prefix.length));
}

/**
 * Waits for `n` stderr lines containing every needle, then asserts there are exactly `n`. A log line
 * can arrive after the response it is about (stderr is a pipe read as it comes).
 */
async function expectLog(lb: Lb, n: number, ...needles: string[]): Promise<void> {
  await waitFor(
    `${n} log lines with ${JSON.stringify(needles)}`,
    () => logLinesWith(lb, ...needles).length >= n,
  );
  expect(logLinesWith(lb, ...needles)).toHaveLength(n);
}

/** Lines of the instance's stderr that contain every needle. */
function logLinesWith(lb: Lb, ...needles: string[]): string[] {
  return lb
    .stderr()
    .split("\n")
    .filter((l) => needles.every((n) => l.includes(n)));
}

/**
 * Sends requests (fresh connections from `from`, path /warmup) until both workers of an mp instance have
 * answered one, so both have adopted the WAF config; returns how many it sent (each is a WAF decision).
 */
async function bothWorkersServe(lb: Lb, from: string): Promise<number> {
  let sent = 0;
  await waitFor(
    "both workers to answer a request",
    async () => {
      sent++;
      expect((await send(lb.port, { from, target: "/warmup" })).status).toBe(200);
      const text = await lb.metricsText();
      return (
        metricValue(text, "lb_worker_requests_total", 'worker="1"') > 0 &&
        metricValue(text, "lb_worker_requests_total", 'worker="2"') > 0
      );
    },
    REQUEST_TIMEOUT_MS,
  );
  return sent;
}

// ---------------------------------------------------------------------------------------------------------
// 1-4. Rate limits

describe("rate limits", () => {
  for (const mode of MODES) {
    test(`5 per 60 s on /api/*: the 6th from one client is 429 with Retry-After; others unaffected (${mode})`, async () => {
      const be = countingBackend();
      cleanups.push(be.stop);
      const lb = await startLb(
        {
          rate_limits: [{ name: "api-5", path: "/api/*", limit: { requests: 5, period_sec: 60 }, burst: 0 }],
        },
        be,
        mode,
      );
      // In mp, fresh connections are spread over both workers: the limit must hold for the fleet.
      if (mode === "mp") await bothWorkersServe(lb, "127.0.0.9");
      const SENT = 12;
      const replies: Reply[] = [];
      for (let i = 0; i < SENT; i++)
        replies.push(await send(lb.port, { from: "127.0.0.2", target: `/api/${i}` }));
      expect(statuses(replies)).toEqual([...Array(5).fill(200), ...Array(SENT - 5).fill(429)]);
      for (const r of replies.slice(5)) {
        const retry = expectTooMany(r, "rate_limit", "api-5");
        // 5 per 60 s refills one every 12 s.
        expect(retry).toBeLessThanOrEqual(12);
      }
      expect(be.count("127.0.0.2", "/api/")).toBe(5);
      // Another client has its own bucket.
      const other = await sendMany(lb.port, 5, (i) => ({ from: "127.0.0.3", target: `/api/o${i}` }));
      expect(statuses(other)).toEqual(Array(5).fill(200));
      expect(be.count("127.0.0.3", "/api/")).toBe(5);
      // Paths outside the rule are not limited.
      expect((await send(lb.port, { from: "127.0.0.2", target: "/free" })).status).toBe(200);
      await waitFor(
        "the blocked log lines",
        () => logLinesWith(lb, "warn(waf): blocked 429 rate_limit").length >= 7,
      );
      await expectLog(lb, 1, "warn(waf): blocked 429 rate_limit rule=api-5 client=127.0.0.2 GET /api/5");
      expect(logLinesWith(lb, "warn(waf): blocked", "client=127.0.0.3")).toEqual([]);
    });
  }

  test("refill: 2 per 4 s; after Retry-After exactly one more passes", async () => {
    const be = countingBackend();
    cleanups.push(be.stop);
    const lb = await startLb(
      { rate_limits: [{ name: "slow", path: "/api/*", limit: { requests: 2, period_sec: 4 }, burst: 0 }] },
      be,
      "sp",
    );
    const from = "127.0.0.2";
    expect((await send(lb.port, { from, target: "/api/1" })).status).toBe(200);
    expect((await send(lb.port, { from, target: "/api/2" })).status).toBe(200);
    const refused = await send(lb.port, { from, target: "/api/3" });
    const retry = expectTooMany(refused, "rate_limit", "slow");
    // One token every 2 s: the next is back in just under 2 s.
    expect(retry).toBe(2);
    // Waiting for time itself (the thing under test), not for a condition: Retry-After and a little.
    await Bun.sleep(retry * 1000 + 200);
    const after = [
      await send(lb.port, { from, target: "/api/4" }),
      await send(lb.port, { from, target: "/api/5" }),
    ];
    expect(statuses(after)).toEqual([200, 429]);
    expect(be.count(from, "/api/")).toBe(3);
  });

  test("client identity: X-Forwarded-For counts only from trusted proxies; garbage entries are skipped", async () => {
    const be = countingBackend();
    cleanups.push(be.stop);
    const rule = { name: "api-3", path: "/api/*", limit: { requests: 3, period_sec: 60 } };
    // Untrusted: no trusted_proxies at all. A client cannot escape by inventing X-Forwarded-For values.
    const open = await startLb({ rate_limits: [rule] }, be, "sp");
    const spoofed = [];
    for (let i = 0; i < 5; i++) {
      spoofed.push(
        await send(open.port, {
          from: "127.0.0.2",
          target: "/api/x",
          headers: { "X-Forwarded-For": `9.9.9.${i}` },
        }),
      );
    }
    expect(statuses(spoofed)).toEqual([200, 200, 200, 429, 429]);
    await expectLog(open, 2, "warn(waf): blocked 429 rate_limit", "client=127.0.0.2");
    expect(logLinesWith(open, "client=9.9.9.")).toEqual([]);

    // Trusted proxies that do not include the sender: the same.
    const other = await startLb({ rate_limits: [rule], trusted_proxies: ["127.0.0.4/32"] }, be, "sp");
    const viaUntrusted = [];
    for (let i = 0; i < 4; i++) {
      viaUntrusted.push(
        await send(other.port, {
          from: "127.0.0.2",
          target: "/api/x",
          headers: { "X-Forwarded-For": `8.8.8.${i}` },
        }),
      );
    }
    expect(statuses(viaUntrusted)).toEqual([200, 200, 200, 429]);

    // A trusted proxy: each X-Forwarded-For client has its own bucket.
    const viaProxy = (xff: string) =>
      send(other.port, { from: "127.0.0.4", target: "/api/x", headers: { "X-Forwarded-For": xff } });
    const one = [];
    for (let i = 0; i < 4; i++) one.push(await viaProxy("1.1.1.1"));
    expect(statuses(one)).toEqual([200, 200, 200, 429]);
    const two = [];
    for (let i = 0; i < 3; i++) two.push(await viaProxy("2.2.2.2"));
    expect(statuses(two)).toEqual([200, 200, 200]);
    // Garbage after the real client is skipped (walking from the right): still 1.1.1.1, still over.
    expect((await viaProxy("1.1.1.1, not-an-ip")).status).toBe(429);
    expect((await viaProxy("1.1.1.1,  999.1.1.1")).status).toBe(429);
    // Only garbage: the peer (the proxy itself) is the client, with a bucket of its own.
    expect((await viaProxy("garbage")).status).toBe(200);
    await expectLog(other, 3, "warn(waf): blocked 429 rate_limit rule=api-3 client=1.1.1.1");
    expect(logLinesWith(other, "warn(waf): blocked", "client=2.2.2.2")).toEqual([]);
    expect(be.count("127.0.0.4", "/api/")).toBe(3 + 3 + 1);
  });

  test("path spellings of /api/x count against /api/*", async () => {
    const be = countingBackend();
    cleanups.push(be.stop);
    const lb = await startLb(
      { rate_limits: [{ name: "api-1", path: "/api/*", limit: { requests: 1, period_sec: 60 } }] },
      be,
      "mp",
    );
    const tricks = ["/%61pi/x", "//api//x", "/api/./x", "/api/%2E%2E/api/x", "/API/../api/x", "/api/x/../y"];
    for (const [i, trick] of tricks.entries()) {
      const from = `127.0.0.${10 + i}`;
      // The trick spends the client's one token...
      const first = await send(lb.port, { from, target: trick });
      expect({ trick, status: first.status }).toEqual({ trick, status: 200 });
      // ...so the plain spelling is over the limit, and the trick again too.
      const plain = await send(lb.port, { from, target: "/api/x" });
      expect({ trick, status: plain.status }).toEqual({ trick, status: 429 });
      expectTooMany(plain, "rate_limit", "api-1");
      const again = await send(lb.port, { from, target: trick });
      expect({ trick, status: again.status }).toEqual({ trick, status: 429 });
    }
    // A path outside the rule spends nothing.
    expect((await send(lb.port, { from: "127.0.0.30", target: "/apix/%2E%2E/other" })).status).toBe(200);
    expect((await send(lb.port, { from: "127.0.0.30", target: "/api/x" })).status).toBe(200);
    expect(be.count(undefined, "/")).toBe(tricks.length + 2);
  });
});

// ---------------------------------------------------------------------------------------------------------
// 5. Request limits

describe("request limits", () => {
  test("a JSON body under a depth limit is buffered at most 16 MiB: a bigger one is 413, never forwarded", async () => {
    const be = countingBackend();
    cleanups.push(be.stop);
    const lb = await startLb({ request_limits: { max_json_depth: 5 } }, be, "sp");
    const json = { "Content-Type": "application/json" };
    const big = `{"a":"${"x".repeat(WAF_BODY_BUFFER_BYTES_MAX)}"}`;
    const r = await send(lb.port, {
      from: "127.0.0.2",
      method: "POST",
      target: "/data",
      headers: json,
      body: big,
    });
    expect(r.status).toBe(413);
    expect(wafBody(r).error).toBe("body_too_large");
    const small = `{"a":"${"x".repeat(1000)}"}`;
    expect(
      (
        await send(lb.port, {
          from: "127.0.0.2",
          method: "POST",
          target: "/data",
          headers: json,
          body: small,
        })
      ).status,
    ).toBe(200);
    expect(be.seen.map((x) => x.body)).toEqual([small]);
  });

  test("URI, declared and chunked body size, endpoint override, JSON depth: refused before the backend", async () => {
    const be = countingBackend();
    cleanups.push(be.stop);
    const lb = await startLb(
      {
        request_limits: {
          max_uri_length: 100,
          max_body_size: DEEP_JSON_BYTES * 2,
          max_json_depth: 5,
          endpoints: [
            { path: "/small/*", max_body_size: 1000 },
            { path: "/small/upload", max_body_size: 100_000 },
          ],
        },
      },
      be,
      "mp",
    );
    const port = lb.port;
    const from = "127.0.0.2";
    const json = { "Content-Type": "application/json" };

    const uri = await send(port, { from, target: `/q?${"a".repeat(200)}` });
    expect(uri.status).toBe(414);
    expect(wafBody(uri).error).toBe("uri_too_long");
    expect(uri.headers.get("connection")).toBe("close");

    // Declared too large: refused without waiting for a single body byte.
    const declared = await send(port, { from, method: "POST", target: "/small/x", declareLength: 5000 });
    expect(declared.status).toBe(413);
    expect(wafBody(declared).error).toBe("body_too_large");
    expect(declared.headers.get("connection")).toBe("close");
    const declaredGlobal = await send(port, {
      from,
      method: "POST",
      target: "/other",
      declareLength: DEEP_JSON_BYTES * 2 + 1,
    });
    expect(declaredGlobal.status).toBe(413);

    const chunked = await send(port, {
      from,
      method: "POST",
      target: "/small/x",
      chunks: Array(6).fill("x".repeat(400)),
    });
    expect(chunked.status).toBe(413);
    expect(wafBody(chunked).error).toBe("body_too_large");

    const deepJson = "[".repeat(6) + "]".repeat(6);
    const deep = await send(port, { from, method: "POST", target: "/data", headers: json, body: deepJson });
    expect(deep.status).toBe(400);
    expect(wafBody(deep).error).toBe("json_too_deep");
    expect(deep.headers.get("connection")).toBe("close");
    const deepChunked = await send(port, {
      from,
      method: "POST",
      target: "/data",
      headers: json,
      chunks: ["[[[", "[[[", "]]]]]]"],
    });
    expect(deepChunked.status).toBe(400);

    const flood = await send(port, {
      from,
      method: "POST",
      target: "/data",
      headers: json,
      body: Buffer.alloc(DEEP_JSON_BYTES, "["),
    });
    expect(flood.status).toBe(400);
    expect(wafBody(flood).error).toBe("json_too_deep");
    console.log(`1 MB of "[" refused with 400 in ${flood.ms.toFixed(1)} ms`);
    expect(flood.ms).toBeLessThan(DEEP_JSON_ANSWER_MS);

    // A compressed JSON body cannot be scanned: refused, not let through to a backend that inflates it.
    const gz = await send(port, {
      from,
      method: "POST",
      target: "/data",
      headers: { ...json, "Content-Encoding": "gzip" },
      body: Buffer.from(Bun.gzipSync("[".repeat(1000) + "]".repeat(1000))),
    });
    expect(gz.status).toBe(415);
    expect(wafBody(gz).error).toBe("encoded_body");

    // Nothing refused reached the backend.
    expect(be.seen).toEqual([]);

    // What is within the limits passes, body intact.
    const exact = "[".repeat(5) + "]".repeat(5);
    expect(
      (await send(port, { from, method: "POST", target: "/data", headers: json, body: exact })).status,
    ).toBe(200);
    // Brackets in a string (and an escaped quote) are not nesting.
    const inString = JSON.stringify({ a: `[[[[[[[[[[{{{{{{"\\` });
    expect(
      (await send(port, { from, method: "POST", target: "/data", headers: json, body: inString })).status,
    ).toBe(200);
    // Not JSON: depth is not looked at.
    const text = { "Content-Type": "text/plain" };
    expect(
      (await send(port, { from, method: "POST", target: "/t", headers: text, body: "[".repeat(50) })).status,
    ).toBe(200);
    // The exact endpoint beats the prefix one: 5000 bytes are fine on /small/upload, not on /small/x.
    const big = "y".repeat(5000);
    expect((await send(port, { from, method: "POST", target: "/small/upload", body: big })).status).toBe(200);
    expect((await send(port, { from, method: "POST", target: "/small/x", body: big })).status).toBe(413);
    expect(
      (await send(port, { from, method: "POST", target: "/small/upload", chunks: [big, big] })).status,
    ).toBe(200);
    expect(be.seen.map((s) => s.body)).toEqual([exact, inString, "[".repeat(50), big, big + big]);
    await expectLog(lb, 1, "warn(waf): blocked 414 uri_too_long client=127.0.0.2");
    await expectLog(lb, 3, "warn(waf): blocked 400 json_too_deep client=127.0.0.2 POST /data");
  });
});

// ---------------------------------------------------------------------------------------------------------
// 6. Shadow mode

describe("shadow mode", () => {
  const blocking = {
    rate_limits: [{ name: "api-1", path: "/api/*", limit: { requests: 1, period_sec: 60 } }],
    request_limits: { max_uri_length: 50, max_json_depth: 2 },
  };
  for (const how of ["file", "flag"] as const) {
    test(`everything passes and is logged as log_only (shadow ${how === "file" ? '"shadow_mode": true' : "--waf-shadow"})`, async () => {
      const be = countingBackend();
      cleanups.push(be.stop);
      const lb =
        how === "file"
          ? await startLb({ ...blocking, shadow_mode: true }, be, "mp")
          : await startLb(blocking, be, "mp", ["--waf-shadow"]);
      expect(lb.stderr()).toContain("SHADOW MODE");
      // Every worker adopts the config with its first request; a scrape answered by one that has not
      // lacks the per-rule series (reported bug; see the test "every scrape ... in mp" below).
      await bothWorkersServe(lb, "127.0.0.9");
      const from = "127.0.0.2";
      const replies = [];
      for (let i = 0; i < 3; i++) replies.push(await send(lb.port, { from, target: "/api/x" }));
      replies.push(await send(lb.port, { from, target: `/long?${"a".repeat(100)}` }));
      const deep = "[[[[]]]]";
      replies.push(
        await send(lb.port, {
          from,
          method: "POST",
          target: "/j",
          headers: { "Content-Type": "application/json" },
          body: deep,
        }),
      );
      expect(statuses(replies)).toEqual([200, 200, 200, 200, 200]);
      const mine = be.seen.filter((s) => s.peer === from);
      expect(mine.map((s) => s.path)).toEqual(["/api/x", "/api/x", "/api/x", "/long", "/j"]);
      // The body of a finding goes on unchanged.
      expect(mine[4]!.body).toBe(deep);
      await waitFor("the log_only lines", () => logLinesWith(lb, "info(waf): log_only").length >= 4);
      await expectLog(lb, 2, "info(waf): log_only rate_limit rule=api-1 client=127.0.0.2 GET /api/x");
      await expectLog(lb, 1, "info(waf): log_only uri_too_long client=127.0.0.2 GET /long");
      await expectLog(lb, 1, "info(waf): log_only json_too_deep client=127.0.0.2 POST /j");
      expect(logLinesWith(lb, "warn(waf): blocked")).toEqual([]);
      const m = await lb.metricsText();
      expect(metricValue(m, "lb_waf_decisions_total", 'action="logged",reason="rate_limit"')).toBe(2);
      expect(metricValue(m, "lb_waf_decisions_total", 'action="logged",reason="uri_too_long"')).toBe(1);
      expect(metricValue(m, "lb_waf_decisions_total", 'action="logged",reason="json_too_deep"')).toBe(1);
      expect(metricValue(m, "lb_waf_decisions_total", 'action="blocked",reason="rate_limit"')).toBe(0);
      expect(metricValue(m, "lb_waf_rule_decisions_total", 'rule="api-1",action="logged"')).toBe(2);
      expect(metricValue(m, "lb_waf_rule_decisions_total", 'rule="api-1",action="blocked"')).toBe(0);
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// 7. Connection cap

describe("per-client in-flight cap (slowloris.max_conns_per_ip)", () => {
  for (const mode of MODES) {
    test(`3 held requests: the 4th from the same client is 429 at once, others are served (${mode})`, async () => {
      const be = countingBackend();
      cleanups.push(be.stop);
      const lb = await startLb({ slowloris: { max_conns_per_ip: 3 } }, be, mode);
      if (mode === "mp") await bothWorkersServe(lb, "127.0.0.9");
      const held = [0, 1, 2].map((i) => send(lb.port, { from: "127.0.0.2", target: `/hold/${i}` }));
      await waitFor("3 requests held at the backend", () => be.held() === 3);

      const fourth = await send(lb.port, { from: "127.0.0.2", target: "/hold/3" });
      expectTooMany(fourth, "conn_limit");
      console.log(`connection cap (${mode}): 4th request refused in ${fourth.ms.toFixed(1)} ms`);
      expect(fourth.ms).toBeLessThan(FAST_REFUSAL_MS);
      const other = await send(lb.port, { from: "127.0.0.3", target: "/fast" });
      expect(other.status).toBe(200);
      expect(be.held()).toBe(3);

      be.releaseAll();
      expect(statuses(await Promise.all(held))).toEqual([200, 200, 200]);
      // The counts go back as the requests end: 3 can be in flight again.
      const again = [0, 1, 2].map((i) => send(lb.port, { from: "127.0.0.2", target: `/hold/again${i}` }));
      await waitFor("3 requests held again", () => be.held() === 3);
      be.releaseAll();
      expect(statuses(await Promise.all(again))).toEqual([200, 200, 200]);
      expect(be.count("127.0.0.2", "/hold/")).toBe(6);
      await expectLog(lb, 1, "warn(waf): blocked 429 conn_limit client=127.0.0.2 GET /hold/3");
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// 8. Burst detection

/** Resolves `offsetMs` into the next window of `windowMs` (wall clock, as the proxy counts windows). */
async function nextWindow(windowMs: number, offsetMs: number): Promise<number> {
  const now = Date.now();
  const start = (Math.floor(now / windowMs) + 1) * windowMs;
  await Bun.sleep(start + offsetMs - now);
  return start;
}

describe("burst detection", () => {
  test(
    "a steady client is never refused; a spike over 3x its baseline is 429 burst within the window",
    async () => {
      const be = countingBackend();
      cleanups.push(be.stop);
      const WINDOW_MS = 1000;
      const lb = await startLb(
        { burst_detection_enabled: true, burst_threshold: 3, burst_window_sec: 1 },
        be,
        "mp",
      );
      const STEADY = 5;
      const SPIKE = 60;
      const SPIKE_WINDOW = 3;
      const steady: Reply[] = [];
      let spike: Reply[] = [];
      let spikeInWindow = false;
      for (let w = 0; w < 6; w++) {
        const start = await nextWindow(WINDOW_MS, 20);
        // The steady client: 5 a window, every window.
        const s = Promise.all(
          Array.from({ length: STEADY }, (_, i) =>
            send(lb.port, { from: "127.0.0.2", target: `/s/${w}/${i}` }),
          ),
        );
        // The spiker: 5 a window (the first window partial and ignored, the next seeds baseline 5), then 60.
        const n = w === SPIKE_WINDOW ? SPIKE : STEADY;
        const p = Promise.all(
          Array.from({ length: n }, (_, i) => send(lb.port, { from: "127.0.0.3", target: `/p/${w}/${i}` })),
        );
        const [sr, pr] = await Promise.all([s, p]);
        const allInWindow = Date.now() < start + WINDOW_MS;
        steady.push(...sr);
        if (w === SPIKE_WINDOW) {
          spike = pr;
          spikeInWindow = allInWindow;
        } else {
          expect({ w, statuses: statuses(pr) }).toEqual({ w, statuses: Array(STEADY).fill(200) });
        }
        if (w < SPIKE_WINDOW) expect({ w, inWindow: allInWindow }).toEqual({ w, inWindow: true });
      }
      expect(statuses(steady)).toEqual(Array(steady.length).fill(200));
      const refused = spike.filter((r) => r.status !== 200);
      expect(refused.length).toBeGreaterThan(0);
      for (const r of refused) expectTooMany(r, "burst");
      // Baseline 5 x threshold 3: the 16th request of the window is the first refused. The spike must
      // land in one window for that count to hold (60 loopback requests take well under its 980 ms).
      expect({ spikeInWindow }).toEqual({ spikeInWindow: true });
      expect(spike.length - refused.length).toBe(15);
      await expectLog(lb, refused.length, "warn(waf): blocked 429 burst client=127.0.0.3");
      expect(logLinesWith(lb, "client=127.0.0.2")).toEqual([]);
    },
    LONG_TEST_MS,
  );
});

// ---------------------------------------------------------------------------------------------------------
// 9. Hot reload

describe("hot reload of the WAF file", () => {
  test(
    "a new limit applies without a restart; an invalid file keeps the old rules; an unchanged rule keeps its bucket",
    async () => {
      const be = countingBackend();
      cleanups.push(be.stop);
      const other = { name: "other-2", path: "/other/*", limit: { requests: 2, period_sec: 60 } };
      const api = (n: number) => ({ name: "api", path: "/api/*", limit: { requests: n, period_sec: 60 } });
      const lb = await startLb({ rate_limits: [api(2), other] }, be, "mp");
      const pid = lb.m.proc.pid;
      const from = "127.0.0.2";
      const get = (target: string, f = from) => send(lb.port, { from: f, target });

      expect(statuses([await get("/other/1"), await get("/other/2"), await get("/other/3")])).toEqual([
        200, 200, 429,
      ]);
      expect(statuses([await get("/api/1"), await get("/api/2"), await get("/api/3")])).toEqual([
        200, 200, 429,
      ]);

      // Raise the api limit; leave other-2 as it is.
      const reloadsBefore = logLinesWith(lb, "info(waf): reloaded").length;
      const t0 = performance.now();
      lb.write({ rate_limits: [api(4), other] });
      await waitFor(
        "the reload",
        () => logLinesWith(lb, "info(waf): reloaded").length > reloadsBefore,
        RELOAD_PROMISE_MS,
      );
      console.log(`hot reload applied in ${(performance.now() - t0).toFixed(0)} ms`);
      // A changed rule starts a new bucket with the new limit...
      const api4 = [];
      for (let i = 0; i < 5; i++) api4.push(await get(`/api/new${i}`));
      expect(statuses(api4)).toEqual([200, 200, 200, 200, 429]);
      // ...an unchanged one keeps its bucket: still over.
      expectTooMany(await get("/other/4"), "rate_limit", "other-2");
      expect(lb.m.proc.pid).toBe(pid);
      expect(lb.m.proc.exitCode).toBeNull();
      expect(logLinesWith(lb, "info(main): listening on")).toHaveLength(1);

      // Invalid rewrites: logged with where the problem is, and the rules in force stay.
      const errsBefore = logLinesWith(lb, "err(waf):").length;
      lb.write('{"rate_limits": [\n  {"name": "api", "path": "/api/*",,}\n]}');
      await waitFor(
        "the bad JSON error",
        () => logLinesWith(lb, "err(waf):").length > errsBefore,
        RELOAD_PROMISE_MS,
      );
      const jsonErr = logLinesWith(lb, "err(waf):").at(-1)!;
      expect(jsonErr).toContain(lb.file);
      expect(jsonErr).toContain("line 2");
      expect(jsonErr).toContain("keeping the rules in force");

      lb.write({ rate_limits: [{ ...api(1), limit: { requests: "ten", period_sec: 60 } }, other] });
      await waitFor(
        "the wrong type error",
        () => logLinesWith(lb, "err(waf):").length > errsBefore + 1,
        RELOAD_PROMISE_MS,
      );
      const typeErr = logLinesWith(lb, "err(waf):").at(-1)!;
      expect(typeErr).toContain(lb.file);
      expect(typeErr).toContain("rate_limits[0].limit.requests");
      expect(typeErr).toContain('"ten"');

      // Still 4 per 60 s for a new client, and other-2 still over for the old one.
      const fresh = [];
      for (let i = 0; i < 5; i++) fresh.push(await get(`/api/f${i}`, "127.0.0.5"));
      expect(statuses(fresh)).toEqual([200, 200, 200, 200, 429]);
      expect((await get("/other/5")).status).toBe(429);
      expect(logLinesWith(lb, "info(waf): reloaded")).toHaveLength(reloadsBefore + 1);
      expect(lb.m.proc.exitCode).toBeNull();
    },
    LONG_TEST_MS,
  );
});

// ---------------------------------------------------------------------------------------------------------
// 10. Shared table overflow

describe("shared table overflow (table_slots 64)", () => {
  const CLIENTS = 300;
  const overflowFile = (policy: "fail_open" | "fail_closed") => ({
    table_slots: 64,
    table_full: policy,
    trusted_proxies: ["127.0.0.4/32"],
    rate_limits: [{ name: "api-1", path: "/api/*", limit: { requests: 1, period_sec: 60 } }],
  });
  /** Client i as the trusted proxy 127.0.0.4 reports it. */
  const clientIp = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

  /** One request from each of CLIENTS clients, all through the trusted proxy. */
  async function overflow(policy: "fail_open" | "fail_closed", extra: string[] = []) {
    const be = countingBackend();
    cleanups.push(be.stop);
    const lb = await startLb(overflowFile(policy), be, "mp", extra);
    const replies = await sendMany(lb.port, CLIENTS, (i) => ({
      from: "127.0.0.4",
      target: `/api/${i}`,
      headers: { "X-Forwarded-For": clientIp(i) },
    }));
    const ok = replies.filter((r) => r.status === 200).length;
    const refused = replies.filter((r) => r.status === 429);
    // Every request got an answer, and nothing but 200 or 429.
    expect(ok + refused.length).toBe(CLIENTS);
    const metrics = await lb.metricsText();
    const tableFull =
      metricValue(metrics, "lb_waf_decisions_total", 'action="blocked",reason="table_full"') +
      metricValue(metrics, "lb_waf_decisions_total", 'action="logged",reason="table_full"');
    console.log(
      `table overflow (${policy}): ${ok} passed, ${refused.length} refused, table_full counted ${tableFull}`,
    );
    expect(be.count("127.0.0.4", "/api/")).toBe(ok);
    return { be, lb, replies, ok, refused, metrics, tableFull };
  }

  /** The process survived, serves what no rule covers, and still limits a client it tracks. */
  async function stillServing(lb: Lb, replies: readonly Reply[]) {
    expect((await send(lb.port, { from: "127.0.0.2", target: "/free" })).status).toBe(200);
    const tracked = replies.findIndex((r) => r.status === 200);
    const again = await send(lb.port, {
      from: "127.0.0.4",
      target: "/api/again",
      headers: { "X-Forwarded-For": clientIp(tracked) },
    });
    expect(again.status).toBe(429);
    expect(lb.m.proc.exitCode).toBeNull();
  }

  test(
    `fail_open: ${CLIENTS} clients through a trusted proxy all pass; the process stays up`,
    async () => {
      const { lb, replies, refused } = await overflow("fail_open", ["-l", "debug"]);
      // One request per client is within its limit, tracked or not.
      expect(refused).toHaveLength(0);
      // The table did overflow: a debug line per untracked request (and the metric, tested below).
      await waitFor(
        "a table-full debug line",
        () => logLinesWith(lb, "debug(waf): shared table full: client=").length > 0,
      );
      await stillServing(lb, replies);
    },
    LONG_TEST_MS,
  );

  test(
    `fail_closed: of ${CLIENTS} clients, those without a slot get 429 table_full`,
    async () => {
      const { lb, replies, ok, refused, metrics } = await overflow("fail_closed");
      expect(ok).toBeLessThanOrEqual(64);
      expect(refused.length).toBeGreaterThanOrEqual(CLIENTS - 64);
      for (const r of refused) expectTooMany(r, "table_full", "api-1");
      expect(metricValue(metrics, "lb_waf_decisions_total", 'action="blocked",reason="table_full"')).toBe(
        refused.length,
      );
      await stillServing(lb, replies);
    },
    LONG_TEST_MS,
  );

  // KNOWN GAP (reported): with table_full "fail_open" an untracked request is neither counted in
  // lb_waf_decisions_total{reason="table_full"} nor in the stats line (src/proxy/waf.ts tableFullSeen
  // only logs at debug level), so an operator cannot see the table overflowing. Remove .failing once fixed.
  test(
    'fail_open: an overflowing table shows in lb_waf_decisions_total{reason="table_full"}',
    async () => {
      const { tableFull } = await overflow("fail_open");
      expect(tableFull).toBeGreaterThan(0);
    },
    LONG_TEST_MS,
  );
});

// ---------------------------------------------------------------------------------------------------------
// 11-12. Metrics and the stats line

describe("metrics and the stats line", () => {
  test(
    "lb_waf_decisions_total and lb_waf_rule_decisions_total match what was sent; the stats line follows",
    async () => {
      const be = countingBackend();
      cleanups.push(be.stop);
      const lb = await startLb(
        {
          rate_limits: [
            { name: "api-3", path: "/api/*", limit: { requests: 3, period_sec: 60 } },
            {
              name: "login-1",
              path: "/login",
              method: "POST",
              limit: { requests: 1, period_sec: 60 },
              action: "log",
            },
          ],
          request_limits: { max_uri_length: 100 },
        },
        be,
        "mp",
      );
      // Both workers adopt the config (else a scrape may lack the per-rule series: a reported bug).
      const warm = await bothWorkersServe(lb, "127.0.0.9");
      const from = "127.0.0.2";
      // 5 x /api: 3 allowed, 2 blocked (api-3). 3 x POST /login: 1 allowed, 2 logged (login-1), all forwarded.
      // 1 x long URI: blocked uri_too_long. 2 x /free and 1 x GET /login (no rule matches): allowed.
      const sent = [
        ...Array.from({ length: 5 }, (_, i): Req => ({ from, target: `/api/${i}` })),
        ...Array.from({ length: 3 }, (): Req => ({ from, method: "POST", target: "/login", body: "u=1" })),
        { from, target: `/x?${"a".repeat(150)}` },
        { from, target: "/free" },
        { from, target: "/free" },
        { from, target: "/login" },
      ];
      const replies = [];
      for (const r of sent) replies.push(await send(lb.port, r));
      expect(statuses(replies)).toEqual([200, 200, 200, 429, 429, 200, 200, 200, 414, 200, 200, 200]);
      expect(be.count(from)).toBe(9);

      const m = await lb.metricsText();
      const decisions = m
        .split("\n")
        .filter((l) => l.startsWith("lb_waf_decisions_total{") && !l.endsWith(" 0"))
        .sort();
      expect(decisions).toEqual([
        `lb_waf_decisions_total{action="allowed",reason="none"} ${7 + warm}`,
        'lb_waf_decisions_total{action="blocked",reason="rate_limit"} 2',
        'lb_waf_decisions_total{action="blocked",reason="uri_too_long"} 1',
        'lb_waf_decisions_total{action="logged",reason="rate_limit"} 2',
      ]);
      const rules = m
        .split("\n")
        .filter((l) => l.startsWith("lb_waf_rule_decisions_total{"))
        .sort();
      expect(rules).toEqual([
        'lb_waf_rule_decisions_total{rule="api-3",action="blocked"} 2',
        'lb_waf_rule_decisions_total{rule="api-3",action="logged"} 0',
        'lb_waf_rule_decisions_total{rule="login-1",action="blocked"} 0',
        'lb_waf_rule_decisions_total{rule="login-1",action="logged"} 2',
      ]);
      await expectLog(lb, 2, "info(waf): log_only rate_limit rule=login-1 client=127.0.0.2 POST /login");

      // 12 + warm decided: 7 + warm allowed, 3 blocked, 2 logged. A line from a tick in the middle of
      // the sequence has a smaller total: wait for the one after it.
      const total = 12 + warm;
      const line = await waitFor(
        "the WAF stats line",
        () => logLinesWith(lb, `info(waf_stats): WAF Stats: total=${total} `)[0],
        STATS_LINE_DEADLINE_MS,
      );
      expect(line).toBe(
        `info(waf_stats): WAF Stats: total=${total} allowed=${7 + warm} blocked=3 logged=2` +
          ` block_rate=${Math.round((100 * 3) / total)}%` +
          " | by_reason: rate_limit=4 burst=0 slowloris=0 uri=1 body=0 json=0 encoded=0 table_full=0",
      );
    },
    LONG_TEST_MS,
  );
});

// KNOWN BUG (reported): the per-rule series is rendered from the answering worker's own copy of the rule
// names (Metrics.wafRules), which a worker sets only when it handles its first WAF'd request (Waf.sync);
// /metrics is answered before that. So in mp a scrape answered by a worker that has not yet served a
// request since start (or since a reload) has no lb_waf_rule_decisions_total at all, and the series
// flickers between scrapes. Remove .failing once fixed.
test(
  "every scrape of /metrics in mp has lb_waf_rule_decisions_total once a request was decided",
  async () => {
    const be = countingBackend();
    cleanups.push(be.stop);
    const lb = await startLb(
      { rate_limits: [{ name: "api-1", path: "/api/*", limit: { requests: 1, period_sec: 60 } }] },
      be,
      "mp",
    );
    // One decided request: exactly one worker has handled a request (and so adopted the config).
    expect((await send(lb.port, { from: "127.0.0.2", target: "/api/x" })).status).toBe(200);
    // Fresh connections: the kernel spreads the scrapes over both workers.
    const SCRAPES = 20;
    const seen: number[] = [];
    for (let i = 0; i < SCRAPES; i++) {
      seen.push(
        (await lb.metricsText()).split("\n").filter((l) => l.startsWith("lb_waf_rule_decisions_total{"))
          .length,
      );
    }
    console.log(`rule series per scrape (2 = present): ${seen.join(" ")}`);
    expect(seen).toEqual(Array(SCRAPES).fill(2));
  },
  LONG_TEST_MS,
);
