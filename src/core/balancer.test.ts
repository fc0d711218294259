import { describe, expect, test } from "bun:test";
import {
  type BackendInfo,
  excludeIndex,
  hostPort,
  LocalPool,
  maskHas,
  newPickRequest,
  type PickRequest,
  pick,
  type Strategy,
  stickyCookieValue,
} from "./balancer.ts";
import { BACKENDS_MAX } from "./limits.ts";

const STRATEGIES: readonly Strategy[] = ["round_robin", "weighted", "random", "sticky", "least_conn", "p2c"];

function backends(n: number, weights: readonly number[] = []): BackendInfo[] {
  return Array.from({ length: n }, (_, i) => ({ host: "10.0.0.1", port: 9000 + i, weight: weights[i] ?? 1 }));
}

/** Deterministic rand in [0, 1): mulberry32. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function picks(
  strategy: Strategy,
  pool: LocalPool,
  n: number,
  req = newPickRequest(),
  rand = seeded(1),
): number[] {
  const out: number[] = [];
  for (let k = 0; k < n; k++) out.push(pick(strategy, pool, req, rand).index);
  return out;
}

function tally(indices: readonly number[], count: number): number[] {
  const t = new Array<number>(count).fill(0);
  for (const i of indices) t[i]!++;
  return t;
}

describe("round_robin", () => {
  test("9 picks over 3 backends: 3 each, in order", () => {
    const got = picks("round_robin", new LocalPool(backends(3)), 9);
    expect(got).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 2]);
    expect(tally(got, 3)).toEqual([3, 3, 3]);
  });

  test("a down backend's share is spread over the others, not given to its neighbour", () => {
    const pool = new LocalPool(backends(4));
    pool.setHealthy(1, false);
    expect(tally(picks("round_robin", pool, 300), 4)).toEqual([100, 0, 100, 100]);
  });

  test("all 64 backends are reached, including the high word", () => {
    const pool = new LocalPool(backends(BACKENDS_MAX));
    expect(tally(picks("round_robin", pool, 128), 64)).toEqual(new Array(64).fill(2));
    pool.setHealthy(63, false);
    pool.setHealthy(40, false);
    const t = tally(picks("round_robin", pool, 62 * 3), 64);
    expect(t[63]).toBe(0);
    expect(t[40]).toBe(0);
    expect(t[32]).toBe(3);
    expect(t[0]).toBe(3);
  });
});

describe("weighted", () => {
  test("weights 5,1,1 give nginx's smooth sequence a,a,b,a,c,a,a, twice", () => {
    const pool = new LocalPool(backends(3, [5, 1, 1]));
    const got = picks("weighted", pool, 14).map((i) => "abc"[i]);
    expect(got.join(",")).toBe("a,a,b,a,c,a,a,a,a,b,a,c,a,a");
  });

  test("proportions follow the weights; a down backend drops out and its weights state stays", () => {
    const pool = new LocalPool(backends(3, [3, 2, 1]));
    expect(tally(picks("weighted", pool, 600), 3)).toEqual([300, 200, 100]);
    pool.setHealthy(0, false);
    expect(tally(picks("weighted", pool, 300), 3)).toEqual([0, 200, 100]);
  });

  test("weight below 1 is never picked", () => {
    const pool = new LocalPool(backends(2, [0, 1]));
    expect(tally(picks("weighted", pool, 10), 2)).toEqual([0, 10]);
    pool.setHealthy(1, false);
    expect(pick("weighted", pool, newPickRequest(), seeded(1)).index).toBe(-1);
  });
});

describe("random", () => {
  test("reaches every backend with a seeded rand, roughly evenly", () => {
    const t = tally(picks("random", new LocalPool(backends(5)), 5000, newPickRequest(), seeded(42)), 5);
    for (const n of t) expect(n).toBeGreaterThan(800);
  });

  test("rand() returning values at the edges stays in range", () => {
    const pool = new LocalPool(backends(3));
    expect(pick("random", pool, newPickRequest(), () => 0).index).toBe(0);
    expect(pick("random", pool, newPickRequest(), () => 0.9999999999).index).toBe(2);
    expect(pick("random", pool, newPickRequest(), () => 1).index).toBe(2);
  });
});

describe("sticky", () => {
  test("a cookie naming a healthy backend keeps the client there, without setting the cookie", () => {
    const pool = new LocalPool(backends(3));
    const req = newPickRequest(pool.stickyId(2));
    for (let k = 0; k < 5; k++)
      expect(pick("sticky", pool, req, seeded(1))).toEqual({ index: 2, setSticky: false });
  });

  test("no cookie: round robin, and the caller sets the cookie", () => {
    const pool = new LocalPool(backends(3));
    const got = [0, 1, 2].map(() => pick("sticky", pool, newPickRequest(null), seeded(1)));
    expect(got).toEqual([
      { index: 0, setSticky: true },
      { index: 1, setSticky: true },
      { index: 2, setSticky: true },
    ]);
  });

  test("its backend down -> moved (cookie set); back up -> the new cookie holds", () => {
    const pool = new LocalPool(backends(3));
    pool.setHealthy(1, false);
    const moved = pick("sticky", pool, newPickRequest(pool.stickyId(1)), seeded(1));
    expect(moved.setSticky).toBe(true);
    expect(moved.index).not.toBe(1);
    expect(moved.index).toBeGreaterThanOrEqual(0);
    pool.setHealthy(1, true);
    const again = pick("sticky", pool, newPickRequest(pool.stickyId(moved.index)), seeded(1));
    expect(again).toEqual({ index: moved.index, setSticky: false });
  });

  test("a cookie naming no backend (removed on reload, or forged) -> moved", () => {
    const before = new LocalPool(backends(3));
    const after = new LocalPool(backends(2));
    const r = pick("sticky", after, newPickRequest(before.stickyId(2)), seeded(1));
    expect(r.setSticky).toBe(true);
    expect(r.index).toBeGreaterThanOrEqual(0);
    expect(pick("sticky", after, newPickRequest("not-a-backend"), seeded(1)).setSticky).toBe(true);
  });

  test("a retry away from the sticky backend moves the cookie", () => {
    const pool = new LocalPool(backends(3));
    const req = newPickRequest(pool.stickyId(0));
    excludeIndex(req, 0);
    const r = pick("sticky", pool, req, seeded(1));
    expect(r.index).not.toBe(0);
    expect(r.setSticky).toBe(true);
  });

  test("the same host:port listed twice: the cookie names the first", () => {
    const pool = new LocalPool([...backends(2), ...backends(2)]);
    expect(pool.stickyIndex(pool.stickyId(3))).toBe(1);
    expect(pool.stickyIndex("0000000000000000")).toBe(-1);
  });

  test("stickyCookieValue: 64-bit FNV-1a in 16 hex digits, stable, no address in it", () => {
    expect(stickyCookieValue("")).toBe("cbf29ce484222325"); // FNV-1a 64 offset basis
    expect(stickyCookieValue("a")).toBe("af63dc4c8601ec8c"); // published FNV-1a 64 test vector
    const id = stickyCookieValue("10.0.0.1:9001");
    expect(id).toMatch(/^[0-9a-f]{16}$/);
    expect(stickyCookieValue("10.0.0.1:9001")).toBe(id);
    expect(stickyCookieValue("10.0.0.1:9002")).not.toBe(id);
    expect(hostPort("::1", 80)).toBe("[::1]:80");
    expect(new LocalPool(backends(2)).stickyId(1)).toBe(stickyCookieValue("10.0.0.1:9001"));
  });
});

describe("least_conn", () => {
  test("prefers the idle backend when one is busy", () => {
    const pool = new LocalPool(backends(2));
    pool.begin(0);
    expect(picks("least_conn", pool, 5)).toEqual([1, 1, 1, 1, 1]);
  });

  test("ties are broken round robin so equal backends share the load", () => {
    const pool = new LocalPool(backends(4));
    pool.begin(2);
    expect(tally(picks("least_conn", pool, 30), 4)).toEqual([10, 10, 0, 10]);
  });

  test("follows in-flight counts as requests start and end", () => {
    const pool = new LocalPool(backends(3));
    const req = newPickRequest();
    for (let k = 0; k < 6; k++) pool.begin(pick("least_conn", pool, req, seeded(1)).index);
    expect([0, 1, 2].map((i) => pool.inFlight(i))).toEqual([2, 2, 2]);
    pool.end(1, 5);
    expect(pick("least_conn", pool, req, seeded(1)).index).toBe(1);
  });
});

describe("p2c", () => {
  test("never picks the busy backend while two others are idle", () => {
    const pool = new LocalPool(backends(3));
    pool.begin(1);
    pool.begin(1);
    const t = tally(picks("p2c", pool, 1000, newPickRequest(), seeded(7)), 3);
    expect(t[1]).toBe(0);
    expect(t[0]).toBeGreaterThan(300);
    expect(t[2]).toBeGreaterThan(300);
  });

  test("between two idle backends the lower latency wins", () => {
    const pool = new LocalPool(backends(2));
    pool.begin(0);
    pool.end(0, 50);
    pool.begin(1);
    pool.end(1, 5);
    expect(picks("p2c", pool, 20, newPickRequest(), seeded(3))).toEqual(new Array(20).fill(1));
  });

  test("one candidate: it is picked", () => {
    const pool = new LocalPool(backends(3));
    pool.setHealthy(0, false);
    pool.setHealthy(2, false);
    expect(picks("p2c", pool, 3)).toEqual([1, 1, 1]);
  });
});

describe("every strategy", () => {
  for (const s of STRATEGIES) {
    test(`${s}: skips unhealthy backends`, () => {
      const pool = new LocalPool(backends(4, [2, 2, 2, 2]));
      pool.setHealthy(0, false);
      pool.setHealthy(2, false);
      const t = tally(picks(s, pool, 200, newPickRequest(), seeded(9)), 4);
      expect(t[0]).toBe(0);
      expect(t[2]).toBe(0);
      expect(t[1]! + t[3]!).toBe(200);
    });

    test(`${s}: exclude sends a retry elsewhere; all excluded -> -1`, () => {
      const pool = new LocalPool(backends(3));
      const req: PickRequest = newPickRequest(pool.stickyId(1));
      excludeIndex(req, 1);
      for (let k = 0; k < 20; k++) expect(pick(s, pool, req, seeded(k)).index).not.toBe(1);
      excludeIndex(req, 0);
      for (let k = 0; k < 5; k++) expect(pick(s, pool, req, seeded(k)).index).toBe(2);
      excludeIndex(req, 2);
      expect(pick(s, pool, req, seeded(1)).index).toBe(-1);
    });

    test(`${s}: exclude works in the high word (backends 32-63)`, () => {
      const pool = new LocalPool(backends(BACKENDS_MAX));
      const req = newPickRequest();
      for (let i = 0; i < BACKENDS_MAX; i++) if (i !== 50) excludeIndex(req, i);
      expect(pick(s, pool, req, seeded(1)).index).toBe(50);
    });

    test(`${s}: none healthy -> -1; no backends -> -1`, () => {
      const pool = new LocalPool(backends(3));
      for (let i = 0; i < 3; i++) pool.setHealthy(i, false);
      expect(pick(s, pool, newPickRequest("x"), seeded(1))).toEqual({ index: -1, setSticky: false });
      expect(pick(s, new LocalPool([]), newPickRequest(), seeded(1)).index).toBe(-1);
    });
  }
});

describe("LocalPool", () => {
  test("health bits in both words", () => {
    const pool = new LocalPool(backends(40));
    expect(pool.healthyLo()).toBe(-1);
    expect(pool.healthyHi()).toBe(0xff);
    pool.setHealthy(35, false);
    pool.setHealthy(3, false);
    expect(pool.isHealthy(35)).toBe(false);
    expect(pool.isHealthy(3)).toBe(false);
    expect(maskHas(pool.healthyLo(), pool.healthyHi(), 34)).toBe(true);
    pool.setHealthy(35, true);
    expect(pool.isHealthy(35)).toBe(true);
  });

  test("more than BACKENDS_MAX backends is refused", () => {
    expect(() => new LocalPool(backends(BACKENDS_MAX + 1))).toThrow("at most 64");
  });

  test("in-flight never goes negative; latency is an EWMA seeded by the first sample", () => {
    const pool = new LocalPool(backends(1));
    pool.end(0, -1);
    expect(pool.inFlight(0)).toBe(0);
    pool.begin(0);
    pool.end(0, 100);
    expect(pool.latencyEwmaMs(0)).toBe(100);
    pool.begin(0);
    pool.end(0, 0);
    expect(pool.latencyEwmaMs(0)).toBeCloseTo(80);
  });
});
