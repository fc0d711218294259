// The layout of the shared region: one file, mapped by the supervisor and every worker, that holds all
// state the processes must agree on. This file is the one place the layout is written down.
//
// Rules: fixed-size records at fixed offsets, no pointers (host names are inlined), all cross-process
// updates through Atomics on an Int32Array view (add / compareExchange / store), never a lock that a
// dead process could hold. Metrics are the one exception: each process writes only its own slot
// (single writer, plain Float64 stores, aligned, so a reader never sees a torn value) and readers sum.
//
//  offset (bytes)            what                                       written by
//  0                         header: magic, layout version, size, ...   supervisor (once), see H_*
//  HEADER_BYTES              backend table half 0                       supervisor (publish)
//  + TABLE_BYTES             backend table half 1                       supervisor (publish)
//  ROWS_OFFSET               ROWS_MAX backend rows: health word         any process (CAS)
//  METRICS_OFFSET            PROC_SLOTS_MAX x METRICS_SLOTS float64     each process its own slot
//  WAF_OFFSET                WAF config text + tables (WH_*, below)     supervisor (text), any (tables)
//
// A backend has two identities: its index in the current table (what strategies pick, changes on
// reload) and its row (stable per host:port for as long as it is configured, chosen by the supervisor).
// Everything that must survive a reload (health, metrics, in-flight counts) is keyed by row.
import {
  BACKENDS_MAX,
  CONFIG_BYTES_MAX,
  HOST_LEN_MAX,
  METRICS_BACKEND_ROWS_MAX,
  WAF_TABLE_SLOTS_MAX,
  WORKERS_MAX,
} from "../core/limits.ts";
import { RETRY_BUDGET_WORDS } from "../core/retry.ts";
import { SLOT_WORDS } from "../core/waf/table.ts";
import { METRICS_SLOTS } from "../telemetry/metrics.ts";

/** "ZZLB" little-endian: a file that does not start with it is not ours. */
export const MAGIC = 0x424c5a5a;
/** Bump on any change below: a process never maps a region of another layout (an upgrade then starts fresh). */
export const LAYOUT_VERSION = 3;

/** Process slots: slot 0 is the supervisor (or the sp process's control part), 1..WORKERS_MAX workers. */
export const PROC_SLOTS_MAX = WORKERS_MAX + 1;
export const SUPERVISOR_SLOT = 0;
/** Backend rows: METRICS_BACKEND_ROWS_MAX, so a removed backend keeps its row while new ones are added. */
export const ROWS_MAX = METRICS_BACKEND_ROWS_MAX;
// --- WAF area (from WAF_OFFSET): a header, the validated waf.json text double-buffered (workers
// parse what the supervisor published), the (client, rule) table for rate-limit buckets and burst
// counters, and the per-(client, process) in-flight table for the connection cap.
export const WH_SEED = 0; // random per region: table hashes are not predictable from outside
export const WH_GENERATION = 1; // bumped after each publish of the config text (0 = no WAF)
export const WH_ACTIVE = 2; // text half in use (0 or 1)
export const WH_LEN = 3; // WH_LEN + half: byte length of each text half
export const WAF_HEADER_BYTES = 256;
export const WAF_TEXT_OFFSET = WAF_HEADER_BYTES;
export const WAF_TEXT_BYTES = CONFIG_BYTES_MAX;
export const WAF_TABLE_OFFSET = align(WAF_TEXT_OFFSET + 2 * WAF_TEXT_BYTES, 4096);
export const WAF_TABLE_BYTES = WAF_TABLE_SLOTS_MAX * SLOT_WORDS * 4;
/** Client x process entries for in-flight counts (the connection cap). */
export const WAF_CONN_SLOTS = 1 << 14;
export const WAF_CONN_OFFSET = WAF_TABLE_OFFSET + WAF_TABLE_BYTES;
export const WAF_CONN_BYTES = WAF_CONN_SLOTS * SLOT_WORDS * 4;
export const WAF_BYTES = align(WAF_CONN_OFFSET + WAF_CONN_BYTES, 4096);

// --- Header: Int32 word indexes. H_MAGIC..H_UPGRADE_READY_PID keep these places in every layout
// version: an upgrade to a build with another layout still finds the old instance's ready word.
export const H_MAGIC = 0;
export const H_VERSION = 1;
/** Total size in bytes, checked by every process that maps the file. */
export const H_SIZE_BYTES = 2;
/** pid of the process that created the region (a dead owner = a stale file from a crash). */
export const H_OWNER_PID = 3;
/** Which table half is active (0 or 1). */
export const H_ACTIVE = 4;
/** Bumped after each publish of a backend table; workers compare it on every request. */
export const H_GENERATION = 5;
/** The round-robin ticket shared by all workers (Atomics.add; wraps at 2^32). */
export const H_RR = 6;
/** Bumped on every health transition: workers rebuild their cached healthy bitmap when it moves. */
export const H_HEALTH_VERSION = 7;
/**
 * Binary upgrade hand-over: the new instance writes its pid here (into the OLD instance's region)
 * once its workers serve; the old supervisor polls it, then drains and exits.
 */
export const H_UPGRADE_READY_PID = 9;
/** Retry budget ring, shared so the budget holds for the whole fleet (core/retry.ts WindowRetryBudget). */
export const H_RETRY_BUDGET = 16;
export const HEADER_WORDS = H_RETRY_BUDGET + RETRY_BUDGET_WORDS + 16;
export const HEADER_BYTES = align(HEADER_WORDS * 4, 64);

// --- Backend table half: a header, then BACKENDS_MAX entries.
export const T_GENERATION = 0; // generation this half was written for (seqlock check)
export const T_COUNT = 1;
export const T_STRATEGY = 2; // index in STRATEGIES
export const T_UNHEALTHY_THRESHOLD = 3;
export const T_HEALTHY_THRESHOLD = 4;
export const T_HEADER_WORDS = 8;
export const E_ROW = 0;
export const E_PORT = 1;
export const E_WEIGHT = 2;
export const E_TLS = 3;
export const E_HOST_LEN = 4;
export const E_HOST = 5; // HOST_WORDS words of UTF-8 (ASCII in practice) host bytes
const HOST_WORDS = Math.ceil(HOST_LEN_MAX / 4);
export const ENTRY_WORDS = E_HOST + HOST_WORDS;
export const TABLE_WORDS = T_HEADER_WORDS + BACKENDS_MAX * ENTRY_WORDS;
export const TABLE_BYTES = align(TABLE_WORDS * 4, 64);

// --- Backend rows: one health word each (bit layout in shm/health.ts), padded.
export const ROW_WORDS = 4;
export const R_HEALTH = 0;

export const TABLES_OFFSET = HEADER_BYTES;
export const ROWS_OFFSET = TABLES_OFFSET + 2 * TABLE_BYTES;
export const METRICS_OFFSET = align(ROWS_OFFSET + ROWS_MAX * ROW_WORDS * 4, 64);
export const METRICS_SLOT_BYTES = align(METRICS_SLOTS * 8, 64);
export const WAF_OFFSET = align(METRICS_OFFSET + PROC_SLOTS_MAX * METRICS_SLOT_BYTES, 4096);
export const REGION_BYTES = align(WAF_OFFSET + WAF_BYTES, 4096);

/** Strategy codes stored in a table half. */
export const STRATEGIES = ["round_robin", "weighted", "random", "sticky", "least_conn", "p2c"] as const;

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
