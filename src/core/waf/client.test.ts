import { describe, expect, test } from "bun:test";
import {
  type Cidr,
  cidrContains,
  formatIp,
  ipWordsHash32,
  parseCidr,
  parseIp,
  resolveClient,
  resolveClientInto,
} from "./client.ts";

function cidrs(...texts: string[]): Cidr[] {
  return texts.map((t) => {
    const c = parseCidr(t);
    if (c === null) throw new Error(`bad cidr ${t}`);
    return c;
  });
}

function canon(text: string): string | null {
  const w = parseIp(text);
  return w === null ? null : formatIp(w);
}

describe("parseIp / formatIp", () => {
  test("IPv4 round-trips and is stored v4-mapped", () => {
    expect(canon("192.168.1.20")).toBe("192.168.1.20");
    expect(canon("0.0.0.0")).toBe("0.0.0.0");
    expect(canon("255.255.255.255")).toBe("255.255.255.255");
    expect(Array.from(parseIp("1.2.3.4")!)).toEqual([0, 0, 0xffff, 0x01020304]);
  });

  test("v4-mapped IPv6 is the same address as IPv4 and prints dotted", () => {
    expect(canon("::ffff:1.2.3.4")).toBe("1.2.3.4");
    expect(canon("::FFFF:0102:0304")).toBe("1.2.3.4");
    expect(canon("0:0:0:0:0:ffff:1.2.3.4")).toBe("1.2.3.4");
  });

  test("IPv6 prints RFC 5952 canonical", () => {
    expect(canon("2001:0DB8:0000:0000:0000:0000:0000:0001")).toBe("2001:db8::1");
    expect(canon("::1")).toBe("::1");
    expect(canon("::")).toBe("::");
    expect(canon("fe80::")).toBe("fe80::");
    // A single zero group is not compressed; the longest run wins; the first run on a tie.
    expect(canon("2001:db8:0:1:1:1:1:1")).toBe("2001:db8:0:1:1:1:1:1");
    expect(canon("2001:0:0:1:0:0:0:1")).toBe("2001:0:0:1::1");
    expect(canon("2001:db8:0:0:1:0:0:1")).toBe("2001:db8::1:0:0:1");
    expect(canon("::2:3:4:5:6:7:8")).toBe("0:2:3:4:5:6:7:8");
  });

  test("format then parse gives the same words (many zero-heavy addresses)", () => {
    let seed = 12345;
    const next = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed;
    };
    const words = new Uint32Array(4);
    for (let n = 0; n < 5000; n++) {
      for (let w = 0; w < 4; w++) {
        const r = next();
        const hi = r & 1 ? 0 : next() & 0xffff;
        const lo = r & 2 ? 0 : next() & 0xffff;
        words[w] = ((hi << 16) | lo) >>> 0;
      }
      const text = formatIp(words);
      expect(text).toBe(text.toLowerCase());
      expect(text.includes(":::")).toBe(false);
      const back = parseIp(text);
      expect(back === null ? null : Array.from(back)).toEqual(Array.from(words));
    }
  });

  test("rejects malformed text, zone ids and ambiguous IPv4", () => {
    for (const bad of [
      "",
      "1",
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "01.2.3.4",
      "0x7f.0.0.1",
      "2130706433",
      "1.2.3.4 ",
      "fe80::1%eth0",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "1::2::3",
      "1:::2",
      ":1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:",
      "12345::1",
      "1:2:3:4:5:6:7::8",
      "::1.2.3",
      "::ffff:1.2.3.4:5",
      "unknown",
    ]) {
      expect({ bad, ip: parseIp(bad) }).toEqual({ bad, ip: null });
    }
  });
});

