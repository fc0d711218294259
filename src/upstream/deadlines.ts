// Upstream timeouts without a timer per request. Every request in a process waits with the same
// timeout, so deadlines expire in the order requests started: a FIFO list with O(1) insert and
// removal and ONE pending timer, armed for the oldest deadline.

export interface DeadlineNode {
  deadlineAt: number;
  prevDeadline: DeadlineNode | null;
  nextDeadline: DeadlineNode | null;
  /** Whether the node is on the list (a removed node's links are null, as are the tail's). */
  onDeadlineList: boolean;
  deadlineExpired(): void;
}

export class FifoDeadlines {
  private head: DeadlineNode | null = null;
  private tail: DeadlineNode | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt = 0;
  private readonly fire = (): void => this.expire();

  constructor(
    readonly timeoutMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  add(node: DeadlineNode): void {
    node.deadlineAt = this.now() + this.timeoutMs;
    node.prevDeadline = this.tail;
    node.nextDeadline = null;
    node.onDeadlineList = true;
    if (this.tail) this.tail.nextDeadline = node;
    else this.head = node;
    this.tail = node;
    if (this.timer === null) this.arm(node.deadlineAt);
  }

  remove(node: DeadlineNode): void {
    if (!node.onDeadlineList) return;
    node.onDeadlineList = false;
    if (node.prevDeadline) node.prevDeadline.nextDeadline = node.nextDeadline;
    else this.head = node.nextDeadline;
    if (node.nextDeadline) node.nextDeadline.prevDeadline = node.prevDeadline;
    else this.tail = node.prevDeadline;
    node.prevDeadline = node.nextDeadline = null;
    // The timer stays armed; when it fires it re-arms for whatever is oldest then.
  }

  private arm(at: number): void {
    this.timerAt = at;
    this.timer = setTimeout(this.fire, Math.max(0, at - this.now()));
  }

  private expire(): void {
    this.timer = null;
    const now = this.now();
    let node = this.head;
    while (node !== null && node.deadlineAt <= now) {
      this.remove(node);
      node.deadlineExpired();
      node = this.head;
    }
    if (node !== null) this.arm(node.deadlineAt);
  }

  get size(): number {
    let n = 0;
    for (let node = this.head; node; node = node.nextDeadline) n++;
    return n;
  }

  /** Deadline the pending timer is armed for (tests). */
  get armedAt(): number | null {
    return this.timer === null ? null : this.timerAt;
  }
}
