// A fixed-size, lock-free open-addressing hash table over an Int32Array the caller gives: a local
// array in tests, a view of the shared mmap region in production, so every worker sees the same
// WAF state. Every access goes through Atomics (load / store / compareExchange); nothing blocks.
//
// Slot layout, SLOT_WORDS = 8 int32 words (32 bytes: two slots per 64-byte cache line):
//   [0] keyHi      0 = never used; KEY_CLAIMING while an insert/reclaim is writing the slot;
//                  anything else = the published high word of the 64-bit key.
//   [1] keyLo      low word of the key (any value).
//   [2] freeAtSec  seconds (ToInt32 of nowMs / 1000, compared with wrap-around arithmetic) from
//                  which the entry's state has fully recovered: a fresh entry would behave the same,
//                  so the slot may be handed to another key. Owners push it forward (extendFreeAt).
//   [3] reserved   0.
//   [4..7] state   STATE_WORDS words whose meaning belongs to the user (ratelimit.ts: word 0 = TAT;
//                  burst.ts: words 0-1). Reclaim writes the caller's initial values into 0 and 1 and
//                  zeroes 2 and 3.
//
// Lookup: linear probing from hash(lo) over at most PROBE_SLOTS_MAX slots. Slots never go back to
// empty (reclaim replaces the key in place), so an empty slot ends every chain: a key absent before
// the first empty slot is absent. A full table is an explicit TABLE_FULL result, so the caller can
// fail open or closed and count it.
//
// Races, and why they are safe:
// - Two processes insert the same new key at once: both CAS the same empty slot from 0; one wins,
//   the other sees KEY_CLAIMING, waits (bounded) for the publish, and then matches the key. If they
//   had chosen different slots (one reclaims an earlier stale slot while the other saw it still
//   taken), the key exists twice; lookups find the first one, the other gets no more traffic and is
//   reclaimed when its freeAtSec passes. Worst case: the few requests of that instant count against
//   a second, fresh bucket.
// - A process holds a slot index from findOrInsert while another reclaims the slot for a new key:
//   the holder's state CAS then fails (the reclaim rewrote the state) or lands on the new entry.
//   Users re-check the key after a failed CAS (holds()), so the worst case is one request counted
//   against the new key's fresh bucket. A slot is only reclaimed after freeAtSec, i.e. after its
//   old key has been idle long enough to be back to a fresh state, so this needs a request from the
//   old key in the very instant of the reclaim.
// - A process that dies between claiming a slot and publishing it leaves the slot KEY_CLAIMING: it
//   is skipped forever (one slot lost per such crash; the claim is a handful of stores long).
//
// Also here: the 64-bit key hash (hashKey), kept next to the table it indexes.

/** Int32 words per slot: key (2), freeAtSec, reserved, STATE_WORDS of state. */
export const SLOT_WORDS = 8;
/** State words per slot available to the table's users. */
export const STATE_WORDS = 4;
/** Offset of state word 0 inside a slot. */
const STATE_BASE = 4;
const KEY_HI = 0;
const KEY_LO = 1;
const FREE_AT = 2;
/**
 * Slots examined for one key before the table counts as full. Linear probing at load factor 0.75
 * needs ~8.5 probes on average for an absent key (Knuth: (1 + 1/(1-a)^2) / 2); 32 slots keep a
 * healthy table from reporting full and bound the worst scan to 1 KiB (16 cache lines).
 */
export const PROBE_SLOTS_MAX = 32;
/**
 * Loads of a KEY_CLAIMING slot before it is treated as another key's. A claim is a few stores
 * long (nanoseconds); 1024 loads (~a few microseconds) outlast it unless the claimer is
 * descheduled, and then the worst case is a duplicate entry (see the header).
 */
export const CLAIM_SPINS_MAX = 1024;
/** Slots a table may have: 2^24 slots are 512 MiB, far beyond any region we map. */
export const TABLE_SLOTS_MAX = 1 << 24;
/** Result of findOrInsert when no slot in the probe window is free or reclaimable. */
export const TABLE_FULL = -1;
/** keyHi of a slot being written by an insert or reclaim; hashKey never produces it. */
export const KEY_CLAIMING = -0x80000000;
/** Grace after an insert before the new entry may be reclaimed, so it is not stolen before its owner updates it. */
const INSERT_GRACE_SEC = 2;
/** Attempts to push freeAtSec forward under contention; losing them all only makes a reclaim early. */
const FREE_AT_ATTEMPTS_MAX = 16;

