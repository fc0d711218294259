import { describe, expect, test } from "bun:test";
import { parseIp } from "./client.ts";
import {
  hashKey,
  KEY_CLAIMING,
  PROBE_SLOTS_MAX,
  SLOT_WORDS,
  SlotTable,
  STATE_WORDS,
  TABLE_FULL,
  tableWords,
} from "./table.ts";

const T0 = 1_760_000_000_000;
const table = (slots: number) => new SlotTable(new Int32Array(tableWords(slots)));

describe("SlotTable.findOrInsert", () => {
  test("a key inserted once is found again, with the caller's initial state", () => {
    const t = table(16);
    const s = t.findOrInsert(7, 3, T0, 111, 222);
    expect(s).toBe(3); // the start slot is lo & (slots - 1)
    expect([t.load(s, 0), t.load(s, 1), t.load(s, 2), t.load(s, 3)]).toEqual([111, 222, 0, 0]);
    t.store(s, 0, 5);
    expect(t.findOrInsert(7, 3, T0, 999, 999)).toBe(s);
    expect(t.load(s, 0)).toBe(5); // found, not re-initialised
  });

  test("two keys colliding on the same start slot both work and keep separate state", () => {
    const t = table(16);
    // Same lo (so the same start slot), different hi; and one with a different lo but the same slot.
    const a = t.findOrInsert(1, 5, T0, 10, 0);
    const b = t.findOrInsert(2, 5, T0, 20, 0);
    const c = t.findOrInsert(1, 5 + 16, T0, 30, 0);
    expect(new Set([a, b, c]).size).toBe(3);
    expect([
      t.findOrInsert(1, 5, T0, 0, 0),
      t.findOrInsert(2, 5, T0, 0, 0),
      t.findOrInsert(1, 21, T0, 0, 0),
    ]).toEqual([a, b, c]);
    expect([t.load(a, 0), t.load(b, 0), t.load(c, 0)]).toEqual([10, 20, 30]);
  });

  test("a full table says so; after the entries recover, their slots are reclaimed by new keys", () => {
    const t = table(8);
    for (let k = 1; k <= 8; k++) {
      const s = t.findOrInsert(k, k, T0, 0, 0);
      expect(s).toBeGreaterThanOrEqual(0);
      t.extendFreeAt(s, T0 / 1000 + 60); // live for a minute
    }
    expect(t.findOrInsert(100, 0, T0, 0, 0)).toBe(TABLE_FULL);
    expect(t.findOrInsert(100, 0, T0 + 59_000, 0, 0)).toBe(TABLE_FULL);
    expect(t.liveCount(T0)).toBe(8);
    // The old keys are all still there.
    for (let k = 1; k <= 8; k++) expect(t.holds(t.findOrInsert(k, k, T0, 0, 0), k, k)).toBe(true);

    const later = T0 + 60_000;
    expect(t.liveCount(later)).toBe(0);
    // Key 100 starts at slot 0, which key 8 (lo 8 & 7 = 0) held: it takes it over, fresh.
    expect(t.holds(0, 8, 8)).toBe(true);
    const s = t.findOrInsert(100, 0, later, 42, 0);
    expect(s).toBe(0);
    expect(t.holds(0, 100, 0)).toBe(true);
    expect(t.holds(0, 8, 8)).toBe(false);
    expect(t.load(s, 0)).toBe(42);
    expect(t.liveCount(later)).toBe(1);
  });

  test("reclaim only takes slots whose freeAtSec has passed, and never moves freeAtSec back", () => {
    const t = table(2);
    const a = t.findOrInsert(1, 0, T0, 0, 0);
    const b = t.findOrInsert(2, 0, T0, 0, 0);
    t.extendFreeAt(a, T0 / 1000 + 10);
    t.extendFreeAt(b, T0 / 1000 + 100);
    t.extendFreeAt(b, T0 / 1000 + 20); // an older writer: ignored
    expect(t.freeAtSec(b)).toBe(T0 / 1000 + 100);
    expect(t.findOrInsert(3, 0, T0 + 9_000, 0, 0)).toBe(TABLE_FULL);
    expect(t.findOrInsert(3, 0, T0 + 10_000, 0, 0)).toBe(a);
    expect(t.holds(a, 1, 0)).toBe(false);
    // Key 3's new entry has its insert grace (2 s) and b is live until +100 s.
    expect(t.findOrInsert(4, 0, T0 + 11_000, 0, 0)).toBe(TABLE_FULL);
    expect(t.findOrInsert(4, 0, T0 + 12_000, 0, 0)).toBe(a);
  });

  test("a new entry is not reclaimable before its owner had a chance to update it", () => {
    const t = table(1);
    expect(t.findOrInsert(1, 0, T0, 0, 0)).toBe(0);
    expect(t.findOrInsert(2, 0, T0, 0, 0)).toBe(TABLE_FULL);
    expect(t.findOrInsert(2, 0, T0 + 2_000, 0, 0)).toBe(0);
  });

  test("the probe is bounded: a key whose window is taken is refused even if other slots are free", () => {
    const t = table(PROBE_SLOTS_MAX * 4);
    for (let i = 0; i < PROBE_SLOTS_MAX; i++) {
      const s = t.findOrInsert(1 + i, 0, T0, 0, 0);
      expect(s).toBe(i);
      t.extendFreeAt(s, T0 / 1000 + 60);
    }
    expect(t.findOrInsert(999, 0, T0, 0, 0)).toBe(TABLE_FULL);
    expect(t.findOrInsert(999, PROBE_SLOTS_MAX, T0, 0, 0)).toBe(PROBE_SLOTS_MAX);
  });

  test("a slot left mid-claim (a crashed claimer) is skipped, not waited on forever", () => {
    const words = new Int32Array(tableWords(4));
    words[0] = KEY_CLAIMING;
    const t = new SlotTable(words);
    expect(t.findOrInsert(5, 0, T0, 0, 0)).toBe(1);
    expect(t.findOrInsert(5, 0, T0, 0, 0)).toBe(1);
  });

  test("the table size must be SLOT_WORDS x a power of two", () => {
    expect(() => new SlotTable(new Int32Array(SLOT_WORDS * 3))).toThrow(RangeError);
    expect(() => new SlotTable(new Int32Array(SLOT_WORDS * 4 + 1))).toThrow(RangeError);
    expect(new SlotTable(new Int32Array(SLOT_WORDS * 4)).slotCount).toBe(4);
  });
});

