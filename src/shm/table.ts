// The double-buffered backend table: the supervisor writes the next table into the inactive half and
// then flips H_ACTIVE and bumps H_GENERATION; workers notice the new generation on their next request
// and copy the active half into their own objects. No IPC, no lock.
//
// A reader copies the half, then checks that the generation did not move while it read (a seqlock
// read): two publishes in a row could otherwise rewrite the half it is reading. Publishes are rare
// (debounced config reloads), so a retry is rare too.
import type { BackendSpec, Strategy } from "../config/options.ts";
import { BACKENDS_MAX, HOST_LEN_MAX } from "../core/limits.ts";
import {
  E_HOST,
  E_HOST_LEN,
  E_PORT,
  E_ROW,
  E_TLS,
  E_WEIGHT,
  ENTRY_WORDS,
  H_ACTIVE,
  H_GENERATION,
  STRATEGIES,
  T_COUNT,
  T_GENERATION,
  T_HEADER_WORDS,
  T_HEALTHY_THRESHOLD,
  T_STRATEGY,
  T_UNHEALTHY_THRESHOLD,
  TABLE_BYTES,
  TABLES_OFFSET,
} from "./layout.ts";

/** A published table as a process sees it. */
export interface SharedTable {
  readonly generation: number;
  readonly strategy: Strategy;
  readonly unhealthyThreshold: number;
  readonly healthyThreshold: number;
  readonly backends: readonly BackendSpec[];
  /** Stable row of each backend (same order as backends). */
  readonly rows: readonly number[];
}

/** Attempts of a consistent read before giving up (each failure means a publish landed mid-read). */
const READ_ATTEMPTS_MAX = 100;

function halfBase(half: number): number {
  return (TABLES_OFFSET + half * TABLE_BYTES) >> 2;
}

export interface TableInput {
  readonly strategy: Strategy;
  readonly unhealthyThreshold: number;
  readonly healthyThreshold: number;
  readonly backends: readonly BackendSpec[];
  readonly rows: readonly number[];
}

/** Supervisor only: writes `t` into the inactive half, then makes it active. Returns the new generation. */
export function publishTable(words: Int32Array, t: TableInput): number {
  if (t.backends.length > BACKENDS_MAX) throw new RangeError(`at most ${BACKENDS_MAX} backends`);
  const active = Atomics.load(words, H_ACTIVE);
  const next = active === 0 ? 1 : 0;
  const gen = (Atomics.load(words, H_GENERATION) + 1) | 0;
  const b = halfBase(next);
  const enc = new TextEncoder();
  const host = new Uint8Array(HOST_LEN_MAX + 4);
  Atomics.store(words, b + T_COUNT, t.backends.length);
  Atomics.store(words, b + T_STRATEGY, STRATEGIES.indexOf(t.strategy));
  Atomics.store(words, b + T_UNHEALTHY_THRESHOLD, t.unhealthyThreshold);
  Atomics.store(words, b + T_HEALTHY_THRESHOLD, t.healthyThreshold);
  t.backends.forEach((spec, i) => {
    const e = b + T_HEADER_WORDS + i * ENTRY_WORDS;
    host.fill(0);
    const { written } = enc.encodeInto(spec.host, host.subarray(0, HOST_LEN_MAX));
    Atomics.store(words, e + E_ROW, t.rows[i]!);
    Atomics.store(words, e + E_PORT, spec.port);
    Atomics.store(words, e + E_WEIGHT, spec.weight);
    Atomics.store(words, e + E_TLS, spec.tls ? 1 : 0);
    Atomics.store(words, e + E_HOST_LEN, written);
    const hw = new Int32Array(host.buffer, 0, Math.ceil(written / 4));
    for (let k = 0; k < hw.length; k++) Atomics.store(words, e + E_HOST + k, hw[k]!);
  });
  Atomics.store(words, b + T_GENERATION, gen);
  Atomics.store(words, H_ACTIVE, next);
  Atomics.store(words, H_GENERATION, gen); // last: readers key on it
  return gen;
}

export function currentGeneration(words: Int32Array): number {
  return Atomics.load(words, H_GENERATION);
}

/** Reads the active table; null before the first publish. */
export function readTable(words: Int32Array): SharedTable | null {
  const dec = new TextDecoder();
  for (let attempt = 0; attempt < READ_ATTEMPTS_MAX; attempt++) {
    const gen = Atomics.load(words, H_GENERATION);
    if (gen === 0) return null;
    const b = halfBase(Atomics.load(words, H_ACTIVE));
    const count = Math.min(Atomics.load(words, b + T_COUNT), BACKENDS_MAX);
    const strategy = STRATEGIES[Atomics.load(words, b + T_STRATEGY)] ?? "round_robin";
    const unhealthyThreshold = Atomics.load(words, b + T_UNHEALTHY_THRESHOLD);
    const healthyThreshold = Atomics.load(words, b + T_HEALTHY_THRESHOLD);
    const backends: BackendSpec[] = [];
    const rows: number[] = [];
    for (let i = 0; i < count; i++) {
      const e = b + T_HEADER_WORDS + i * ENTRY_WORDS;
      const len = Math.min(Atomics.load(words, e + E_HOST_LEN), HOST_LEN_MAX);
      const hw = new Int32Array(Math.ceil(len / 4));
      for (let k = 0; k < hw.length; k++) hw[k] = Atomics.load(words, e + E_HOST + k);
      backends.push(
        Object.freeze({
          host: dec.decode(new Uint8Array(hw.buffer, 0, len)),
          port: Atomics.load(words, e + E_PORT),
          weight: Atomics.load(words, e + E_WEIGHT),
          tls: Atomics.load(words, e + E_TLS) === 1,
        }),
      );
      rows.push(Atomics.load(words, e + E_ROW));
    }
    // Consistent only if no publish started or ended while we read.
    if (Atomics.load(words, b + T_GENERATION) !== gen || Atomics.load(words, H_GENERATION) !== gen) continue;
    return Object.freeze({
      generation: gen,
      strategy,
      unhealthyThreshold,
      healthyThreshold,
      backends: Object.freeze(backends),
      rows: Object.freeze(rows),
    });
  }
  throw new Error(`backend table kept changing during ${READ_ATTEMPTS_MAX} reads`);
}
