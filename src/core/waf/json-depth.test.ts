import { describe, expect, test } from "bun:test";
import { isJsonContentType, JsonDepthScanner } from "./json-depth.ts";

const enc = new TextEncoder();

function scanWhole(text: string, maxDepth: number): string {
  return new JsonDepthScanner(maxDepth).push(enc.encode(text));
}

/** Feeds `bytes` in pieces split at the given offsets; the last verdict. */
function scanSplit(bytes: Uint8Array, maxDepth: number, cuts: number[]): string {
  const s = new JsonDepthScanner(maxDepth);
  let from = 0;
  let verdict = "ok";
  for (const cut of [...cuts, bytes.length]) {
    verdict = s.push(bytes.subarray(from, cut));
    from = cut;
  }
  return verdict;
}

describe("JsonDepthScanner", () => {
  test("1 MB of [ is rejected at byte index maxDepth without reading the rest", () => {
    const maxDepth = 20;
    const body = new Uint8Array(1024 * 1024).fill(0x5b);
    const s = new JsonDepthScanner(maxDepth);
    expect(s.push(body)).toBe("too_deep");
    // Bytes 0..maxDepth-1 reach depth maxDepth; byte index maxDepth is the first one too deep.
    expect(s.bytesScanned).toBe(maxDepth + 1);
    // Once too deep, always too deep.
    expect(s.push(enc.encode("]]]"))).toBe("too_deep");
  });

  test("byte-by-byte: the verdict flips exactly at byte index maxDepth", () => {
    const maxDepth = 5;
    const s = new JsonDepthScanner(maxDepth);
    const one = new Uint8Array([0x7b]);
    for (let i = 0; i < maxDepth; i++) expect(s.push(one)).toBe("ok");
    expect(s.push(one)).toBe("too_deep");
    expect(s.bytesScanned).toBe(maxDepth + 1);
  });

  test("depth exactly max passes; one more fails; objects and arrays both count", () => {
    expect(scanWhole("[[[1]]]", 3)).toBe("ok");
    expect(scanWhole("[[[[1]]]]", 3)).toBe("too_deep");
    expect(scanWhole('{"a":{"b":[1]}}', 3)).toBe("ok");
    expect(scanWhole('{"a":{"b":[{}]}}', 3)).toBe("too_deep");
    // Siblings do not add up.
    expect(scanWhole("[[1],[2],[3],[[4]]]", 3)).toBe("ok");
    expect(scanWhole("1", 0)).toBe("ok");
    expect(scanWhole("[]", 0)).toBe("too_deep");
  });

  test("brackets inside strings do not count, escaped quotes do not end strings", () => {
    expect(scanWhole('["[[[[["]', 1)).toBe("ok");
    expect(scanWhole('{"k{[":"v]}"}', 1)).toBe("ok");
    expect(scanWhole('["a\\"[[[[", "\\\\", [1]]', 2)).toBe("ok");
    // After "\\\\" the string ends, so the following brackets count.
    expect(scanWhole('["\\\\", [[1]]]', 2)).toBe("too_deep");
  });

  test("stray closers cannot buy depth for later openers", () => {
    expect(scanWhole("]]]]]][[[", 2)).toBe("too_deep");
    expect(scanWhole("}}[[", 2)).toBe("ok");
  });

  test("a backslash at a chunk end escapes the first byte of the next chunk", () => {
    const s = new JsonDepthScanner(1);
    expect(s.push(enc.encode('["abc\\'))).toBe("ok");
    // This quote is escaped, so the brackets after it are still inside the string.
    expect(s.push(enc.encode('"[[[[ "]'))).toBe("ok");
    // Back at depth 0: one level is fine, two are not.
    expect(s.push(enc.encode("["))).toBe("ok");
    expect(s.push(enc.encode("["))).toBe("too_deep");
    // Control: without the backslash the quote ends the string and the brackets count.
    const c = new JsonDepthScanner(1);
    expect(c.push(enc.encode('["abc'))).toBe("ok");
    expect(c.push(enc.encode('"[[[[ "]'))).toBe("too_deep");
  });

  test("splitting a sample at every position (one and two cuts) gives the whole-body answer", () => {
    const samples: [string, number][] = [
      ['{"a":[1,{"b":"x\\"]]}}}\\\\"},[[2]]],"c":"{{{{"}', 3],
      ['{"a":[1,{"b":"x\\"]]}}}\\\\"},[[2]]],"c":"{{{{"}', 4],
      ['["\\\\\\"[", {"\\u005b": [[[]]]}]', 4],
      ['["\\\\\\"[", {"\\u005b": [[[]]]}]', 5],
      ['"é[ü]" [["ö"]]', 2],
    ];
    for (const [text, maxDepth] of samples) {
      const bytes = enc.encode(text);
      const whole = scanWhole(text, maxDepth);
      for (let a = 0; a <= bytes.length; a++) {
        expect({ text, a, v: scanSplit(bytes, maxDepth, [a]) }).toEqual({ text, a, v: whole });
        for (let b = a; b <= bytes.length; b++) {
          expect({ text, a, b, v: scanSplit(bytes, maxDepth, [a, b]) }).toEqual({ text, a, b, v: whole });
        }
      }
    }
    // The samples cover both answers.
    expect(scanWhole(samples[0]![0], 3)).toBe("too_deep");
    expect(scanWhole(samples[1]![0], 4)).toBe("ok");
  });
});

describe("isJsonContentType", () => {
  test("application/json and +json, any case and parameters", () => {
    for (const v of [
      "application/json",
      "Application/JSON",
      "application/json; charset=utf-8",
      "application/json;charset=UTF-16",
      "  application/json  ; foo=bar",
      "application/problem+json",
      "application/vnd.api+json; charset=utf-8",
      "APPLICATION/LD+JSON",
    ]) {
      expect({ v, json: isJsonContentType(v) }).toEqual({ v, json: true });
    }
  });

  test("everything else", () => {
    for (const v of [
      null,
      "",
      "text/json",
      "application/jsonx",
      "application/json-seq",
      "application/x-www-form-urlencoded",
      "application/+json",
      "application/",
      "multipart/form-data; boundary=json",
      "text/plain; type=application/json",
      "application/jsonp",
    ]) {
      expect({ v, json: isJsonContentType(v) }).toEqual({ v, json: false });
    }
  });
});
