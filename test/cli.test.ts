// The real entry point as a user runs it: exit codes, the one-line errors, --help/--version, and one
// end-to-end run with a graceful SIGTERM drain.
import { afterEach, describe, expect, test } from "bun:test";
import pkg from "../package.json" with { type: "json" };
import { FLAGS, type FlagDef } from "../src/cli/flags.ts";
import { backend, closedPort, rawBackend, spawnMain, waitFor } from "./helpers.ts";

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `src/main.ts args` to completion. */
async function run(args: string[]): Promise<Ran> {
  const m = spawnMain(args);
  const [stdout, code] = await Promise.all([new Response(m.proc.stdout).text(), m.proc.exited, m.stderrDone]);
  return { code, stdout, stderr: m.stderr() };
}

const errLines = (stderr: string) => stderr.split("\n").filter((l) => l.startsWith("err(cli): "));

describe("bad command lines exit 2 with one err(cli) line", () => {
  // [args, what the line must contain: the flag, the value, and what is accepted]
  const cases: [string[], string[]][] = [
    [
      ["-p", "70000"],
      ["--port", '"70000"', "1-65535"],
    ],
    [
      ["-s", "foo"],
      ["--strategy", '"foo"', "round_robin"],
    ],
    [
      ["-b", "nohost"],
      ["--backend", '"nohost"', "has no port", "HOST:PORT"],
    ],
    [
      ["-c", "/nonexistent.json"],
      ["--config", '"/nonexistent.json"', "does not exist", "readable regular file"],
    ],
    [
      ["--prot", "1"],
      ['"--prot"', "not a known flag", "did you mean --port"],
    ],
  ];
  for (const [args, needles] of cases) {
    test(args.join(" "), async () => {
      const r = await run(args);
      expect(r.code).toBe(2);
      const lines = errLines(r.stderr);
      expect(lines).toHaveLength(1);
      for (const n of needles) expect(lines[0]).toContain(n);
      expect(r.stdout).toBe("");
    });
  }

  const notYet: [string[], string][] = [[["--otel-endpoint", "localhost:4318"], "--otel-endpoint"]];
  for (const [args, flag] of notYet) {
    test(`${args.join(" ")} -> exit 2, "not implemented yet"`, async () => {
      // A valid backend, so the only thing wrong is the unbuilt feature.
      const r = await run([...args, "-b", "127.0.0.1:9"]);
      expect(r.code).toBe(2);
      const lines = errLines(r.stderr);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(flag);
      expect(lines[0]).toContain("not implemented yet");
    });
  }

  test("no -b -> exit 2 pointing at npm run demo", async () => {
    const r = await run(["-p", "8080"]);
    expect(r.code).toBe(2);
    const lines = errLines(r.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("-b HOST:PORT");
    expect(lines[0]).toContain("npm run demo");
  });
});

describe("--help and --version", () => {
  test("--help exits 0, lists every long flag with its default, and shows 3 examples", async () => {
    const r = await run(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    const lines = r.stdout.split("\n");
    // Flag lines start with 2 spaces (short form) or 6 (long only); descriptions continue at column 28.
    const isFlagLine = (l: string) => /^ {2}(?:-[A-Za-z], | {4})--[a-z]/.test(l);
    for (const [name, def] of Object.entries(FLAGS) as [string, FlagDef][]) {
      const at = lines.findIndex((l) => isFlagLine(l) && new RegExp(`--${name}(?: |$)`).test(l));
      expect({ flag: name, listed: at >= 0 }).toEqual({ flag: name, listed: true });
      let end = at + 1;
      while (end < lines.length && lines[end]!.startsWith(" ".repeat(28))) end++;
      const entry = lines
        .slice(at, end)
        .map((l) => l.trim())
        .join(" ");
      if (def.type === "string" && def.default !== undefined) {
        const shown = def.default === "" ? "''" : def.default;
        expect({ flag: name, entry }).toEqual({
          flag: name,
          entry: expect.stringContaining(`(default: ${shown})`),
        });
      }
    }
    const examples = lines
      .slice(lines.indexOf("Examples:") + 1)
      .filter((l) => l.startsWith("  load_balancer "));
    expect(examples).toHaveLength(3);
  });

  test("--version prints load_balancer and the package.json version", async () => {
    const r = await run(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`load_balancer ${pkg.version}\n`);
  });
});

describe("end to end", () => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  test("serves through the real binary; SIGTERM drains an in-flight request and exits 0", async () => {
    let release: () => void = () => {};
    const released = new Promise<void>((r) => {
      release = r;
    });
    const be = backend(async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/slow") await released;
      return new Response(`backend says ${path}`);
    });
    cleanups.push(be.stop);

    const { proc, port, stderr, stderrDone } = startMain(be.port);
    cleanups.push(() => proc.kill("SIGKILL"));

    const url = `http://127.0.0.1:${port}`;
    const first = await waitFor("the proxy to answer", () => fetch(url + "/hello").catch(() => null), 10_000);
    expect(first!.status).toBe(200);
    expect(await first!.text()).toBe("backend says /hello");
    expect(stderr()).toContain(`info(main): listening on http://127.0.0.1:${port}`);

    const slow = fetch(url + "/slow");
    await waitFor("the slow request at the backend", () => be.seen.some((s) => s.url.endsWith("/slow")));
    proc.kill("SIGTERM");
    await waitFor("the drain log line", () => stderr().includes("SIGTERM: draining"));
    // Still draining: the in-flight request holds the process open.
    expect(proc.exitCode).toBeNull();
    release();
    const res = await slow;
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("backend says /slow");
    expect(await proc.exited).toBe(0);
    await stderrDone;
    expect(stderr()).toContain("info(main): stopped");
    expect(stderr()).not.toContain("err(");
  });

  test("a backend dying mid-body costs one warn line on stderr, not a stack trace", async () => {
    const be = rawBackend((conn) => {
      if (!conn.received.endsWith("\r\n\r\n")) return;
      conn.sock.write(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789",
      );
      setTimeout(() => conn.sock.terminate(), 20);
    });
    cleanups.push(be.stop);
    const { proc, port, stderr, stderrDone } = startMain(be.port);
    cleanups.push(() => proc.kill("SIGKILL"));
    await waitFor("the listening line", () => stderr().includes("info(main): listening"), 10_000);

    const res = await fetch(`http://127.0.0.1:${port}/cut`);
    expect(res.status).toBe(200);
    expect(
      await res.arrayBuffer().then(
        () => "complete",
        () => "cut",
      ),
    ).toBe("cut");
    await waitFor("the warn line", () => stderr().includes("cut short"));
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
    await stderrDone;
    const lines = stderr().trimEnd().split("\n");
    // Every line is a logger line; Bun's own error print would add "error: ..." and source excerpts.
    expect(lines.filter((l) => !/^(err|warn|info|debug)\([a-z_]+\): /.test(l))).toEqual([]);
    expect(lines.filter((l) => l.includes("/cut"))).toHaveLength(1);
  });
});

/** Starts the real entry point in sp mode on a free port in front of one backend. */
function startMain(backendPort: number) {
  const port = closedPort();
  const m = spawnMain([
    "--mode",
    "sp",
    "-h",
    "127.0.0.1",
    "-p",
    String(port),
    "-b",
    `127.0.0.1:${backendPort}`,
  ]);
  return { ...m, port };
}
