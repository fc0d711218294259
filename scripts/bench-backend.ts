// Fallback benchmark backend for machines without nginx: the same three routes as the nginx backend in
// scripts/bench.ts. It runs as its own process (not inside the bench driver) so that it gets its own event
// loop and can be killed like any other child.
//
// Usage: bun scripts/bench-backend.ts <port> <path-to-64KiB-file>

// Makes this file a module, which top-level await requires.
export {};

const HELLO_BODY = "hello";
const POST_REPLY = "ok";

const port = Number(process.argv[2]);
const bigPath = process.argv[3];
if (!Number.isInteger(port) || port <= 0 || !bigPath) {
  console.error("usage: bun scripts/bench-backend.ts <port> <big-file>");
  process.exit(2);
}
// Held in memory: the point is to measure the proxy, not the backend's disk reads.
const big = new Uint8Array(await Bun.file(bigPath).arrayBuffer());

Bun.serve({
  hostname: "127.0.0.1",
  port,
  async fetch(req) {
    const path = new URL(req.url).pathname;
    if (path === "/") return new Response(HELLO_BODY);
    if (path === "/big")
      return new Response(big, { headers: { "content-type": "application/octet-stream" } });
    if (path === "/post") {
      // Read the whole body before answering, like a real application would.
      await req.arrayBuffer();
      return new Response(POST_REPLY);
    }
    return new Response("not found", { status: 404 });
  },
});
