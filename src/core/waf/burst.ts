// Burst detection per client: requests are counted in fixed windows (window index =
// floor(nowMs / windowMs), 60 s by default); when a window closes, baseline = old x 0.875 +
// count x 0.125 (the spec's EMA). Once a baseline is established, a client whose count in the
// current window exceeds baseline x threshold is blocked for the rest of that window: the count only
// grows within a window, so the first refusal lasts until the window rolls over.
//
// Why 0.875: the newest window weighs 1/8, and a window's weight halves every ln 2 / ln(8/7) = 5.2
// windows (5.2 minutes at 60 s). A client steady at 20/min for an hour has baseline 20; a spike to
// 300/min at threshold 10 (trigger 200) is refused from its 201st request in that minute.
//
// When is a baseline established? Decision: after ONE FULL window has been observed.
//   - NEW: the client's first window is partial (it arrived mid-window), so its count is ignored:
//     seeding from it would set a too-low baseline (3 requests in the last 10 s of a window at a
//     steady 20/min) and refuse the same steady client in the next window.
//   - SEEDING: the next window in which the client is seen was watched from its start; when it
//     closes, baseline = its count (an EMA seeded with its first sample, not with 0: seeding with 0
//     would leave a steady client at 1/8 of its true rate for the first windows).
//   - EMA: established; every later close applies the EMA.
// A brand-new client is therefore never refused during its first two windows, whatever its rate
// (burst detection finds changes; absolute rates are the rate limits' job). Windows in which the
// client sent nothing count as zero: after a gap of g windows the baseline is multiplied by
// 0.875^(g-1) on top of the close. A baseline that decays below BURST_BASELINE_MIN (one request per
// window) means the client went quiet: it goes back to SEEDING, so someone returning after an
// idle hour is not refused by a baseline of 0.02.
//
// State: two int32 words in the shared table (table.ts), both updated lock-free:
//   word 0  bits 31-16: window index mod 2^16 (45 days of 60 s windows before the tag repeats)
//           bits 15-0:  requests in that window, saturating at 65535
//   word 1  bits 31-30: phase (NEW 0, SEEDING 1, EMA 2)
//           bits 29-0:  baseline in requests per window, fixed point x 256 (up to 4.19M)
// Every request CASes word 0 (count + 1, or a new window with count 1). The one process whose CAS
// rolls the window computes the new baseline from the words it read and stores word 1; nobody else
// writes word 1. A request in the new window that reads word 1 before that store uses the previous
// baseline once; two rolls racing would need one process paused between two instructions for a
// whole window.

import { type SlotTable, secondsOf, TABLE_FULL } from "./table.ts";

/** spec: baseline = old * 0.875 + current * 0.125. */
export const BURST_DECAY = 0.875;
/** Spec default burst_threshold. */
export const BURST_THRESHOLD_DEFAULT = 10;
/** Spec window: 60 s (waf.json burst_window_sec, our addition). */
export const BURST_WINDOW_SEC_DEFAULT = 60;
/** Below one request per window on average, a client is idle: not established, reclaimable. */
export const BURST_BASELINE_MIN = 1;
/** Requests counted per window before the count saturates (16 bits of word 0). */
export const BURST_COUNT_MAX = 0xffff;
/**
 * The hashKey rule index of a client's burst entry: rate-limit rules use 0, 1, ...; this cannot
 * collide with one.
 */
export const BURST_KEY_RULE = -1;
/** CAS attempts on word 0 before the request is judged on the last read without being counted. */
export const BURST_CAS_ATTEMPTS_MAX = 64;
export const BURST_COUNT_WORD = 0;
export const BURST_BASELINE_WORD = 1;

const PHASE_NEW = 0;
const PHASE_SEEDING = 1;
const PHASE_EMA = 2;
const TAG_MASK = 0xffff;
const BASELINE_ONE = 256;
const BASELINE_FP_MAX = 0x3fffffff;
/** ln(1 / 0.875): windows to decay by a factor f are ln(f) / this. */
const LN_DECAY_INV = Math.log(1 / BURST_DECAY);

export interface BurstRule {
  readonly windowMs: number;
  /** Refuse when count > baseline x threshold. */
  readonly threshold: number;
}

export function burstRule(windowSec: number, threshold: number): BurstRule {
  if (!(windowSec >= 1) || !(threshold > 1)) throw new RangeError("window >= 1 s and threshold > 1");
  return Object.freeze({ windowMs: windowSec * 1000, threshold });
}

/** Mutable, reused per request (newBurstDecision). */
export interface BurstDecision {
  blocked: boolean;
  /** Requests in the current window, this one included. */
  count: number;
  /** Requests per window the client is judged against; 0 until established. */
  baseline: number;
  established: boolean;
  /** Word 0 and word 1 to store; word 1 only when `rolled`. */
  newCountWord: number;
  newBaselineWord: number;
  rolled: boolean;
  /** When the entry would be back to a fresh state if the client stopped now (reclaim). */
  freeAtMs: number;
  /** burstAdmit only: no table slot; `blocked` is then !failOpen. */
  tableFull: boolean;
}

