// Rate limiting per (client, rule): a token bucket of capacity = limit.requests + burst that refills
// limit.requests per limit.period_sec, computed as GCRA (the generic cell rate algorithm). GCRA is
// the same bucket with ONE number of state, the theoretical arrival time (TAT): the instant the
// bucket would be full again if nothing else arrived. A request is allowed when TAT - now <=
// (capacity - 1) x interval, and then TAT = max(TAT, now) + interval. One number means one
// compareExchange on the shared table: no lock, no torn read.
//
// Units. TAT is stored as an int32 of "ticks" of this rule: interval = periodMs / requests is
// intervalTicks = ceil(interval in ms) ticks, so a tick is at most 1 ms (millisecond precision) and
// the interval is an exact whole number of ticks (no drift: 7 per 60 s is 7 per 60 s, not 7 per
// 60.004 s as whole-ms rounding would give). Ticks are ToInt32(floor(nowMs / tickMs)) and compared
// with wrap-around arithmetic ((tat - now) | 0), so no base epoch is needed: any clock shared by all
// workers (Date.now()) works. The ring is 2^32 ticks: at least 24.8 days for rules up to 1000
// requests/s (tick > 0.5 ms), 4.97 days at RATE_PER_SEC_MAX (tick 0.1 ms). A live bucket is never
// more than capacity x interval ahead of now (< AHEAD_TICKS_MAX = 2^30), so a difference that is
// negative or larger than that is a bucket left alone for long: it reads as full. The one thing the
// wrap can do: an entry untouched (and not reclaimed) for a whole ring lands, with probability
// aheadMaxTicks / 2^32 (1.7e-5 for 100/60 s + burst 20), inside the live band, and that client
// finds its bucket partly used once: at most one period of stricter limiting.

import { type SlotTable, secondsOf, TABLE_FULL } from "./table.ts";

/** Fastest rule per client: 10,000 requests/s, so a tick is >= 0.1 ms and the TAT ring >= 4.97 days. */
export const RATE_PER_SEC_MAX = 10_000;
/**
 * Largest capacity x interval in ticks. Below 2^30 so (tat - now) | 0 of a live bucket never wraps
 * and the band up to 2^31 is left to recognise stale values; 2^30 ticks of <= 1 ms is >= 12.4 days.
 */
export const AHEAD_TICKS_MAX = 2 ** 30;
/**
 * CAS attempts on one bucket before giving up. Each failure means another worker updated the same
 * (client, rule) bucket in between: 64 in a row is a client hammering from many connections, and it
 * is refused (counted as limited) rather than spun on.
 */
export const CAS_ATTEMPTS_MAX = 64;
/** The table state word holding the TAT. */
export const TAT_WORD = 0;

/** A rule compiled to ticks (gcraRule). */
export interface GcraRule {
  /** Tokens when full: requests + burst. */
  readonly capacity: number;
  readonly tickMs: number;
  /** One token's refill time, in ticks. */
  readonly intervalTicks: number;
  /** (capacity - 1) x interval: how far ahead TAT may be for a request to pass. */
  readonly toleranceTicks: number;
  /** capacity x interval: the most TAT can be ahead of now. */
  readonly aheadMaxTicks: number;
}

/** Mutable so the hot path can reuse one object (newGcraDecision) instead of allocating per request. */
export interface GcraDecision {
  allowed: boolean;
  /** The TAT to store when allowed (the old one when refused: a refused request takes no token). */
  newTat: number;
  /** 0 when allowed; else ms until one token is back (the caller rounds up to whole seconds, >= 1). */
  retryAfterMs: number;
  /** Whole tokens left after this request. */
  remainingTokens: number;
  /** Tokens in use / capacity after this request, 0..1: compare with logging.near_limit_threshold. */
  usedFraction: number;
  /** ms until the bucket is full again: an entry this idle is reclaimable. */
  fullInMs: number;
  /** take() only: the table had no slot for this key; `allowed` then follows its failOpen argument. */
  tableFull: boolean;
}

export function newGcraDecision(): GcraDecision {
  return {
    allowed: false,
    newTat: 0,
    retryAfterMs: 0,
    remainingTokens: 0,
    usedFraction: 0,
    fullInMs: 0,
    tableFull: false,
  };
}

/** Why (requests, periodSec, burst) cannot be a rule, or null. For config validation. */
export function gcraProblem(requests: number, periodSec: number, burst: number): string | null {
  if (!Number.isInteger(requests) || requests < 1) return "requests must be an integer >= 1";
  if (!Number.isInteger(periodSec) || periodSec < 1) return "period_sec must be an integer >= 1";
  if (!Number.isInteger(burst) || burst < 0) return "burst must be an integer >= 0";
  if (requests / periodSec > RATE_PER_SEC_MAX) {
    return `${requests} per ${periodSec} s is faster than ${RATE_PER_SEC_MAX} requests/s per client`;
  }
  const { intervalTicks } = ticksOf(requests, periodSec);
  if ((requests + burst) * intervalTicks >= AHEAD_TICKS_MAX) {
    const days = ((requests + burst) * periodSec) / requests / 86_400;
    return `requests + burst refill over ${days.toFixed(1)} days; at most ~12 days fit the bucket clock`;
  }
  return null;
}

