// HTTPS backends over HTTP/1.1, for real: a throwaway CA (test/certs.ts), Bun.serve TLS backends, and the
// proxy verifying (or, with -k, not verifying) them. A user adds a CA with NODE_EXTRA_CA_CERTS, which Bun
// reads once at process start, so every case that needs the test CA trusted runs the proxy as a child
// process with that variable set explicitly (this machine's environment already points it at the system
// bundle). Cases that need no trusted CA run in-process, where the test CA is untrusted.

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import tls from "node:tls";
import type { Server } from "bun";
import { PROBE_USER_AGENT } from "../src/upstream/probe.ts";
import { type CertFiles, makePki, type TestPki } from "./certs.ts";
import { closedPort, logLines, proxy, rawExchange, spawnMain, statusOf, waitFor } from "./helpers.ts";

const SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";
/** A cold `bun src/main.ts` is up in well under a second; this bounds a slow, loaded machine. */
const SPAWN_DEADLINE_MS = 10_000;

let pki: TestPki;
beforeAll(() => {
  pki = makePki();
});
afterAll(() => pki?.cleanup());

/** Everything started by a test, stopped after it whatever happened. */
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Seen {
  host: string | null;
  clientPort: number;
}

/** A Bun.serve TLS backend answering "tls-ok <path>" and recording Host and the client's source port. */
function tlsBackend(certs: CertFiles | Parameters<typeof Bun.serve>[0]["tls"]) {
  const seen: Seen[] = [];
  const tlsOpt = certs !== undefined && "certPath" in certs ? { cert: certs.cert, key: certs.key } : certs;
  const server: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: tlsOpt,
    fetch(req, srv) {
      // A spawned proxy also sends active health probes; only proxied requests count here.
      if (req.headers.get("user-agent") === PROBE_USER_AGENT) return new Response("ok");
      seen.push({ host: req.headers.get("host"), clientPort: srv.requestIP(req)?.port ?? -1 });
      return new Response(`tls-ok ${new URL(req.url).pathname}`);
    },
  });
  cleanups.push(() => server.stop(true));
  return { port: server.port!, seen };
}

function inProcess(backends: string[], extra: string[] = []) {
  const p = proxy(backends, extra);
  cleanups.push(p.close);
  return p;
}

interface Child {
  url: string;
  /** Everything the proxy wrote to stderr so far. */
  stderr(): string;
}

/** Runs `bun src/main.ts` with NODE_EXTRA_CA_CERTS=`caFile` (null: unset) and waits until it listens. */
async function spawnProxy(backends: string[], caFile: string | null, extra: string[] = []): Promise<Child> {
  const env: Record<string, string | undefined> = {
    ...process.env,
    NODE_EXTRA_CA_CERTS: caFile ?? undefined,
  };
  if (caFile === null) delete env.NODE_EXTRA_CA_CERTS;
  const args = ["--mode", "sp", "-h", "127.0.0.1", "-p", String(closedPort())];
  const { proc, stderr } = spawnMain([...args, ...backends.flatMap((b) => ["-b", b]), ...extra], env);
  cleanups.push(async () => {
    proc.kill("SIGKILL");
    await proc.exited;
  });
  const port = await waitFor(
    "the proxy to listen",
    () => {
      if (proc.exitCode !== null) throw new Error(`proxy exited ${proc.exitCode}:\n${stderr()}`);
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr());
      return m ? Number(m[1]) : 0;
    },
    SPAWN_DEADLINE_MS,
  );
  return { url: `http://127.0.0.1:${port}`, stderr };
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}