describe("parseCidr / cidrContains", () => {
  test("IPv4 CIDR matches IPv4 and v4-mapped IPv6, not its neighbours", () => {
    const [net] = cidrs("10.0.0.0/8");
    expect(net!.prefix).toBe(104);
    expect(cidrContains(net!, parseIp("10.255.1.2")!)).toBe(true);
    expect(cidrContains(net!, parseIp("::ffff:10.0.0.1")!)).toBe(true);
    expect(cidrContains(net!, parseIp("11.0.0.0")!)).toBe(false);
    expect(cidrContains(net!, parseIp("9.255.255.255")!)).toBe(false);
    expect(cidrContains(net!, parseIp("::a00:1")!)).toBe(false);
  });

  test("172.16.0.0/12 boundaries", () => {
    const [net] = cidrs("172.16.0.0/12");
    expect(cidrContains(net!, parseIp("172.31.255.255")!)).toBe(true);
    expect(cidrContains(net!, parseIp("172.32.0.0")!)).toBe(false);
    expect(cidrContains(net!, parseIp("172.15.255.255")!)).toBe(false);
  });

  test("IPv6 CIDRs, host routes and /0", () => {
    const [v6, host4, host6, all4] = cidrs("2001:db8::/32", "192.0.2.7", "::1", "0.0.0.0/0");
    expect(cidrContains(v6!, parseIp("2001:db8:ffff::1")!)).toBe(true);
    expect(cidrContains(v6!, parseIp("2001:db9::1")!)).toBe(false);
    expect(cidrContains(host4!, parseIp("192.0.2.7")!)).toBe(true);
    expect(cidrContains(host4!, parseIp("192.0.2.8")!)).toBe(false);
    expect(cidrContains(host6!, parseIp("::1")!)).toBe(true);
    expect(cidrContains(host6!, parseIp("::2")!)).toBe(false);
    expect(cidrContains(all4!, parseIp("8.8.8.8")!)).toBe(true);
    expect(cidrContains(all4!, parseIp("2001:db8::1")!)).toBe(false);
  });

  test("prefixes that are not word-aligned", () => {
    const [net] = cidrs("2001:db8:8000::/33");
    expect(cidrContains(net!, parseIp("2001:db8:8000::1")!)).toBe(true);
    expect(cidrContains(net!, parseIp("2001:db8:ffff::1")!)).toBe(true);
    expect(cidrContains(net!, parseIp("2001:db8:7fff::1")!)).toBe(false);
  });

  test("host bits below the prefix are cleared", () => {
    const [net] = cidrs("10.1.2.3/8");
    expect(formatIp(net!.words)).toBe("10.0.0.0");
    expect(cidrContains(net!, parseIp("10.9.9.9")!)).toBe(true);
  });

  test("rejects bad prefixes and addresses", () => {
    for (const bad of [
      "10.0.0.0/33",
      "::/129",
      "10.0.0.0/",
      "10.0.0.0/08",
      "10.0.0.0/8x",
      "10.0.0/8",
      "x/8",
    ]) {
      expect({ bad, cidr: parseCidr(bad) }).toEqual({ bad, cidr: null });
    }
  });
});