/** Int32 words needed for a table of `slots` slots (a power of two). */
export function tableWords(slots: number): number {
  return slots * SLOT_WORDS;
}

/** The coarse clock of freeAtSec: ToInt32 of whole seconds, so it wraps every 136 years, harmlessly. */
export function secondsOf(nowMs: number): number {
  return Math.floor(nowMs / 1000) | 0;
}

export class SlotTable {
  readonly slotCount: number;
  private readonly mask: number;
  /** 64-bit view over the same memory for the two-word CAS, null when the array is not 8-aligned. */
  private readonly wide: BigInt64Array | null;

  /** `words.length` must be SLOT_WORDS times a power of two; zeroed memory is an empty table. */
  constructor(readonly words: Int32Array) {
    const slots = words.length / SLOT_WORDS;
    if (!Number.isInteger(slots) || slots < 1 || slots > TABLE_SLOTS_MAX || (slots & (slots - 1)) !== 0) {
      throw new RangeError(`table needs SLOT_WORDS x 2^k words (at most ${TABLE_SLOTS_MAX} slots)`);
    }
    this.slotCount = slots;
    this.mask = slots - 1;
    this.wide =
      words.byteOffset % 8 === 0
        ? new BigInt64Array(words.buffer, words.byteOffset, words.length >> 1)
        : null;
  }

  /**
   * The slot of key (hi, lo), inserting it when absent: into the first empty slot of its chain, or
   * else into the first slot whose freeAtSec has passed (reclaim). A new entry's state words 0 and
   * 1 get init0 and init1. TABLE_FULL when the probe window holds only other live keys.
   */
  findOrInsert(hi: number, lo: number, nowMs: number, init0: number, init1: number): number {
    const w = this.words;
    const nowSec = secondsOf(nowMs);
    // Two passes at most: a lost race for the chosen slot rescans once, then gives up as full.
    for (let pass = 0; pass < 2; pass++) {
      let reclaim = -1;
      let reclaimKey = 0;
      let i = 0;
      for (; i < PROBE_SLOTS_MAX; i++) {
        const slot = (lo + i) & this.mask;
        const b = slot * SLOT_WORDS;
        let h = Atomics.load(w, b + KEY_HI);
        if (h === KEY_CLAIMING) h = this.awaitPublish(b);
        if (h === 0) {
          if (reclaim >= 0) break; // absent from the chain; a stale slot comes first
          if (Atomics.compareExchange(w, b + KEY_HI, 0, KEY_CLAIMING) === 0) {
            this.publish(b, hi, lo, nowSec, init0, init1);
            return slot;
          }
          // Someone claimed it first: possibly for this very key. Look again.
          h = this.awaitPublish(b);
        }
        if (h === hi && this.keyLoIs(b, hi, lo)) return slot;
        // Wrap-around compare: freeAtSec at or before now means the old key's state has recovered.
        if (reclaim < 0 && h !== KEY_CLAIMING && ((nowSec - Atomics.load(w, b + FREE_AT)) | 0) >= 0) {
          reclaim = slot;
          reclaimKey = h;
        }
      }
      if (reclaim < 0) return TABLE_FULL;
      const b = reclaim * SLOT_WORDS;
      // The CAS from the exact key we saw makes one reclaimer win; a changed key means someone
      // else took or refreshed the slot, so scan again.
      if (
        ((nowSec - Atomics.load(w, b + FREE_AT)) | 0) >= 0 &&
        Atomics.compareExchange(w, b + KEY_HI, reclaimKey, KEY_CLAIMING) === reclaimKey
      ) {
        this.publish(b, hi, lo, nowSec, init0, init1);
        return reclaim;
      }
    }
    return TABLE_FULL;
  }

