import { describe, expect, test } from "bun:test";
import {
  BURST_BASELINE_WORD,
  BURST_KEY_RULE,
  burstAdmit,
  burstBaseline,
  burstDecide,
  burstInitWord,
  burstRule,
  newBurstDecision,
} from "./burst.ts";
import { hashKey, SlotTable, tableWords } from "./table.ts";

const WINDOW_MS = 60_000;
/** Window 0 starts here (a multiple of the window, Date.now() scale). */
const W0 = 29_333_333 * WINDOW_MS;
const rule = burstRule(60, 10);

/** One client in a shared table, driven window by window. */
class Client {
  readonly table = new SlotTable(new Int32Array(tableWords(16)));
  readonly key = hashKey("203.0.113.7", BURST_KEY_RULE, 0, new Int32Array(2));
  readonly d = newBurstDecision();

  /** `n` requests spread evenly over window `w`, from fraction `from` of it on; returns how many were refused. */
  window(w: number, n: number, from = 0): number {
    let refused = 0;
    for (let i = 0; i < n; i++) {
      const t = W0 + w * WINDOW_MS + from * WINDOW_MS + ((i + 0.5) * (1 - from) * WINDOW_MS) / n;
      if (burstAdmit(this.table, this.key[0]!, this.key[1]!, t, rule, true, this.d).blocked) refused++;
    }
    return refused;
  }

  /** The index of the first refused request in window `w` when sending `n`, or -1. */
  firstRefused(w: number, n: number): number {
    for (let i = 0; i < n; i++) {
      const t = W0 + w * WINDOW_MS + ((i + 0.5) * WINDOW_MS) / n;
      if (burstAdmit(this.table, this.key[0]!, this.key[1]!, t, rule, true, this.d).blocked) return i;
    }
    return -1;
  }

  baseline() {
    const slot = this.table.findOrInsert(this.key[0]!, this.key[1]!, W0, 0, 0);
    return burstBaseline(this.table.load(slot, BURST_BASELINE_WORD));
  }
}