describe("resolveClient", () => {
  const trusted = cidrs("10.0.0.0/8", "172.16.0.0/12", "fd00::/8");

  test("an untrusted peer is the client whatever X-Forwarded-For says", () => {
    expect(resolveClient("203.0.113.9", ["1.1.1.1"], trusted)).toBe("203.0.113.9");
    expect(resolveClient("203.0.113.9", ["10.0.0.1"], trusted)).toBe("203.0.113.9");
    expect(resolveClient("203.0.113.9", [], [])).toBe("203.0.113.9");
    expect(resolveClient("1.1.1.1", ["2.2.2.2"], [])).toBe("1.1.1.1");
  });

  test("a trusted peer without X-Forwarded-For is the client", () => {
    expect(resolveClient("10.0.0.1", [], trusted)).toBe("10.0.0.1");
    expect(resolveClient("10.0.0.1", [""], trusted)).toBe("10.0.0.1");
  });

  test("walks from the right, skipping trusted hops", () => {
    expect(resolveClient("10.0.0.1", ["198.51.100.1, 203.0.113.5, 172.16.0.9, 10.1.1.1"], trusted)).toBe(
      "203.0.113.5",
    );
  });

  test("a spoofed leftmost entry cannot replace the real client", () => {
    // The client sent "X-Forwarded-For: 1.2.3.4"; our proxy appended the real address.
    expect(resolveClient("10.0.0.1", ["1.2.3.4, 198.51.100.7"], trusted)).toBe("198.51.100.7");
  });

  test("several header lines are one list in order", () => {
    expect(resolveClient("10.0.0.1", ["198.51.100.1", "203.0.113.5, 10.2.2.2", "172.16.0.1"], trusted)).toBe(
      "203.0.113.5",
    );
    expect(resolveClient("10.0.0.1", ["198.51.100.1", "10.2.2.2", "172.16.0.1"], trusted)).toBe(
      "198.51.100.1",
    );
  });

  test("garbage entries are skipped", () => {
    expect(resolveClient("10.0.0.1", ["198.51.100.1, unknown, , fe80::1%eth0, 999.1.1.1"], trusted)).toBe(
      "198.51.100.1",
    );
    expect(resolveClient("10.0.0.1", ["unknown"], trusted)).toBe("10.0.0.1");
  });

  test("all entries trusted: the leftmost valid one", () => {
    expect(resolveClient("10.0.0.1", ["garbage, 10.9.9.9, 172.16.5.5, nope"], trusted)).toBe("10.9.9.9");
  });

  test("ports and brackets in entries; canonical output", () => {
    expect(resolveClient("10.0.0.1", ["198.51.100.1:5555"], trusted)).toBe("198.51.100.1");
    expect(resolveClient("10.0.0.1", ["[2001:DB8::0001]:443"], trusted)).toBe("2001:db8::1");
    expect(resolveClient("10.0.0.1", ["[2001:db8::1]"], trusted)).toBe("2001:db8::1");
    expect(resolveClient("10.0.0.1", ["2001:db8:0:0::1"], trusted)).toBe("2001:db8::1");
    expect(resolveClient("10.0.0.1", ["::ffff:198.51.100.1"], trusted)).toBe("198.51.100.1");
    expect(resolveClient("10.0.0.1", ["\t198.51.100.1 \t"], trusted)).toBe("198.51.100.1");
    // Not accepted: v4 in brackets, bad ports, a port on bare IPv6 (ambiguous).
    for (const bad of ["[1.2.3.4]", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:x", "[::1]x", "[::1"]) {
      expect({ bad, ip: resolveClient("10.0.0.1", [bad], trusted) }).toEqual({ bad, ip: "10.0.0.1" });
    }
  });

  test("a v4-mapped trusted peer (dual-stack socket) is trusted", () => {
    expect(resolveClient("::ffff:10.0.0.1", ["198.51.100.1"], trusted)).toBe("198.51.100.1");
    expect(resolveClient("fd12::1", ["198.51.100.1, fd00::2"], trusted)).toBe("198.51.100.1");
  });

  test("a peer that is not an address is returned as given", () => {
    expect(resolveClient("unix:/run/lb.sock", ["1.2.3.4"], trusted)).toBe("unix:/run/lb.sock");
    expect(resolveClientInto("nope", [], trusted, new Uint32Array(4))).toBe(false);
  });

  test("resolveClientInto gives the words; equal addresses hash equally", () => {
    const a = new Uint32Array(4);
    const b = new Uint32Array(4);
    expect(resolveClientInto("10.0.0.1", ["198.51.100.1"], trusted, a)).toBe(true);
    expect(resolveClientInto("::ffff:198.51.100.1", [], trusted, b)).toBe(true);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(ipWordsHash32(a, 7)).toBe(ipWordsHash32(b, 7));
    expect(ipWordsHash32(a, 7)).not.toBe(ipWordsHash32(parseIp("198.51.100.2")!, 7));
  });
});
