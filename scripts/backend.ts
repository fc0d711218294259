#!/usr/bin/env bun
// Demo backend: answers every request with its id, the method, path, headers and body length.
//   bun scripts/backend.ts --port 9001 --id 1
import type { Server } from "bun";

export interface DemoBackend {
  readonly id: string;
  readonly port: number;
  stop(): void;
}

/** Starts a demo backend; port 0 picks a free one. */
export function startDemoBackend(id: string, port: number, hostname = "127.0.0.1"): DemoBackend {
  const server: Server<undefined> = Bun.serve({
    hostname,
    port,
    async fetch(req) {
      const url = new URL(req.url);
      let bodyBytes = 0;
      if (req.body) for await (const chunk of req.body) bodyBytes += chunk.length;
      const headers: Record<string, string> = {};
      req.headers.forEach((v, k) => {
        headers[k] = v;
      });
      const answer = { backend: id, method: req.method, path: url.pathname + url.search, headers, bodyBytes };
      return new Response(`${JSON.stringify(answer, null, 2)}\n`, {
        headers: { "content-type": "application/json", "x-backend-id": id },
      });
    },
  });
  return { id, port: server.port ?? port, stop: () => server.stop(true) };
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const portText = flag(args, "--port") ?? "9001";
  const id = flag(args, "--id") ?? "1";
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535) {
    process.stderr.write(`--port: "${portText}" is not a port (0-65535)\n`);
    process.exit(2);
  }
  const b = startDemoBackend(id, Number(portText), flag(args, "--host") ?? "127.0.0.1");
  process.stdout.write(`demo backend ${b.id} listening on http://127.0.0.1:${b.port}\n`);
}
