import { describe, expect, test } from "bun:test";
import {
  AHEAD_TICKS_MAX,
  decide,
  type GcraRule,
  gcraProblem,
  gcraRule,
  newGcraDecision,
  nowTicks,
  RATE_PER_SEC_MAX,
  take,
} from "./ratelimit.ts";
import { hashKey, SLOT_WORDS, SlotTable } from "./table.ts";

/** A realistic wall clock (Date.now() scale), to show no base epoch is needed. */
const T0 = 1_760_000_000_123;

/** Runs requests against one bucket kept in a local variable, as the table would keep it. */
class Bucket {
  tat: number;
  readonly d = newGcraDecision();
  constructor(
    readonly rule: GcraRule,
    startMs: number,
  ) {
    this.tat = nowTicks(startMs, rule);
  }
  hit(nowMs: number) {
    decide(this.tat, nowMs, this.rule, this.d);
    if (this.d.allowed) this.tat = this.d.newTat;
    return this.d;
  }
  /** How many of n requests at the same instant pass. */
  passes(nowMs: number, n: number): number {
    let ok = 0;
    for (let i = 0; i < n; i++) if (this.hit(nowMs).allowed) ok++;
    return ok;
  }
}

describe("GCRA token bucket", () => {
  test("5 per 60 s, burst 0: five pass, the sixth waits 12 s for a token, then one more passes", () => {
    const b = new Bucket(gcraRule(5, 60, 0), T0);
    const remaining: number[] = [];
    for (let i = 0; i < 5; i++) {
      const d = b.hit(T0);
      expect(d.allowed).toBe(true);
      remaining.push(d.remainingTokens);
    }
    expect(remaining).toEqual([4, 3, 2, 1, 0]);
    const sixth = b.hit(T0);
    expect(sixth.allowed).toBe(false);
    expect(sixth.retryAfterMs).toBe(12_000);
    // Still refused just before the token is back, with the wait counting down.
    const early = b.hit(T0 + 11_999);
    expect(early.allowed).toBe(false);
    expect(early.retryAfterMs).toBe(1);
    expect(b.hit(T0 + 12_000).allowed).toBe(true);
    expect(b.hit(T0 + 12_000).allowed).toBe(false);
  });

  test("a refused request takes no token", () => {
    const b = new Bucket(gcraRule(5, 60, 0), T0);
    b.passes(T0, 5);
    for (let i = 0; i < 100; i++) expect(b.hit(T0 + i).allowed).toBe(false);
    expect(b.hit(T0 + 12_000).allowed).toBe(true);
  });

  test("burst 3 lets 3 extra through at once, then the steady rate applies", () => {
    const b = new Bucket(gcraRule(5, 60, 3), T0);
    expect(b.passes(T0, 20)).toBe(8);
    expect(b.hit(T0).retryAfterMs).toBe(12_000);
    // A period later only a period's refill (5) is back, not the burst.
    expect(b.passes(T0 + 60_000, 20)).toBe(5);
    // Idle long enough to refill completely (8 tokens x 12 s = 96 s): the burst is available again.
    expect(b.passes(T0 + 60_000 + 96_000, 20)).toBe(8);
  });

  test("steady traffic at exactly the rate always passes; just above it does not", () => {
    const b = new Bucket(gcraRule(10, 1, 0), T0);
    for (let i = 0; i < 1000; i++) expect(b.hit(T0 + i * 100).allowed).toBe(true);
    const c = new Bucket(gcraRule(10, 1, 0), T0);
    let ok = 0;
    for (let i = 0; i < 1000; i++) if (c.hit(T0 + i * 90).allowed) ok++;
    // 90 s of traffic at 11.1/s: capacity 10 + 10/s x 89.91 s refill.
    expect(ok).toBe(10 + 899);
  });

  test("fractional intervals do not drift: 7 per 60 s gives exactly 7 per minute over an hour", () => {
    const b = new Bucket(gcraRule(7, 60, 0), T0);
    let ok = 0;
    // A request every 100 ms for an hour: 36,000 attempts.
    for (let t = 0; t < 3_600_000; t += 100) if (b.hit(T0 + t).allowed) ok++;
    // 7 at once, then one per 8571.43 ms: 7 + floor(3_599_900 / 8571.43) = 7 + 419.
    expect(ok).toBe(7 + 419);
  });

  test("rules faster than 1000/s keep their rate (sub-millisecond ticks)", () => {
    const rule = gcraRule(5000, 1, 0);
    const b = new Bucket(rule, T0);
    let ok = 0;
    // 10,000 requests spread evenly over 1 s (every 0.1 ms): the bucket allows its 5000 + the refill.
    for (let i = 0; i < 10_000; i++) if (b.hit(T0 + i * 0.1).allowed) ok++;
    // 5000 at once, then one per 0.2 ms over the remaining 0.9999 s (+-1 for tick rounding).
    expect(ok).toBeGreaterThanOrEqual(9998);
    expect(ok).toBeLessThanOrEqual(9999);
    const slower = new Bucket(rule, T0);
    expect(slower.passes(T0, 20_000)).toBe(5000);
  });

  test("near-limit fraction: tokens in use / capacity", () => {
    const b = new Bucket(gcraRule(10, 60, 0), T0);
    const used: number[] = [];
    for (let i = 0; i < 10; i++) used.push(b.hit(T0).usedFraction);
    expect(used.map((u) => Math.round(u * 100) / 100)).toEqual([
      0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1,
    ]);
    // Half a period later, half the tokens are back: the next request makes it 0.6.
    expect(b.hit(T0 + 30_000).usedFraction).toBeCloseTo(0.6, 5);
  });

  test("a bucket untouched for long reads as full, across the int32 wrap of the tick clock", () => {
    const rule = gcraRule(5, 60, 0);
    const b = new Bucket(rule, T0);
    b.passes(T0, 5);
    expect(b.hit(T0).allowed).toBe(false);
    // 2^31 ticks later the signed difference flips sign; 30 days later it is far outside the live band.
    for (const later of [2 ** 31, 2 ** 31 + 5, 30 * 86_400_000, 2 ** 32 + 86_400_000]) {
      const d = decide(b.tat, T0 + later, rule, newGcraDecision());
      expect(d.allowed).toBe(true);
      expect(d.remainingTokens).toBe(4);
    }
  });

  test("fullInMs says when the bucket is full again", () => {
    const b = new Bucket(gcraRule(5, 60, 0), T0);
    b.passes(T0, 2);
    expect(b.d.fullInMs).toBe(24_000);
  });
});