  /** The slot of key (hi, lo), or TABLE_FULL when absent (no insert). */
  find(hi: number, lo: number): number {
    const w = this.words;
    for (let i = 0; i < PROBE_SLOTS_MAX; i++) {
      const slot = (lo + i) & this.mask;
      const b = slot * SLOT_WORDS;
      const h = Atomics.load(w, b + KEY_HI);
      if (h === 0) return TABLE_FULL; // an empty slot ends every chain
      if (h === hi && this.keyLoIs(b, hi, lo)) return slot;
    }
    return TABLE_FULL;
  }

  /**
   * Sets freeAtSec outright, also backwards. Only for an entry with a single writer (the connection
   * cap's per-process entries): its owner knows when the state is back to fresh (count 0).
   */
  setFreeAt(slot: number, freeAtSec: number): void {
    Atomics.store(this.words, slot * SLOT_WORDS + FREE_AT, freeAtSec | 0);
  }

  /** The slot still holds key (hi, lo): re-check after a failed state CAS (see the header). */
  holds(slot: number, hi: number, lo: number): boolean {
    const b = slot * SLOT_WORDS;
    return Atomics.load(this.words, b + KEY_HI) === hi && this.keyLoIs(b, hi, lo);
  }

  /** State word `word` (0..STATE_WORDS-1) of `slot`. */
  load(slot: number, word: number): number {
    return Atomics.load(this.words, slot * SLOT_WORDS + STATE_BASE + word);
  }

  store(slot: number, word: number, value: number): void {
    Atomics.store(this.words, slot * SLOT_WORDS + STATE_BASE + word, value);
  }

  /** Sets state word `word` to `value` if it still holds `expect`; false if another writer got there first. */
  cas(slot: number, word: number, expect: number, value: number): boolean {
    const i = slot * SLOT_WORDS + STATE_BASE + word;
    return Atomics.compareExchange(this.words, i, expect | 0, value | 0) === (expect | 0);
  }

  /**
   * A 64-bit state in state words `word` (low) and `word + 1` (high), `word` even, read in one
   * atomic 64-bit load so a reader never sees one half of an update. Allocates a BigInt; the WAF's
   * own states use one word each (see ratelimit.ts and burst.ts) and do not need it.
   */
  load64(slot: number, word: number): bigint {
    return Atomics.load(this.wide64(), this.wideIndex(slot, word));
  }

  /** 64-bit compare-and-swap of state words `word`, `word + 1` (see load64). */
  cas64(slot: number, word: number, expect: bigint, value: bigint): boolean {
    const e = BigInt.asIntN(64, expect);
    return (
      Atomics.compareExchange(this.wide64(), this.wideIndex(slot, word), e, BigInt.asIntN(64, value)) === e
    );
  }

  /** When the entry's state is fully recovered (seconds, see secondsOf). */
  freeAtSec(slot: number): number {
    return Atomics.load(this.words, slot * SLOT_WORDS + FREE_AT);
  }

  /**
   * Moves freeAtSec forward to `freeAtSec` unless it is already later. Never moves it back, so a
   * slow writer with an older state cannot make the entry look recovered early.
   */
  extendFreeAt(slot: number, freeAtSec: number): void {
    const i = slot * SLOT_WORDS + FREE_AT;
    const want = freeAtSec | 0;
    for (let n = 0; n < FREE_AT_ATTEMPTS_MAX; n++) {
      const cur = Atomics.load(this.words, i);
      if (((cur - want) | 0) >= 0) return;
      if (Atomics.compareExchange(this.words, i, cur, want) === cur) return;
    }
  }

  /** Slots holding a key whose state has not yet recovered (a full scan: for metrics, not per request). */
  liveCount(nowMs: number): number {
    const nowSec = secondsOf(nowMs);
    let n = 0;
    for (let b = 0; b < this.words.length; b += SLOT_WORDS) {
      if (Atomics.load(this.words, b + KEY_HI) === 0) continue;
      if (((nowSec - Atomics.load(this.words, b + FREE_AT)) | 0) < 0) n++;
    }
    return n;
  }

  private keyLoIs(b: number, hi: number, lo: number): boolean {
    // keyLo is written before keyHi is published; re-reading keyHi after keyLo makes the pair one
    // snapshot (a reclaim in between changes keyHi to KEY_CLAIMING first).
    return Atomics.load(this.words, b + KEY_LO) === (lo | 0) && Atomics.load(this.words, b + KEY_HI) === hi;
  }

