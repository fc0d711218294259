import { expect, test } from "bun:test";
import { waitFor } from "../../test/helpers.ts";
import { type DeadlineNode, FifoDeadlines } from "./deadlines.ts";

function node(name: string, fired: string[]): DeadlineNode {
  return {
    deadlineAt: 0,
    prevDeadline: null,
    nextDeadline: null,
    onDeadlineList: false,
    deadlineExpired: () => fired.push(name),
  };
}

test("expires in start order, skips removed nodes, keeps one timer", async () => {
  let now = 1_000;
  const d = new FifoDeadlines(50, () => now);
  const fired: string[] = [];
  const a = node("a", fired);
  const b = node("b", fired);
  const c = node("c", fired);
  d.add(a);
  now += 10;
  d.add(b);
  now += 10;
  d.add(c);
  expect(d.size).toBe(3);
  expect(d.armedAt).toBe(1_050);
  d.remove(b);
  d.remove(b); // twice is harmless
  expect(d.size).toBe(2);
  now = 1_055; // a is due, c (due 1070) is not
  await waitFor("a to expire", () => fired.length === 1);
  expect(fired).toEqual(["a"]);
  expect(d.armedAt).toBe(1_070);
  now = 1_100;
  await waitFor("c to expire", () => fired.length === 2);
  expect(fired).toEqual(["a", "c"]);
  expect(d.size).toBe(0);
  expect(d.armedAt).toBeNull();
});

test("removing the only node leaves nothing to fire", async () => {
  const d = new FifoDeadlines(5);
  const fired: string[] = [];
  const a = node("a", fired);
  d.add(a);
  d.remove(a);
  await waitFor("the timer to run out", () => d.armedAt === null);
  expect(fired).toEqual([]);
});
