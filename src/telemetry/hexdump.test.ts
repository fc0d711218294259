import { expect, test } from "bun:test";
import { hexdumpLines } from "./hexdump.ts";

test("hexdump -C layout", () => {
  const lines = hexdumpLines(new TextEncoder().encode("GET /ip HTTP/1.1\r\nHost: x"));
  expect(lines[0]).toBe("00000000  47 45 54 20 2f 69 70 20  48 54 54 50 2f 31 2e 31  |GET /ip HTTP/1.1|");
  expect(lines[1]).toBe("00000010  0d 0a 48 6f 73 74 3a 20  78                       |..Host: x|");
  expect(lines.length).toBe(2);
});
