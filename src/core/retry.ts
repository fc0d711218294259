// Retry policy for a failed attempt, and the retry budget that keeps retries from doubling the load
// on a failing fleet. Pure: the caller says what happened and passes the clock in.
import {
  RETRIES_PER_REQUEST_MAX,
  RETRY_BUDGET_BUCKET_MS,
  RETRY_BUDGET_MIN_PER_WINDOW,
  RETRY_BUDGET_RATIO,
  RETRY_BUDGET_WINDOW_MS,
} from "./limits.ts";

export interface RetryInput {
  /** Retries this request already had: 0 when its first try just failed. */
  attempt: number;
  /**
   * Bytes of the request may have reached the backend. false only when the failure came before any
   * byte was written: connect refused, connect timeout, a pooled socket found closed before use.
   */
  bytesMaySent: boolean;
  method: string;
  /** The request carries an Idempotency-Key header: the client made it safe to repeat. */
  hasIdempotencyKey: boolean;
  /** The body can be sent again: none, buffered whole (bounded buffer), or not yet read at all. */
  bodyReplayable: boolean;
}

export interface RetryDecision {
  readonly retry: boolean;
  readonly reason: string;
}

/** Counts requests and retries; `tryAcquire` says whether one more retry fits and counts it if so. */
export interface RetryBudget {
  /** One client request was forwarded (retries are not requests). */
  recordRequest(nowMs: number): void;
  /** Takes one retry from the budget, or returns false when the budget is spent. */
  tryAcquire(nowMs: number): boolean;
}

function decision(retry: boolean, reason: string): RetryDecision {
  return Object.freeze({ retry, reason });
}

// Every decision is one of these: nothing is built per failed request.
const RETRY_UNSENT = decision(true, "nothing reached the backend");
const RETRY_IDEMPOTENT = decision(true, "idempotent request");
const NO_LIMIT = decision(false, `already retried ${RETRIES_PER_REQUEST_MAX} times`);
const NO_BODY = decision(false, "request body cannot be replayed");
const NO_UNSAFE = decision(false, "not idempotent and may have reached the backend");
const NO_BUDGET = decision(false, "retry budget spent");

/**
 * Idempotent per RFC 9110 9.2.2 as the issue lists them (TRACE is left out: it is not proxied
 * for real). Methods are case-sensitive: "get" is not GET.
 */
export function isIdempotentMethod(method: string): boolean {
  switch (method) {
    case "GET":
    case "HEAD":
    case "OPTIONS":
    case "PUT":
    case "DELETE":
      return true;
    default:
      return false;
  }
}

/**
 * Whether a failed attempt is tried again on another backend. The budget is consulted last and a
 * "retry" takes one retry from it, so the caller should then really retry (pick with the failed
 * backend excluded; if pick finds none, the request fails with the original error).
 */
export function decideRetry(input: RetryInput, budget: RetryBudget, nowMs: number): RetryDecision {
  if (input.attempt >= RETRIES_PER_REQUEST_MAX) return NO_LIMIT;
  if (!input.bodyReplayable) return NO_BODY;
  if (input.bytesMaySent && !input.hasIdempotencyKey && !isIdempotentMethod(input.method)) return NO_UNSAFE;
  if (!budget.tryAcquire(nowMs)) return NO_BUDGET;
  return input.bytesMaySent ? RETRY_IDEMPOTENT : RETRY_UNSENT;
}

/** Buckets in the budget's ring. */
export const RETRY_BUDGET_BUCKETS = Math.ceil(RETRY_BUDGET_WINDOW_MS / RETRY_BUDGET_BUCKET_MS);
/** Int32 words of a budget: per bucket [bucket number, requests, retries]. */
export const RETRY_BUDGET_WORDS = 3 * RETRY_BUDGET_BUCKETS;

/** Bucket number of a time, modulo 2^32 (int32). */
function bucketOf(nowMs: number): number {
  return Math.floor(nowMs / RETRY_BUDGET_BUCKET_MS) | 0;
}

/**
 * Requests and retries over the last RETRY_BUDGET_WINDOW_MS, as a ring of per-bucket counters. A
 * retry is allowed while retries < RETRY_BUDGET_RATIO * requests + RETRY_BUDGET_MIN_PER_WINDOW.
 *
 * The counters live in an Int32Array updated with Atomics, so the multi-process build can pass a
 * view of the shared memory and use this class unchanged. Across processes it is approximate: two
 * workers rolling the same bucket at once may lose a few counts; a budget does not need more.
 * Bucket numbers are kept modulo 2^32 and only compared by difference, so any clock works.
 */
export class WindowRetryBudget implements RetryBudget {
  readonly words: Int32Array;

  constructor(words: Int32Array = new Int32Array(RETRY_BUDGET_WORDS)) {
    if (words.length < RETRY_BUDGET_WORDS)
      throw new RangeError(`retry budget needs ${RETRY_BUDGET_WORDS} words`);
    this.words = words;
  }

  recordRequest(nowMs: number): void {
    Atomics.add(this.words, this.current(bucketOf(nowMs)) + 1, 1);
  }

  tryAcquire(nowMs: number): boolean {
    const bucket = bucketOf(nowMs);
    const base = this.current(bucket);
    let requests = 0;
    let retries = 0;
    for (let s = 0; s < RETRY_BUDGET_BUCKETS; s++) {
      const age = (bucket - Atomics.load(this.words, 3 * s)) | 0;
      if (age < 0 || age >= RETRY_BUDGET_BUCKETS) continue; // stale: older than the window
      requests += Atomics.load(this.words, 3 * s + 1);
      retries += Atomics.load(this.words, 3 * s + 2);
    }
    if (retries >= RETRY_BUDGET_RATIO * requests + RETRY_BUDGET_MIN_PER_WINDOW) return false;
    Atomics.add(this.words, base + 2, 1);
    return true;
  }

  /** Word offset of `bucket`'s counters, after clearing its slot if it still holds an older bucket. */
  private current(bucket: number): number {
    const slot = ((bucket % RETRY_BUDGET_BUCKETS) + RETRY_BUDGET_BUCKETS) % RETRY_BUDGET_BUCKETS;
    const base = 3 * slot;
    const held = Atomics.load(this.words, base);
    if (held !== bucket && Atomics.compareExchange(this.words, base, held, bucket) === held) {
      Atomics.store(this.words, base + 1, 0);
      Atomics.store(this.words, base + 2, 0);
    }
    return base;
  }
}
