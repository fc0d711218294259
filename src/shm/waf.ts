// The WAF's part of the shared region (layout.ts, WH_* and WAF_*): the config text the supervisor
// published, double-buffered like the backend table (a worker re-parses it when WH_GENERATION moves),
// the hash seed, and views of the two tables.
import { SLOT_WORDS } from "../core/waf/table.ts";
import {
  WAF_CONN_OFFSET,
  WAF_CONN_SLOTS,
  WAF_OFFSET,
  WAF_TABLE_OFFSET,
  WAF_TEXT_BYTES,
  WAF_TEXT_OFFSET,
  WH_ACTIVE,
  WH_GENERATION,
  WH_LEN,
  WH_SEED,
} from "./layout.ts";
import type { Region } from "./region.ts";

const HEADER = WAF_OFFSET >> 2;
/** Attempts of a consistent read (each failure: a publish landed mid-read; publishes are debounced). */
const READ_ATTEMPTS_MAX = 100;

/** Supervisor, once at region creation: a random seed for the table hashes. */
export function initWafSeed(region: Region): void {
  const seed = new Int32Array(1);
  crypto.getRandomValues(seed);
  Atomics.store(region.words, HEADER + WH_SEED, seed[0]! | 1);
}

export function wafSeed(region: Region): number {
  return Atomics.load(region.words, HEADER + WH_SEED);
}

export function wafGeneration(region: Region): number {
  return Atomics.load(region.words, HEADER + WH_GENERATION);
}

/** Supervisor: publishes validated waf.json text ("" = WAF off); returns the new generation. */
export function publishWafText(region: Region, text: string): number {
  const w = region.words;
  const bytes = new TextEncoder().encode(text);
  if (bytes.length > WAF_TEXT_BYTES) throw new RangeError(`WAF config of ${bytes.length} bytes`);
  const next = Atomics.load(w, HEADER + WH_ACTIVE) === 0 ? 1 : 0;
  region.bytes.set(bytes, WAF_OFFSET + WAF_TEXT_OFFSET + next * WAF_TEXT_BYTES);
  Atomics.store(w, HEADER + WH_LEN + next, bytes.length);
  Atomics.store(w, HEADER + WH_ACTIVE, next);
  const gen = (Atomics.load(w, HEADER + WH_GENERATION) + 1) | 0;
  Atomics.store(w, HEADER + WH_GENERATION, gen); // last: readers key on it
  return gen;
}

/** The published text and its generation, or null before any publish. */
export function readWafText(region: Region): { text: string; generation: number } | null {
  const w = region.words;
  for (let attempt = 0; attempt < READ_ATTEMPTS_MAX; attempt++) {
    const gen = Atomics.load(w, HEADER + WH_GENERATION);
    if (gen === 0) return null;
    const half = Atomics.load(w, HEADER + WH_ACTIVE);
    const len = Math.min(Atomics.load(w, HEADER + WH_LEN + half), WAF_TEXT_BYTES);
    const start = WAF_OFFSET + WAF_TEXT_OFFSET + half * WAF_TEXT_BYTES;
    const text = new TextDecoder().decode(region.bytes.slice(start, start + len));
    if (Atomics.load(w, HEADER + WH_GENERATION) === gen) return { text, generation: gen };
  }
  throw new Error(`WAF config kept changing during ${READ_ATTEMPTS_MAX} reads`);
}

/** The (client, rule) table: its first `slots` slots (table_slots of the config in use). */
export function wafTableWords(region: Region, slots: number): Int32Array {
  const start = (WAF_OFFSET + WAF_TABLE_OFFSET) >> 2;
  return region.words.subarray(start, start + slots * SLOT_WORDS);
}

/** Supervisor: empties the (client, rule) table (table_slots changed: entries would hash elsewhere). */
export function clearWafTable(region: Region): void {
  const start = WAF_OFFSET + WAF_TABLE_OFFSET;
  region.bytes.fill(0, start, WAF_OFFSET + WAF_CONN_OFFSET);
}

/**
 * Binary upgrade: the new instance continues the old one's rate-limit buckets and burst counters (and
 * its seed, which the keys depend on). Connection counts are not copied: they belong to the old
 * instance's requests, which finish there.
 */
export function inheritWafState(region: Region, old: Region): void {
  Atomics.store(region.words, HEADER + WH_SEED, Atomics.load(old.words, HEADER + WH_SEED));
  const start = WAF_OFFSET + WAF_TABLE_OFFSET;
  const end = WAF_OFFSET + WAF_CONN_OFFSET;
  region.bytes.set(old.bytes.subarray(start, end), start);
}

/** The (client, process) in-flight table of the connection cap. */
export function wafConnWords(region: Region): Int32Array {
  const start = (WAF_OFFSET + WAF_CONN_OFFSET) >> 2;
  return region.words.subarray(start, start + WAF_CONN_SLOTS * SLOT_WORDS);
}