function ticksOf(requests: number, periodSec: number): { tickMs: number; intervalTicks: number } {
  const intervalMs = (periodSec * 1000) / requests;
  const intervalTicks = intervalMs >= 1 ? Math.ceil(intervalMs) : 1;
  return { tickMs: intervalMs / intervalTicks, intervalTicks };
}

/** Compiles limit.requests / limit.period_sec + burst. Throws RangeError (gcraProblem) when out of bounds. */
export function gcraRule(requests: number, periodSec: number, burst: number): GcraRule {
  const problem = gcraProblem(requests, periodSec, burst);
  if (problem !== null) throw new RangeError(problem);
  const { tickMs, intervalTicks } = ticksOf(requests, periodSec);
  const capacity = requests + burst;
  return Object.freeze({
    capacity,
    tickMs,
    intervalTicks,
    toleranceTicks: (capacity - 1) * intervalTicks,
    aheadMaxTicks: capacity * intervalTicks,
  });
}

/** now in the rule's ticks: the TAT of a full bucket (what a new entry starts with). */
export function nowTicks(nowMs: number, rule: GcraRule): number {
  return Math.floor(nowMs / rule.tickMs) | 0;
}

/** The GCRA step for one request: pure, writes `out` and returns it. `tat` as stored (ticks). */
export function decide(tat: number, nowMs: number, rule: GcraRule, out: GcraDecision): GcraDecision {
  const now = nowTicks(nowMs, rule);
  let ahead = (tat - now) | 0;
  if (ahead < 0 || ahead > rule.aheadMaxTicks) ahead = 0; // refilled, or stale (see the header)
  const interval = rule.intervalTicks;
  out.tableFull = false;
  if (ahead > rule.toleranceTicks) {
    out.allowed = false;
    out.newTat = tat | 0;
    out.retryAfterMs = (ahead - rule.toleranceTicks) * rule.tickMs;
    out.remainingTokens = 0;
    out.usedFraction = ahead / rule.aheadMaxTicks;
    out.fullInMs = ahead * rule.tickMs;
    return out;
  }
  const next = ahead + interval;
  out.allowed = true;
  out.newTat = (now + next) | 0;
  out.retryAfterMs = 0;
  out.remainingTokens = rule.capacity - Math.ceil(next / interval);
  out.usedFraction = next / rule.aheadMaxTicks;
  out.fullInMs = next * rule.tickMs;
  return out;
}

/**
 * One request of client key (hi, lo) (hashKey) against its bucket in the shared table: find or
 * create the entry, then CAS the TAT. A full table sets out.tableFull and allowed = failOpen (the
 * waf.json "table_full" policy); the caller counts it.
 */
export function take(
  table: SlotTable,
  hi: number,
  lo: number,
  nowMs: number,
  rule: GcraRule,
  failOpen: boolean,
  out: GcraDecision,
): GcraDecision {
  let slot = table.findOrInsert(hi, lo, nowMs, nowTicks(nowMs, rule), 0);
  for (let n = 0; n < CAS_ATTEMPTS_MAX && slot !== TABLE_FULL; n++) {
    const tat = table.load(slot, TAT_WORD);
    decide(tat, nowMs, rule, out);
    if (!out.allowed) return out;
    if (table.cas(slot, TAT_WORD, tat, out.newTat)) {
      // + 1: whole seconds, rounded up (secondsOf floors).
      table.extendFreeAt(slot, (secondsOf(nowMs + out.fullInMs) + 1) | 0);
      return out;
    }
    // Lost the race. If the slot went to another key meanwhile, find ours again.
    if (!table.holds(slot, hi, lo)) slot = table.findOrInsert(hi, lo, nowMs, nowTicks(nowMs, rule), 0);
  }
  if (slot === TABLE_FULL) {
    out.allowed = failOpen;
    out.tableFull = true;
    out.newTat = 0;
    out.retryAfterMs = failOpen ? 0 : rule.intervalTicks * rule.tickMs;
    out.remainingTokens = 0;
    out.usedFraction = 0;
    out.fullInMs = 0;
    return out;
  }
  // Contention exhausted (see CAS_ATTEMPTS_MAX): refuse, as if the bucket were empty.
  out.allowed = false;
  out.retryAfterMs = rule.intervalTicks * rule.tickMs;
  out.remainingTokens = 0;
  return out;
}
