// Every bound in zzz-lb, in one place. Names end in their unit.
// Values marked "spec" come from the Zig original's compile-time constants.

/** spec MAX_BACKENDS: limited by the 64-bit health bitmap. */
export const BACKENDS_MAX = 64;
/**
 * Worker processes in mp mode. Each has a metrics slot of ~32 KiB in the shared region, and every
 * /metrics read sums all slots; 64 is far above the cores a machine gives one load balancer.
 */
export const WORKERS_MAX = 64;
/** spec MAX_HOST_LEN (RFC 1035). */
export const HOST_LEN_MAX = 253;
/** spec MAX_HEADER_BYTES: request or response header block, start line included. */
export const HEADER_BYTES_MAX = 8192;
/** spec MAX_HEADER_LINES. */
export const HEADER_LINES_MAX = 256;
/** Request-target length; longer -> 414 (8 KiB, as nginx's large_client_header_buffers). */
export const URI_BYTES_MAX = 8192;
/**
 * Idle upstream connections kept per backend (per process). The spec's MAX_IDLE_CONNS is 128, but
 * with more concurrent clients than that the pool closed and reopened connections on every burst
 * (30% of CPU in connect() at 200 clients here); 512 keeps a busy backend's connections warm.
 */
export const IDLE_CONNS_PER_BACKEND_MAX = 512;
/** Idle upstream connections are closed after this long unused (backends often close at 60 s+). */
export const IDLE_CONN_TIMEOUT_MS = 30_000;
/** spec MAX_CONFIG_SIZE. */
export const CONFIG_BYTES_MAX = 64 * 1024;
/** Default wait for response headers from a backend (flag --upstream-timeout-ms). */
export const UPSTREAM_TIMEOUT_MS_DEFAULT = 60_000;
/** Time allowed to open a TCP (and TLS) connection to a backend. */
export const CONNECT_TIMEOUT_MS = 5_000;
/** A chunk-size line longer than this (hex digits + extensions) is malformed. */
export const CHUNK_LINE_BYTES_MAX = 4096;
/** Largest chunk size accepted from a backend: 2^53-1 keeps the arithmetic exact. */
export const CHUNK_SIZE_MAX = Number.MAX_SAFE_INTEGER;
/** Upper bound on 1xx informational responses skipped before the final one. */
export const INFORMATIONAL_RESPONSES_MAX = 16;
/** Bytes shown per hexdump block in --trace output. */
export const TRACE_DUMP_BYTES_MAX = 64 * 1024;
/**
 * Largest body sent to Bun.serve as bytes rather than as a stream. Measured here (Bun 1.4.5, a
 * Response resolved after an I/O callback): bytes beat a one-chunk stream up to 8 KiB (59k vs 49k
 * req/s) and fall off a cliff above it (16 KiB: 9k vs 43k req/s).
 */
export const WHOLE_BODY_AS_BYTES_MAX = 8 * 1024;
/** Response chunks queued for a slow client before the backend socket is paused. */
export const RESPONSE_CHUNKS_QUEUED_MAX = 8;
/** Bun.serve idle timeout for client connections, seconds (Bun's max is 255). */
export const CLIENT_IDLE_TIMEOUT_S = 75;
/**
 * At the start of a drain, how long the listener stays open while every response says Connection:
 * close: clients in the middle of a keep-alive exchange move to a new connection instead of having it
 * closed under their next request. Part of (not added to) --drain-timeout-ms.
 */
export const DRAIN_CLOSE_GRACE_MS = 1_000;
/** How long a listening server waits for in-flight requests on shutdown (flag --drain-timeout-ms). */
export const DRAIN_TIMEOUT_MS_DEFAULT = 30_000;
/**
 * Time allowed to receive a request body that is read whole before forwarding (<= 64 KiB, or one the
 * WAF checks): a slower client gets 408 and the connection closes (flag --body-timeout-ms). A client
 * trickling a body would otherwise hold a request slot forever (slowhttptest -B). 30 s allows a 64 KiB
 * body at 2 KiB/s.
 */
export const BODY_TIMEOUT_MS_DEFAULT = 30_000;
/** Request bodies up to this size are read whole before forwarding (one write; replayable on retry). */
export const REQUEST_BODY_BUFFER_BYTES_MAX = 64 * 1024;
/** Largest request body Bun.serve will accept (Bun rejects larger with 413). */
export const REQUEST_BODY_BYTES_MAX = 1024 * 1024 * 1024;
/**
 * Per-backend rows in the metrics table. Twice BACKENDS_MAX so a backend removed by a reload keeps its
 * row (and in-flight requests to it still land there) while up to BACKENDS_MAX new ones are added.
 */
export const METRICS_BACKEND_ROWS_MAX = 2 * BACKENDS_MAX;
/** Retries of one client request, each to another backend (the first try is not counted). */
export const RETRIES_PER_REQUEST_MAX = 2;
/** Retries allowed as a fraction of recent client requests, so a failing fleet is not hit twice as hard. */
export const RETRY_BUDGET_RATIO = 0.2;
/** How far back the retry budget counts requests and retries. */
export const RETRY_BUDGET_WINDOW_MS = 10_000;
/** Width of one retry-budget bucket; the window is a ring of WINDOW / BUCKET buckets. */
export const RETRY_BUDGET_BUCKET_MS = 1_000;
/** Retries per window allowed on top of the ratio, so a quiet service can still retry. */
export const RETRY_BUDGET_MIN_PER_WINDOW = 3;
/** Largest backend weight in the backends file (weighted strategies sum weights per pick cycle). */
export const WEIGHT_MAX = 1000;
/** Quiet time after the last change event before the config file is re-read (editors write in bursts). */
export const CONFIG_DEBOUNCE_MS = 100;
/** A stream of change events still reloads at least this often, so a busy writer cannot starve it. */
export const CONFIG_DEBOUNCE_MAX_MS = 1000;
/** Safety-net stat of the config file: fs.watch can miss events (lost watches, network filesystems). */
export const CONFIG_POLL_MS = 1000;
/** Backends named per category (added, removed, changed) in the one reload log line; the rest are counted. */
export const RELOAD_LOG_BACKENDS_MAX = 10;
/**
 * Most bytes of one request body the WAF buffers to check it before forwarding (a JSON body under a
 * depth limit, a chunked body under a size limit); a larger one is refused with 413. Without it a
 * depth limit with no max_body_size would buffer up to REQUEST_BODY_BYTES_MAX (1 GiB) per request.
 */
export const WAF_BODY_BUFFER_BYTES_MAX = 16 * 1024 * 1024;
/** Entries of the shared WAF (client, rule) table: 2^16 x 32 bytes = 2 MiB of the shared region. */
export const WAF_TABLE_SLOTS_MAX = 1 << 16;
/**
 * Rate-limit rules in a WAF file. Every request walks the rules in order and each matching rule is one
 * shared-table entry per client, so the list stays short; 64 is far beyond the spec's examples.
 */
export const WAF_RULES_MAX = 64;