describe("CAS updates from two processes (two views over one SharedArrayBuffer)", () => {
  /** One "process": a load, a pause (where the other may run), then a CAS; retries on failure. */
  function* increments(t: SlotTable, slot: number, n: number): Generator<void, number> {
    let retries = 0;
    for (let done = 0; done < n; ) {
      const v = t.load(slot, 0);
      yield;
      if (t.cas(slot, 0, v, v + 1)) done++;
      else retries++;
    }
    return retries;
  }

  test("interleaved read-modify-CAS loses no update", () => {
    const sab = new SharedArrayBuffer(tableWords(8) * 4);
    const p1 = new SlotTable(new Int32Array(sab));
    const p2 = new SlotTable(new Int32Array(sab));
    const slot = p1.findOrInsert(9, 9, T0, 0, 0);
    expect(p2.findOrInsert(9, 9, T0, 0, 0)).toBe(slot); // the other process sees the same entry
    const N = 5_000;
    const a = increments(p1, slot, N);
    const b = increments(p2, slot, N);
    // A fixed pseudo-random schedule (xorshift) so the run is the same every time.
    let x = 0x9e3779b9;
    let ra: IteratorResult<void, number> | null = null;
    let rb: IteratorResult<void, number> | null = null;
    while (!ra?.done || !rb?.done) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      if ((x & 1) === 0 && !ra?.done) ra = a.next();
      else if (!rb?.done) rb = b.next();
      else ra = a.next();
    }
    expect(p1.load(slot, 0)).toBe(2 * N);
    // The schedule really interleaved: both sides lost races and retried.
    expect(ra.value).toBeGreaterThan(0);
    expect(rb.value).toBeGreaterThan(0);
  });

  test("a plain (non-CAS) read-modify-write under the same schedule does lose updates", () => {
    // The control for the test above: without the CAS the interleaving drops increments.
    const sab = new SharedArrayBuffer(tableWords(8) * 4);
    const p1 = new SlotTable(new Int32Array(sab));
    const p2 = new SlotTable(new Int32Array(sab));
    const slot = p1.findOrInsert(9, 9, T0, 0, 0);
    let v1 = 0;
    let v2 = 0;
    for (let i = 0; i < 100; i++) {
      v1 = p1.load(slot, 0);
      v2 = p2.load(slot, 0);
      p1.store(slot, 0, v1 + 1);
      p2.store(slot, 0, v2 + 1);
    }
    expect(p1.load(slot, 0)).toBe(100);
  });

  test("64-bit state: load64/cas64 move both words at once", () => {
    const sab = new SharedArrayBuffer(tableWords(4) * 4);
    const p1 = new SlotTable(new Int32Array(sab));
    const p2 = new SlotTable(new Int32Array(sab));
    const slot = p1.findOrInsert(1, 1, T0, 0, 0);
    const big = 0x1234_5678_9abc_def0n;
    expect(p1.cas64(slot, 0, 0n, big)).toBe(true);
    expect(p2.load64(slot, 0)).toBe(big);
    // Little-endian: word 0 is the low half, word 1 the high half.
    expect(p2.load(slot, 0)).toBe(0x9abc_def0 | 0);
    expect(p2.load(slot, 1)).toBe(0x1234_5678);
    expect(p2.cas64(slot, 0, 0n, 1n)).toBe(false);
    expect(p2.cas64(slot, 0, big, big + 1n)).toBe(true);
    expect(p1.load64(slot, 0)).toBe(big + 1n);
    expect(() => p1.cas64(slot, 1, 0n, 0n)).toThrow(RangeError);
    expect(() => p1.load64(slot, STATE_WORDS)).toThrow(RangeError);
    const unaligned = new SlotTable(new Int32Array(sab, 4, tableWords(2)));
    expect(() => unaligned.load64(0, 0)).toThrow(RangeError);
  });
});

