// A deadline on reading a request body that is buffered before forwarding (--body-timeout-ms). Every
// such read in a process waits with the same timeout, so they share one FIFO deadline list (one timer)
// like the upstream timeouts do.
import type { DeadlineNode, FifoDeadlines } from "../upstream/deadlines.ts";

/** What a read resolves to when the deadline passed first. */
export const BODY_TIMED_OUT: unique symbol = Symbol("body timed out");

class BodyWait<T> implements DeadlineNode {
  deadlineAt = 0;
  prevDeadline: DeadlineNode | null = null;
  nextDeadline: DeadlineNode | null = null;
  onDeadlineList = false;

  constructor(private readonly resolve: (v: T | typeof BODY_TIMED_OUT) => void) {}

  deadlineExpired(): void {
    this.resolve(BODY_TIMED_OUT);
  }
}

/** `read`, or BODY_TIMED_OUT when it has not settled within the list's timeout. */
export function readWithin<T>(list: FifoDeadlines, read: Promise<T>): Promise<T | typeof BODY_TIMED_OUT> {
  return new Promise((resolve, reject) => {
    const node = new BodyWait<T>(resolve);
    list.add(node);
    read.then(
      (v) => {
        list.remove(node);
        resolve(v);
      },
      (err) => {
        list.remove(node);
        reject(err);
      },
    );
  });
}
