#!/usr/bin/env bun
// Time from exec of the load balancer to its first proxied response (median of several starts).
//   bun scripts/startup.ts [path-to-binary]   (default dist/load_balancer)
import { startDemoBackend } from "./backend.ts";

const STARTS = 5;
const POLL_DEADLINE_MS = 10_000;
const binary = process.argv[2] ?? "dist/load_balancer";

function freePort(): number {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = s.port!;
  s.stop(true);
  return port;
}

const be = startDemoBackend("1", 0);
const times: number[] = [];
for (let i = 0; i < STARTS; i++) {
  const port = freePort();
  const t0 = performance.now();
  const proc = Bun.spawn(
    [
      binary,
      "--mode",
      "sp",
      "-h",
      "127.0.0.1",
      "-p",
      String(port),
      "-b",
      `127.0.0.1:${be.port}`,
      "-l",
      "warn",
    ],
    {
      stderr: "inherit",
    },
  );
  let ok = false;
  while (!ok && performance.now() - t0 < POLL_DEADLINE_MS) {
    try {
      ok = (await fetch(`http://127.0.0.1:${port}/`)).status === 200;
    } catch {
      await Bun.sleep(1);
    }
  }
  times.push(performance.now() - t0);
  proc.kill();
  await proc.exited;
  if (!ok) throw new Error("no proxied response within the deadline");
}
be.stop();
times.sort((a, b) => a - b);
console.log(
  `exec -> first proxied response over ${STARTS} starts: median ${times[STARTS >> 1]!.toFixed(0)} ms (min ${times[0]!.toFixed(0)}, max ${times[STARTS - 1]!.toFixed(0)})`,
);
process.exit(0);