describe("hashKey", () => {
  const out = new Int32Array(2);
  const key = (ip: string | Uint32Array, rule = 0, seed = 0) => [...hashKey(ip, rule, seed, out)];

  test("the same client and rule always give the same key; rule, address and seed all change it", () => {
    expect(key("10.0.0.1")).toEqual(key("10.0.0.1"));
    expect(key("10.0.0.1", 1)).not.toEqual(key("10.0.0.1", 0));
    expect(key("10.0.0.2")).not.toEqual(key("10.0.0.1"));
    expect(key("10.0.0.1", 0, 1)).not.toEqual(key("10.0.0.1", 0, 0));
    const words = parseIp("10.0.0.1")!;
    expect(key(words)).toEqual(key(words.slice()));
    // The words form makes a dual-stack peer and its IPv4 spelling one client.
    expect(key(parseIp("::ffff:10.0.0.1")!)).toEqual(key(words));
  });

  test("keys of 100,000 addresses: no 64-bit collisions, hi never 0 or KEY_CLAIMING, start slots spread evenly", () => {
    const seen = new Set<string>();
    const SLOTS = 1024;
    const perSlot = new Uint32Array(SLOTS);
    const w = new Uint32Array(4);
    w[0] = 0x20010db8;
    let reserved = 0;
    for (let i = 0; i < 100_000; i++) {
      w[3] = i; // consecutive IPv6 addresses: the worst case for a weak hash
      const [hi, lo] = key(w, 3);
      if (hi === 0 || hi === KEY_CLAIMING) reserved++;
      seen.add(`${hi},${lo}`);
      perSlot[lo! & (SLOTS - 1)]!++;
    }
    expect(reserved).toBe(0);
    expect(seen.size).toBe(100_000);
    // ~97.7 per slot expected; a uniform hash stays within +-50% everywhere (sd ~ 9.9).
    expect(Math.max(...perSlot)).toBeLessThan(147);
    expect(Math.min(...perSlot)).toBeGreaterThan(48);
  });
});