describe("verification with a CA from NODE_EXTRA_CA_CERTS", () => {
  test("trusted CA: 200 with the backend's body, and --tls-trace logs the handshake", async () => {
    const b = tlsBackend(pki.server);
    const p = await spawnProxy([`https://localhost:${b.port}`], pki.ca.certPath, ["--tls-trace"]);
    expect(await get(`${p.url}/hello`)).toEqual({ status: 200, body: "tls-ok /hello" });
    const trace = p.stderr();
    expect(trace).toContain("info(tls_trace): === TLS Handshake Complete ===");
    expect(trace).toContain(`info(tls_trace):   Host: localhost:${b.port}`);
    expect(trace).toMatch(/info\(tls_trace\): {3}Version: TLSv1\.3/);
    expect(trace).toMatch(/info\(tls_trace\): {3}Cipher Suite: TLS_\w+/);
    // Bun.serve negotiates no ALPN; the node:tls backend below shows what the proxy offers.
    expect(trace).toContain("info(tls_trace):   ALPN Protocol: none");
    expect(trace).toContain("info(tls_trace):   Host Verification: enabled");
  });

  test("an IP-literal backend is verified against the certificate's IP SAN", async () => {
    const b = tlsBackend(pki.server); // SANs: DNS:localhost, IP:127.0.0.1
    const p = await spawnProxy([`https://127.0.0.1:${b.port}`], pki.ca.certPath);
    expect(await get(`${p.url}/ip`)).toEqual({ status: 200, body: "tls-ok /ip" });
  });

  for (const [name, caFile] of [
    ["the system bundle", SYSTEM_BUNDLE],
    ["an empty file", "empty"],
    ["nothing (unset)", null],
  ] as const) {
    test(`untrusted CA (NODE_EXTRA_CA_CERTS = ${name}): 502 and a log line naming the cause`, async () => {
      const b = tlsBackend(pki.server);
      const p = await spawnProxy(
        [`https://localhost:${b.port}`],
        caFile === "empty" ? pki.emptyPath : caFile,
      );
      const r = await get(`${p.url}/x`);
      expect(r.status).toBe(502);
      expect(r.body).not.toContain("tls-ok");
      expect(b.seen).toHaveLength(0);
      const line = await waitFor("the failure log line", () =>
        p
          .stderr()
          .split("\n")
          .find((l) => l.includes("tls_failed")),
      );
      expect(line).toMatch(/^warn\(proxy\): GET \/x -> 502 tls_failed: /);
      expect(line).toContain(`localhost:${b.port}`);
      expect(line).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to (verify|get local issuer)|self.signed/);
    });
  }

  test("name mismatch (certificate only for other.example): 502 naming the altnames", async () => {
    const other = pki.issue("other", ["DNS:other.example"]);
    const b = tlsBackend(other);
    const p = await spawnProxy([`https://localhost:${b.port}`], pki.ca.certPath);
    const r = await get(`${p.url}/x`);
    expect(r.status).toBe(502);
    expect(b.seen).toHaveLength(0);
    const line = await waitFor("the failure log line", () =>
      p
        .stderr()
        .split("\n")
        .find((l) => l.includes("tls_failed")),
    );
    expect(line).toContain("ERR_TLS_CERT_ALTNAME_INVALID");
  });

  test("IP-literal backend whose certificate lacks that IP: 502", async () => {
    const other = pki.issue("other-ip", ["DNS:localhost"]);
    const b = tlsBackend(other);
    const p = await spawnProxy([`https://127.0.0.1:${b.port}`], pki.ca.certPath);
    expect((await get(`${p.url}/x`)).status).toBe(502);
    expect(b.seen).toHaveLength(0);
    await waitFor("the failure log line", () =>
      /tls_failed: .*ERR_TLS_CERT_ALTNAME_INVALID/.test(p.stderr()),
    );
  });

  test("SNI selects the backend's certificate: the default one would fail verification", async () => {
    // The default certificate covers only IP:127.0.0.1; the one for SNI "localhost" covers localhost. A
    // verified 200 for https://localhost therefore proves the proxy sent SNI "localhost".
    const fallback = pki.issue("fallback", ["IP:127.0.0.1"]);
    const b = tlsBackend([
      { cert: fallback.cert, key: fallback.key },
      { serverName: "localhost", cert: pki.server.cert, key: pki.server.key },
    ]);
    const p = await spawnProxy([`https://localhost:${b.port}`], pki.ca.certPath);
    expect(await get(`${p.url}/sni`)).toEqual({ status: 200, body: "tls-ok /sni" });
    // Control: the backend really does present the fallback (no localhost SAN) when no SNI arrives.
    expect(await handshakeCertCn(b.port, "")).toBe("fallback");
    expect(await handshakeCertCn(b.port, "localhost")).toBe("localhost");
  });
});

/** The CN of the certificate a TLS server presents for `serverName` ("" sends no SNI). */
async function handshakeCertCn(port: number, serverName: string): Promise<string> {
  const { promise, resolve, reject } = Promise.withResolvers<string>();
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    tls: { serverName, rejectUnauthorized: false },
    socket: {
      handshake(s) {
        resolve(String(s.getPeerCertificate()?.subject?.CN ?? ""));
      },
      data() {},
      error(_s, err) {
        reject(err);
      },
    },
  });
  try {
    return await promise;
  } finally {
    sock.end();
  }
}

describe("--insecure", () => {
  test("-k accepts an untrusted certificate, with a startup warning", async () => {
    const b = tlsBackend(pki.server);
    const p = await spawnProxy([`https://localhost:${b.port}`], SYSTEM_BUNDLE, ["-k"]);
    expect(p.stderr()).toMatch(/^warn\(tls\): --insecure: backend TLS certificates are NOT verified/m);
    expect(await get(`${p.url}/k`)).toEqual({ status: 200, body: "tls-ok /k" });
  });

  test("without -k the same in-process proxy refuses (the test CA is untrusted here)", async () => {
    const b = tlsBackend(pki.server);
    const from = logLines.length;
    const p = inProcess([`https://localhost:${b.port}`]);
    expect((await get(`${p.url}/x`)).status).toBe(502);
    expect(logLines.slice(from).some((l) => /tls_failed: TLS to localhost:\d+: /.test(l))).toBe(true);
  });

  test("-k also accepts a name mismatch, and --tls-trace says verification is off", async () => {
    const b = tlsBackend(pki.issue("mismatch", ["DNS:other.example"]));
    const from = logLines.length;
    const p = inProcess([`https://localhost:${b.port}`], ["-k", "--tls-trace"]);
    expect(await get(`${p.url}/m`)).toEqual({ status: 200, body: "tls-ok /m" });
    const lines = logLines.slice(from);
    expect(lines).toContain("info(tls_trace):   Host Verification: disabled");
    expect(lines.some((l) => /^info\(tls_trace\): {3}Version: TLSv1\.[23]$/.test(l))).toBe(true);
    expect(lines.some((l) => /^info\(tls_trace\): {3}Cipher Suite: \S+/.test(l))).toBe(true);
  });
});

