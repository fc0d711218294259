// Shared test plumbing: real servers on 127.0.0.1 port 0, raw sockets, condition waits.
import type { Server } from "bun";
import { parseArgs } from "../src/cli/parse.ts";
import type { Options } from "../src/config/options.ts";
import { type Running, startProxy } from "../src/proxy/server.ts";
import { setLogSink } from "../src/telemetry/log.ts";

/** Upper bound for any condition a test waits for. */
export const WAIT_DEADLINE_MS = 5_000;
const POLL_INTERVAL_MS = 10;

/** Polls `cond` until it is truthy or the deadline passes (then throws with `what`). */
export async function waitFor<T>(
  what: string,
  cond: () => T | Promise<T>,
  deadlineMs = WAIT_DEADLINE_MS,
): Promise<T> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
}

export type Handler = (req: Request, server: Server<undefined>) => Response | Promise<Response>;

/** A Bun backend on a free port that records what it received. */
export function backend(handler: Handler) {
  const seen: { method: string; url: string; headers: Headers; body: Uint8Array }[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req, srv) {
      const body = new Uint8Array(await req.clone().arrayBuffer());
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      return handler(req, srv);
    },
  });
  return { server, port: server.port!, seen, stop: () => server.stop(true) };
}

/** Captured log lines of in-process proxies. */
export const logLines: string[] = [];
setLogSink((line) => {
  logLines.push(line);
  if (process.env.LB_TEST_LOG) process.stderr.write(line + "\n");
});

/** Options as the CLI would produce them from `args` (plus listen on 127.0.0.1:0, sp mode). */
export function optionsFrom(args: string[]): Options {
  const parsed = parseArgs(["--mode", "sp", "-h", "127.0.0.1", "-p", "1", ...args]);
  if (parsed.kind !== "run") throw new Error("expected run options");
  // port 0 is not a valid CLI value; tests need an ephemeral port.
  return { ...parsed.options, port: 0 };
}

/** An in-process zzz-lb in front of `backends` ("host:port" specs). */
export function proxy(backends: string[], extra: string[] = []): Running & { port: number; url: string } {
  const running = startProxy(optionsFrom([...backends.flatMap((b) => ["-b", b]), ...extra]));
  const port = running.server.port!;
  return Object.assign(running, { port, url: `http://127.0.0.1:${port}` });
}

/** Sends raw bytes and collects everything until the server closes or `idleMs` of silence. */
export async function rawExchange(port: number, data: string | Uint8Array, idleMs = 500): Promise<string> {
  const chunks: Uint8Array[] = [];
  return await new Promise<string>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | null = null;
    const finish = () => resolve(Buffer.concat(chunks).toString("latin1"));
    const arm = (sock: { end(): void }) => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        sock.end();
        finish();
      }, idleMs);
    };
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(sock) {
          sock.write(data);
          arm(sock);
        },
        data(sock, d) {
          chunks.push(new Uint8Array(d));
          arm(sock);
        },
        close() {
          if (timer) clearTimeout(timer);
          finish();
        },
        error(_s, err) {
          reject(err);
        },
      },
    }).catch(reject);
  });
}