describe("burst detection", () => {
  test("a steady client at 20/min over 10 windows is never refused, and its baseline is 20", () => {
    const c = new Client();
    let refused = c.window(0, 5, 0.75); // arrives for the last quarter of window 0
    for (let w = 1; w <= 10; w++) refused += c.window(w, 20);
    expect(refused).toBe(0);
    c.window(11, 1);
    expect(c.baseline()).toEqual({ baseline: 20, established: true });
  });

  test("a client at 20/min that jumps to 300/min is refused within that window, for the rest of it", () => {
    const c = new Client();
    c.window(0, 5, 0.75);
    for (let w = 1; w <= 10; w++) c.window(w, 20);
    // Threshold 10 x baseline 20 = 200: the 201st request is the first refused (index 200).
    expect(c.firstRefused(11, 300)).toBe(200);
    expect(c.d.count).toBe(201);
    // ...and every later request in the window too, even at a slow pace.
    expect(c.window(11, 0)).toBe(0);
    for (let i = 0; i < 5; i++) {
      const t = W0 + 11 * WINDOW_MS + 59_000 + i;
      expect(burstAdmit(c.table, c.key[0]!, c.key[1]!, t, rule, true, c.d).blocked).toBe(true);
    }
    // The next window is judged afresh; the spike (206 counted, refused ones included) feeds the EMA.
    expect(c.window(12, 20)).toBe(0);
    expect(c.d.baseline).toBeCloseTo(20 * 0.875 + 206 * 0.125, 2);
  });

  test("a brand-new client is not refused before it has a baseline: its first two windows are free", () => {
    // Decision: the first (partial) window is ignored, the next (full) one seeds the baseline.
    const c = new Client();
    expect(c.window(0, 150, 0.5)).toBe(0); // 300/min from mid-window
    expect(c.d.established).toBe(false);
    expect(c.window(1, 300)).toBe(0);
    expect(c.d.established).toBe(false);
    expect(c.window(2, 300)).toBe(0);
    expect(c.d.established).toBe(true);
    expect(c.d.baseline).toBe(300);
    // Its 300/min is now its normal; ten times that is not.
    expect(c.firstRefused(3, 4000)).toBe(3000);
  });

  test("a partial first window does not seed a low baseline that would refuse a steady client", () => {
    const c = new Client();
    c.window(0, 2, 0.9); // 2 requests in the last 6 s of window 0 (steady 20/min)
    // With a stricter threshold the seeding matters: 2 x 5 = 10 < 20 would refuse.
    const strict = burstRule(60, 5);
    let refused = 0;
    for (let w = 1; w <= 5; w++) {
      for (let i = 0; i < 20; i++) {
        const t = W0 + w * WINDOW_MS + ((i + 0.5) * WINDOW_MS) / 20;
        if (burstAdmit(c.table, c.key[0]!, c.key[1]!, t, strict, true, c.d).blocked) refused++;
      }
    }
    expect(refused).toBe(0);
  });

  test("an idle client's baseline decays by 0.875 per empty window, until it counts as new again", () => {
    const c = new Client();
    c.window(0, 5, 0.75);
    for (let w = 1; w <= 10; w++) c.window(w, 20);
    // Silent for windows 11-14; back in window 15: the close of 10 plus 4 empty windows.
    c.window(15, 1);
    expect(c.d.baseline).toBeCloseTo(20 * 0.875 ** 4, 2); // 11.7: trigger at 117
    // 200 more in this window would pass against the old 20 (trigger 200); against 11.7 the
    // 118th request of the window (1 + index 116) is the first over 117.2.
    expect(c.firstRefused(15, 200)).toBe(116);

    const quiet = new Client();
    quiet.window(0, 5, 0.75);
    for (let w = 1; w <= 10; w++) quiet.window(w, 20);
    // 20 x 0.875^k < 1 from k = 23: after that the baseline is gone and the client is new again.
    quiet.window(40, 1);
    expect(quiet.d.established).toBe(false);
    expect(quiet.window(40, 500)).toBe(0); // a returning client's page load is not a "burst"
    // Window 40 was watched from its start, so it seeds the new baseline (1 + 500 requests).
    expect(quiet.window(41, 20)).toBe(0);
    expect(quiet.d).toMatchObject({ established: true, baseline: 501 });
  });

  test("the entry becomes reclaimable once the baseline would have decayed away", () => {
    const c = new Client();
    c.window(0, 5, 0.75);
    for (let w = 1; w <= 10; w++) c.window(w, 20);
    const slot = c.table.findOrInsert(c.key[0]!, c.key[1]!, W0, 0, 0);
    // Baseline 20 after window 10 closes; below 1 after 23 more windows: reclaimable from window 34.
    const freeAtSec = c.table.freeAtSec(slot);
    expect(freeAtSec * 1000).toBeGreaterThan(W0 + 33 * WINDOW_MS);
    expect(freeAtSec * 1000).toBeLessThanOrEqual(W0 + 34 * WINDOW_MS + 1000);
  });

  test("the pure step: counts within a window, rolls at the boundary, saturates the count", () => {
    const d = newBurstDecision();
    let a = burstInitWord(W0, rule);
    let b = 0;
    for (let i = 0; i < 3; i++) {
      burstDecide(a, b, W0 + i, rule, d);
      a = d.newCountWord;
    }
    expect([d.count, d.rolled]).toEqual([3, false]);
    burstDecide(a, b, W0 + WINDOW_MS, rule, d);
    expect([d.count, d.rolled, d.established]).toEqual([1, true, false]);
    a = d.newCountWord;
    b = d.newBaselineWord;
    for (let i = 0; i < 70_000; i++) {
      burstDecide(a, b, W0 + WINDOW_MS + 1, rule, d);
      a = d.newCountWord;
    }
    expect(d.count).toBe(0xffff);
  });

  test("a full table: blocked follows the fail-open/closed policy", () => {
    const table = new SlotTable(new Int32Array(tableWords(1)));
    const d = newBurstDecision();
    const k1 = hashKey("198.51.100.1", BURST_KEY_RULE, 0, new Int32Array(2));
    const k2 = hashKey("198.51.100.2", BURST_KEY_RULE, 0, new Int32Array(2));
    expect(burstAdmit(table, k1[0]!, k1[1]!, W0, rule, true, d).tableFull).toBe(false);
    expect(burstAdmit(table, k2[0]!, k2[1]!, W0, rule, true, d)).toMatchObject({
      tableFull: true,
      blocked: false,
    });
    expect(burstAdmit(table, k2[0]!, k2[1]!, W0, rule, false, d)).toMatchObject({
      tableFull: true,
      blocked: true,
    });
  });
});
