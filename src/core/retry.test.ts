import { describe, expect, test } from "bun:test";
import {
  RETRIES_PER_REQUEST_MAX,
  RETRY_BUDGET_MIN_PER_WINDOW,
  RETRY_BUDGET_RATIO,
  RETRY_BUDGET_WINDOW_MS,
} from "./limits.ts";
import {
  decideRetry,
  isIdempotentMethod,
  type RetryBudget,
  type RetryInput,
  WindowRetryBudget,
} from "./retry.ts";

/** A budget that always has room, counting what it gave. */
function unlimited(): RetryBudget & { taken: number } {
  return {
    taken: 0,
    recordRequest() {},
    tryAcquire() {
      this.taken++;
      return true;
    },
  };
}

const BASE: RetryInput = {
  attempt: 0,
  bytesMaySent: true,
  method: "GET",
  hasIdempotencyKey: false,
  bodyReplayable: true,
};

function decide(over: Partial<RetryInput>, budget: RetryBudget = unlimited()) {
  return decideRetry({ ...BASE, ...over }, budget, 0);
}

describe("decideRetry", () => {
  test("nothing reached the backend: any method is retried, POST included", () => {
    for (const method of ["POST", "PATCH", "GET", "CONNECT"]) {
      expect(decide({ bytesMaySent: false, method })).toEqual({
        retry: true,
        reason: "nothing reached the backend",
      });
    }
  });

  test("bytes may have reached it: idempotent methods are retried", () => {
    for (const method of ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]) {
      expect(decide({ method })).toEqual({ retry: true, reason: "idempotent request" });
    }
  });

  test("bytes may have reached it: POST and PATCH are never sent twice", () => {
    for (const method of ["POST", "PATCH", "get"]) {
      expect(decide({ method })).toEqual({
        retry: false,
        reason: "not idempotent and may have reached the backend",
      });
    }
  });

  test("an Idempotency-Key makes a POST retryable", () => {
    expect(decide({ method: "POST", hasIdempotencyKey: true }).retry).toBe(true);
  });

  test("a body that cannot be replayed is not retried, even when nothing was sent", () => {
    expect(decide({ bodyReplayable: false })).toEqual({
      retry: false,
      reason: "request body cannot be replayed",
    });
    expect(decide({ bodyReplayable: false, bytesMaySent: false }).retry).toBe(false);
  });

  test(`at most ${RETRIES_PER_REQUEST_MAX} retries per request`, () => {
    expect(decide({ attempt: 0 }).retry).toBe(true);
    expect(decide({ attempt: 1 }).retry).toBe(true);
    expect(decide({ attempt: 2 })).toEqual({ retry: false, reason: "already retried 2 times" });
    expect(decide({ attempt: 2, bytesMaySent: false }).retry).toBe(false);
  });

  test("the budget is only spent on a retry that is otherwise allowed", () => {
    const budget = unlimited();
    decide({ method: "POST" }, budget);
    decide({ attempt: 2 }, budget);
    decide({ bodyReplayable: false }, budget);
    expect(budget.taken).toBe(0);
    decide({}, budget);
    expect(budget.taken).toBe(1);
  });

  test("a spent budget refuses", () => {
    const empty: RetryBudget = { recordRequest() {}, tryAcquire: () => false };
    expect(decide({ bytesMaySent: false }, empty)).toEqual({ retry: false, reason: "retry budget spent" });
  });

  test("idempotent methods are case-sensitive tokens", () => {
    expect(isIdempotentMethod("GET")).toBe(true);
    expect(isIdempotentMethod("Get")).toBe(false);
    expect(isIdempotentMethod("TRACE")).toBe(false);
  });
});

describe("WindowRetryBudget", () => {
  /** Retries granted in a row at nowMs until refused. */
  function drain(budget: WindowRetryBudget, nowMs: number): number {
    let n = 0;
    while (budget.tryAcquire(nowMs)) {
      n++;
      if (n > 10_000) throw new Error("budget never ran out");
    }
    return n;
  }

  test("a quiet service still gets the minimum", () => {
    expect(drain(new WindowRetryBudget(), 1_000)).toBe(RETRY_BUDGET_MIN_PER_WINDOW);
  });

  test(`retries are capped at ${RETRY_BUDGET_RATIO * 100}% of requests plus the minimum`, () => {
    const budget = new WindowRetryBudget();
    for (let k = 0; k < 100; k++) budget.recordRequest(5_000 + k);
    expect(drain(budget, 5_500)).toBe(20 + RETRY_BUDGET_MIN_PER_WINDOW);
    for (let k = 0; k < 50; k++) budget.recordRequest(5_600);
    expect(drain(budget, 5_700)).toBe(10); // 150 requests -> 30 + 3, 23 used
  });

  test("requests spread over the window all count", () => {
    const budget = new WindowRetryBudget();
    for (let s = 0; s < 10; s++) for (let k = 0; k < 10; k++) budget.recordRequest(s * 1_000 + k);
    expect(drain(budget, 9_999)).toBe(20 + RETRY_BUDGET_MIN_PER_WINDOW);
  });

  test("recovers once the window has passed (clock passed in, no sleep)", () => {
    const budget = new WindowRetryBudget();
    for (let k = 0; k < 100; k++) budget.recordRequest(0);
    expect(drain(budget, 0)).toBe(23);
    expect(budget.tryAcquire(RETRY_BUDGET_WINDOW_MS - 1)).toBe(false); // same window still
    expect(drain(budget, RETRY_BUDGET_WINDOW_MS)).toBe(RETRY_BUDGET_MIN_PER_WINDOW); // old buckets aged out
  });

  test("old buckets age out one by one", () => {
    const budget = new WindowRetryBudget();
    for (let k = 0; k < 100; k++) budget.recordRequest(0); // second 0
    for (let k = 0; k < 100; k++) budget.recordRequest(5_000); // second 5
    expect(drain(budget, 5_000)).toBe(43);
    // At 10 s second 0 is out of the window: 100 requests, 43 retries -> over 23.
    expect(budget.tryAcquire(10_000)).toBe(false);
    // At 16 s both are gone (the retries went with second 5's bucket).
    expect(drain(budget, 16_000)).toBe(RETRY_BUDGET_MIN_PER_WINDOW);
  });

  test("wall-clock milliseconds (bucket numbers past 2^31) work", () => {
    const budget = new WindowRetryBudget();
    const now = 4_102_444_800_000; // 2100-01-01
    for (let k = 0; k < 100; k++) budget.recordRequest(now);
    expect(drain(budget, now + 1)).toBe(23);
    expect(drain(budget, now + RETRY_BUDGET_WINDOW_MS)).toBe(RETRY_BUDGET_MIN_PER_WINDOW);
  });

  test("two budgets over the same words share counts (as workers over shared memory would)", () => {
    const a = new WindowRetryBudget();
    const b = new WindowRetryBudget(a.words);
    for (let k = 0; k < 50; k++) a.recordRequest(0);
    for (let k = 0; k < 50; k++) b.recordRequest(0);
    expect(drain(a, 0) + drain(b, 0)).toBe(23);
  });

  test("words too short are refused", () => {
    expect(() => new WindowRetryBudget(new Int32Array(3))).toThrow("words");
  });
});