  private awaitPublish(b: number): number {
    let h = KEY_CLAIMING;
    for (let n = 0; n < CLAIM_SPINS_MAX && h === KEY_CLAIMING; n++) h = Atomics.load(this.words, b + KEY_HI);
    return h;
  }

  /** Fills a claimed slot, then publishes the key: keyHi is written last. */
  private publish(b: number, hi: number, lo: number, nowSec: number, init0: number, init1: number): void {
    const w = this.words;
    Atomics.store(w, b + STATE_BASE, init0);
    Atomics.store(w, b + STATE_BASE + 1, init1);
    Atomics.store(w, b + STATE_BASE + 2, 0);
    Atomics.store(w, b + STATE_BASE + 3, 0);
    Atomics.store(w, b + FREE_AT, (nowSec + INSERT_GRACE_SEC) | 0);
    Atomics.store(w, b + KEY_LO, lo);
    Atomics.store(w, b + KEY_HI, hi);
  }

  private wide64(): BigInt64Array {
    if (this.wide === null) throw new RangeError("64-bit state needs the table's words 8-byte aligned");
    return this.wide;
  }

  private wideIndex(slot: number, word: number): number {
    if ((word & 1) !== 0 || word < 0 || word + 1 >= STATE_WORDS)
      throw new RangeError("64-bit state word must be 0 or 2");
    return (slot * SLOT_WORDS + STATE_BASE + word) >> 1;
  }
}

// ---------------------------------------------------------------------------------------------------
// Keys

/** FNV-1a 32-bit offset basis and prime. */
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
/** Multiplier of the second lane (MurmurHash2's m): independent of FNV's, so the halves do not collide together. */
const LANE2_MUL = 0x5bd1e995;

/** MurmurHash3's 32-bit finalizer: every input bit affects every output bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) | 0;
}

/**
 * The 64-bit table key of (client, rule) into out[0] (hi) and out[1] (lo); returns out. `ip` is the
 * client's address as IpWords (core/waf/client.ts; one key for "::ffff:1.2.3.4" and "1.2.3.4") or as
 * text (hashed as given: the caller canonicalises). `ruleIndex` tells a client's buckets apart; any
 * int32 (burst.ts uses its own). `seed` is a per-region secret (e.g. random, stored in the region
 * header so every worker agrees): with a public hash, someone holding many addresses (an IPv6 /64)
 * could pick ones that share a probe window and make the table look full. No allocation.
 * hi is never 0 or KEY_CLAIMING (those mark slot states); both words together are never 0.
 */
export function hashKey(
  ip: string | Uint32Array,
  ruleIndex: number,
  seed: number,
  out: Int32Array,
): Int32Array {
  let a = (FNV_OFFSET ^ seed) | 0;
  let b = (seed + 0x9e3779b9) | 0;
  if (typeof ip === "string") {
    for (let i = 0; i < ip.length; i++) {
      const c = ip.charCodeAt(i);
      a = Math.imul(a ^ c, FNV_PRIME);
      b = Math.imul(b ^ c, LANE2_MUL);
      b ^= b >>> 15;
    }
  } else {
    for (let i = 0; i < ip.length; i++) {
      const v = ip[i]! | 0;
      // FNV over the word's four bytes, big-endian: the same bytes as the address in network order.
      a = Math.imul(a ^ (v >>> 24), FNV_PRIME);
      a = Math.imul(a ^ ((v >>> 16) & 0xff), FNV_PRIME);
      a = Math.imul(a ^ ((v >>> 8) & 0xff), FNV_PRIME);
      a = Math.imul(a ^ (v & 0xff), FNV_PRIME);
      b = Math.imul(b ^ v, LANE2_MUL);
      b ^= b >>> 15;
    }
  }
  a = Math.imul(a ^ ruleIndex, FNV_PRIME);
  b = Math.imul(b ^ ruleIndex, LANE2_MUL);
  // Cross-mix so each half depends on both lanes, then finalise.
  let hi = fmix32((a + Math.imul(b, 0x27d4eb2d)) | 0);
  const lo = fmix32((b ^ (a >>> 7)) | 0);
  if (hi === 0 || hi === KEY_CLAIMING) hi = 1;
  out[0] = hi;
  out[1] = lo;
  return out;
}