describe("Host header and SNI sent to TLS backends", () => {
  const request = (host: string) => `GET /h HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;

  test("default (auto): the backend's name, not the client's", async () => {
    const b = tlsBackend(pki.server);
    const p = inProcess([`https://localhost:${b.port}`], ["-k"]);
    const raw = await rawExchange(p.port, request("client.example"));
    expect(statusOf(raw)).toBe(200);
    expect(b.seen.map((s) => s.host)).toEqual([`localhost:${b.port}`]);
  });

  test("port 443 is left out of the backend's Host", () => {
    const p = inProcess(["https://localhost"], ["-k"]);
    expect(p.pools[0]!.hostHeader).toBe("localhost");
  });

  test("--host-header preserve: the client's Host", async () => {
    const b = tlsBackend(pki.server);
    const p = inProcess([`https://localhost:${b.port}`], ["-k", "--host-header", "preserve"]);
    const raw = await rawExchange(p.port, request("client.example"));
    expect(statusOf(raw)).toBe(200);
    expect(b.seen.map((s) => s.host)).toEqual(["client.example"]);
  });

  test("SNI is the backend's host name, and absent for an IP literal (RFC 6066 forbids IPs there)", async () => {
    const names: (string | false)[] = [];
    const alpn: (string | false)[] = [];
    const server = tls.createServer(
      { cert: pki.server.cert, key: pki.server.key, ALPNProtocols: ["h2", "http/1.1"] },
      (sock) => {
        names.push(sock.servername ?? false);
        alpn.push(sock.alpnProtocol ?? false);
        sock.on("data", () => {
          sock.end("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nsni");
        });
      },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as { port: number }).port;

    const from = logLines.length;
    const byName = inProcess([`https://localhost:${port}`], ["-k", "--tls-trace"]);
    expect(await get(`${byName.url}/`)).toEqual({ status: 200, body: "sni" });
    expect(names).toEqual(["localhost"]);
    // The proxy offers only http/1.1 (h2 over TLS is not built), so a server preferring h2 still picks it.
    expect(alpn).toEqual(["http/1.1"]);
    expect(logLines.slice(from)).toContain("info(tls_trace):   ALPN Protocol: http/1.1");

    const byIp = inProcess([`https://127.0.0.1:${port}`], ["-k"]);
    expect(await get(`${byIp.url}/`)).toEqual({ status: 200, body: "sni" });
    expect(names).toEqual(["localhost", false]);
  });
});

describe("connection reuse over TLS", () => {
  test("sequential requests share one TLS connection", async () => {
    const b = tlsBackend(pki.server);
    const p = inProcess([`https://localhost:${b.port}`], ["-k"]);
    for (let i = 0; i < 5; i++)
      expect(await get(`${p.url}/r${i}`)).toEqual({ status: 200, body: `tls-ok /r${i}` });
    expect(b.seen).toHaveLength(5);
    expect(new Set(b.seen.map((s) => s.clientPort)).size).toBe(1);
    expect(p.pools[0]!.stats.opened).toBe(1);
    expect(p.pools[0]!.stats.reused).toBe(4);
  });

  test("verified (spawned) proxy reuses its TLS connection too", async () => {
    const b = tlsBackend(pki.server);
    const p = await spawnProxy([`https://localhost:${b.port}`], pki.ca.certPath, ["--tls-trace"]);
    for (let i = 0; i < 4; i++) expect((await get(`${p.url}/v${i}`)).status).toBe(200);
    expect(new Set(b.seen.map((s) => s.clientPort)).size).toBe(1);
    // One handshake logged for four requests.
    expect(p.stderr().split("=== TLS Handshake Complete ===").length - 1).toBe(1);
  });
});

describe("scheme mismatches fail fast", () => {
  for (const extra of [[], ["-k"]]) {
    test(`https:// to a plain-HTTP backend${extra.length ? " with -k" : ""}: 502, not a hang`, async () => {
      const plain = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("plain") });
      cleanups.push(() => plain.stop(true));
      const from = logLines.length;
      const p = inProcess([`https://127.0.0.1:${plain.port}`], extra);
      expect((await get(`${p.url}/`)).status).toBe(502);
      expect(logLines.slice(from).some((l) => /-> 502 tls_failed: .*WRONG_VERSION_NUMBER/.test(l))).toBe(
        true,
      );
    });
  }

  test("http:// to a TLS backend: 502, not a hang", async () => {
    const b = tlsBackend(pki.server);
    const p = inProcess([`http://127.0.0.1:${b.port}`]);
    expect((await get(`${p.url}/`)).status).toBe(502);
    expect(b.seen).toHaveLength(0);
  });
});