export function newBurstDecision(): BurstDecision {
  return {
    blocked: false,
    count: 0,
    baseline: 0,
    established: false,
    newCountWord: 0,
    newBaselineWord: 0,
    rolled: false,
    freeAtMs: 0,
    tableFull: false,
  };
}

/** Word 0 of a new entry: the current window, no requests yet. Word 1 of a new entry is 0 (NEW). */
export function burstInitWord(nowMs: number, rule: BurstRule): number {
  return ((Math.floor(nowMs / rule.windowMs) & TAG_MASK) << 16) | 0;
}

/** One request against state words (countWord, baselineWord): pure, writes `out` and returns it. */
export function burstDecide(
  countWord: number,
  baselineWord: number,
  nowMs: number,
  rule: BurstRule,
  out: BurstDecision,
): BurstDecision {
  const window = Math.floor(nowMs / rule.windowMs);
  const tag = window & TAG_MASK;
  const count = countWord & 0xffff;
  const gap = (tag - (countWord >>> 16)) & TAG_MASK;
  let phase = baselineWord >>> 30;
  let fp = baselineWord & BASELINE_FP_MAX;
  let newCount: number;
  if (gap === 0) {
    newCount = count < BURST_COUNT_MAX ? count + 1 : count;
    out.rolled = false;
  } else {
    newCount = 1;
    out.rolled = true;
    // Windows after the closing one, until now, saw nothing.
    const idle = gap === 1 ? 1 : BURST_DECAY ** (gap - 1);
    if (phase === PHASE_NEW) {
      phase = PHASE_SEEDING;
      fp = 0;
    } else if (phase === PHASE_SEEDING) {
      phase = PHASE_EMA;
      fp = Math.round(count * BASELINE_ONE * idle);
    } else {
      fp = Math.round((fp * BURST_DECAY + count * BASELINE_ONE * (1 - BURST_DECAY)) * idle);
    }
    if (phase === PHASE_EMA && fp < BURST_BASELINE_MIN * BASELINE_ONE) {
      phase = PHASE_SEEDING; // went quiet: the current window (watched from its start) seeds again
      fp = 0;
    }
    if (fp > BASELINE_FP_MAX) fp = BASELINE_FP_MAX;
  }
  const established = phase === PHASE_EMA;
  const baseline = established ? fp / BASELINE_ONE : 0;
  out.count = newCount;
  out.baseline = baseline;
  out.established = established;
  out.blocked = established && newCount > baseline * rule.threshold;
  out.newCountWord = (tag << 16) | newCount | 0;
  out.newBaselineWord = (phase << 30) | fp | 0;
  out.tableFull = false;
  // Reclaim: what the baseline would be once this window closes, and how many quiet windows it
  // then takes to fall below BURST_BASELINE_MIN (after which a fresh entry behaves the same).
  const windowEndMs = (window + 1) * rule.windowMs;
  let next = 0;
  if (phase === PHASE_SEEDING) next = newCount;
  else if (phase === PHASE_EMA) next = baseline * BURST_DECAY + newCount * (1 - BURST_DECAY);
  const quietWindows =
    next < BURST_BASELINE_MIN ? 0 : Math.floor(Math.log(next / BURST_BASELINE_MIN) / LN_DECAY_INV) + 1;
  out.freeAtMs = windowEndMs + quietWindows * rule.windowMs;
  return out;
}

/** The baseline and phase stored in word 1 (for metrics and tests). */
export function burstBaseline(baselineWord: number): { baseline: number; established: boolean } {
  const established = baselineWord >>> 30 === PHASE_EMA;
  return { baseline: established ? (baselineWord & BASELINE_FP_MAX) / BASELINE_ONE : 0, established };
}

/**
 * One request of client key (hi, lo) (hashKey with BURST_KEY_RULE) against the shared table. A full
 * table sets out.tableFull and blocked = !failOpen (the waf.json "table_full" policy).
 */
export function burstAdmit(
  table: SlotTable,
  hi: number,
  lo: number,
  nowMs: number,
  rule: BurstRule,
  failOpen: boolean,
  out: BurstDecision,
): BurstDecision {
  let slot = table.findOrInsert(hi, lo, nowMs, burstInitWord(nowMs, rule), 0);
  for (let n = 0; n < BURST_CAS_ATTEMPTS_MAX && slot !== TABLE_FULL; n++) {
    const a = table.load(slot, BURST_COUNT_WORD);
    const b = table.load(slot, BURST_BASELINE_WORD);
    burstDecide(a, b, nowMs, rule, out);
    if (table.cas(slot, BURST_COUNT_WORD, a, out.newCountWord)) {
      if (out.rolled) table.store(slot, BURST_BASELINE_WORD, out.newBaselineWord);
      table.extendFreeAt(slot, (secondsOf(out.freeAtMs) + 1) | 0);
      return out;
    }
    if (!table.holds(slot, hi, lo)) {
      slot = table.findOrInsert(hi, lo, nowMs, burstInitWord(nowMs, rule), 0);
    }
  }
  if (slot === TABLE_FULL) {
    out.blocked = !failOpen;
    out.tableFull = true;
    out.count = 0;
    out.baseline = 0;
    out.established = false;
  }
  // Contention exhausted: judged on the last read, not counted (one request in a storm of them).
  return out;
}
