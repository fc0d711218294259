// Health of each backend row as one int32 word, so every process applies results with one
// compareExchange and exactly one process sees (and logs) each transition. The decision itself is the
// pure state machine in core/health.ts, run on an unpacked copy.
//
// Word: bit 0 = down (so an all-zero row, as a new row starts, is up with no streak),
// bits 1-8 = consecutive failures, bits 9-16 = consecutive successes (both stop at their threshold,
// and thresholds are at most THRESHOLD_MAX <= 255).
import { type HealthChange, type HealthState, newHealthState, recordResult } from "../core/health.ts";
import { H_HEALTH_VERSION, R_HEALTH, ROW_WORDS, ROWS_MAX, ROWS_OFFSET } from "./layout.ts";

const DOWN = 1;
const COUNT_MASK = 0xff;
const FAILURES_SHIFT = 1;
const SUCCESSES_SHIFT = 9;
/** CAS attempts before giving up on one result (only reached under absurd contention; the result is dropped). */
const CAS_ATTEMPTS_MAX = 1000;

export function healthWordIndex(row: number): number {
  if (!(row >= 0 && row < ROWS_MAX)) throw new RangeError(`row ${row} out of range`);
  return (ROWS_OFFSET >> 2) + row * ROW_WORDS + R_HEALTH;
}

export function isUpWord(w: number): boolean {
  return (w & DOWN) === 0;
}

function unpack(w: number, s: HealthState): void {
  s.up = (w & DOWN) === 0;
  s.failures = (w >>> FAILURES_SHIFT) & COUNT_MASK;
  s.successes = (w >>> SUCCESSES_SHIFT) & COUNT_MASK;
}

function pack(s: HealthState): number {
  return (
    (s.up ? 0 : DOWN) |
    (Math.min(s.failures, COUNT_MASK) << FAILURES_SHIFT) |
    (Math.min(s.successes, COUNT_MASK) << SUCCESSES_SHIFT)
  );
}

/** Reusable scratch state: recording allocates nothing. */
const scratch = newHealthState();

export interface Thresholds {
  readonly unhealthyThreshold: number;
  readonly healthyThreshold: number;
}

/**
 * Applies one result to a row. Returns the transition this call caused (only one caller ever sees a
 * given transition), with `scratch`-derived streak counts for the log line via `lastState`.
 */
export function recordShared(
  words: Int32Array,
  row: number,
  ok: boolean,
  reason: string,
  thresholds: Thresholds,
): HealthChange {
  const at = healthWordIndex(row);
  for (let attempt = 0; attempt < CAS_ATTEMPTS_MAX; attempt++) {
    const w = Atomics.load(words, at);
    unpack(w, scratch);
    const r = recordResult(scratch, ok, reason, thresholds);
    const nw = pack(scratch);
    if (nw === w) return null;
    if (Atomics.compareExchange(words, at, w, nw) !== w) continue;
    if (r.changed !== null) Atomics.add(words, H_HEALTH_VERSION, 1);
    return r.changed;
  }
  return null;
}

/** The state after the latest recordShared call (for describeTransition). */
export function lastState(): HealthState {
  return scratch;
}

export function rowIsUp(words: Int32Array, row: number): boolean {
  return isUpWord(Atomics.load(words, healthWordIndex(row)));
}

/** A new (or reused) row starts up with no streak. */
export function resetRow(words: Int32Array, row: number): void {
  Atomics.store(words, healthWordIndex(row), 0);
  Atomics.add(words, H_HEALTH_VERSION, 1);
}

/** Copies a row's health word (binary upgrade: the new instance keeps the old one's view of a backend). */
export function setRowWord(words: Int32Array, row: number, w: number): void {
  Atomics.store(words, healthWordIndex(row), w);
  Atomics.add(words, H_HEALTH_VERSION, 1);
}

export function rowWord(words: Int32Array, row: number): number {
  return Atomics.load(words, healthWordIndex(row));
}

export function healthVersion(words: Int32Array): number {
  return Atomics.load(words, H_HEALTH_VERSION);
}