describe("gcraProblem / gcraRule bounds", () => {
  test("accepts the spec's rules and refuses what the clock cannot hold", () => {
    expect(gcraProblem(10, 60, 3)).toBeNull();
    expect(gcraProblem(100, 60, 20)).toBeNull();
    expect(gcraProblem(RATE_PER_SEC_MAX, 1, 0)).toBeNull();
    expect(gcraProblem(RATE_PER_SEC_MAX + 1, 1, 0)).toContain("faster than");
    expect(gcraProblem(0, 60, 0)).toContain("requests");
    expect(gcraProblem(1, 0, 0)).toContain("period_sec");
    expect(gcraProblem(1, 60, -1)).toContain("burst");
    // 1 per day + burst 11 refills over 12 days (2^30 ticks of 1 ms is 12.4 days); burst 12: 13 days.
    expect(gcraProblem(1, 86_400, 11)).toBeNull();
    expect(gcraProblem(1, 86_400, 12)).toContain("13.0 days");
    expect(() => gcraRule(1, 86_400, 12)).toThrow(RangeError);
    const r = gcraRule(1, 86_400, 11);
    expect(r.aheadMaxTicks).toBeLessThan(AHEAD_TICKS_MAX);
  });
});

describe("take (through the shared table)", () => {
  const KEY = new Int32Array(2);

  test("limits per client: one client's traffic does not spend another's tokens", () => {
    const table = new SlotTable(new Int32Array(SLOT_WORDS * 64));
    const rule = gcraRule(5, 60, 0);
    const d = newGcraDecision();
    const passes = (ip: string) => {
      let ok = 0;
      for (let i = 0; i < 10; i++) {
        hashKey(ip, 0, 0, KEY);
        if (take(table, KEY[0]!, KEY[1]!, T0, rule, true, d).allowed) ok++;
      }
      return ok;
    };
    expect(passes("10.0.0.1")).toBe(5);
    expect(passes("10.0.0.2")).toBe(5);
    expect(passes("10.0.0.1")).toBe(0);
    hashKey("10.0.0.1", 0, 0, KEY);
    expect(take(table, KEY[0]!, KEY[1]!, T0, rule, true, d).retryAfterMs).toBe(12_000);
  });

  test("a full table is explicit: allowed follows the fail-open/closed policy", () => {
    // One slot, held by a client whose bucket has not refilled.
    const table = new SlotTable(new Int32Array(SLOT_WORDS));
    const rule = gcraRule(5, 60, 0);
    const d = newGcraDecision();
    hashKey("10.0.0.1", 0, 0, KEY);
    expect(take(table, KEY[0]!, KEY[1]!, T0, rule, true, d).allowed).toBe(true);
    hashKey("10.0.0.2", 0, 0, KEY);
    const open = take(table, KEY[0]!, KEY[1]!, T0, rule, true, d);
    expect([open.tableFull, open.allowed]).toEqual([true, true]);
    const closed = take(table, KEY[0]!, KEY[1]!, T0, rule, false, d);
    expect([closed.tableFull, closed.allowed]).toEqual([true, false]);
    // Once the first client's bucket is full again (12 s + rounding to whole seconds), its slot is reused.
    const later = take(table, KEY[0]!, KEY[1]!, T0 + 14_000, rule, false, d);
    expect([later.tableFull, later.allowed]).toEqual([false, true]);
  });
});
