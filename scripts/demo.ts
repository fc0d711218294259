#!/usr/bin/env bun
// `npm run demo`: two demo backends (ids 1 and 2 on 9001/9002, or free ports if taken) and the
// load balancer on 8080 in front of them. Extra arguments go to the load balancer.
import { startDemoBackend } from "./backend.ts";

const DEMO_PORTS = [9001, 9002] as const;
const LB_PORT = 8080;

function startOn(id: string, port: number) {
  try {
    return startDemoBackend(id, port);
  } catch {
    return startDemoBackend(id, 0); // taken: any free port
  }
}

const backends = DEMO_PORTS.map((port, i) => startOn(String(i + 1), port));
const extra = process.argv.slice(2);
const hasPort = extra.some((a) => a === "-p" || a === "--port" || a.startsWith("--port="));
const lbArgs = [
  ...(hasPort ? [] : ["-p", String(LB_PORT)]),
  ...backends.flatMap((b) => ["-b", `127.0.0.1:${b.port}`]),
  ...extra,
];
const lb = Bun.spawn([process.execPath, `${import.meta.dir}/../src/main.ts`, ...lbArgs], {
  stdio: ["inherit", "inherit", "inherit"],
});
const portShown = hasPort ? extra[extra.findIndex((a) => a === "-p" || a === "--port") + 1] : String(LB_PORT);
process.stdout.write(
  [
    `demo backends: ${backends.map((b) => `${b.id} on 127.0.0.1:${b.port}`).join(", ")}`,
    `load balancer: load_balancer ${lbArgs.join(" ")}`,
    "",
    "try:",
    `  curl -s localhost:${portShown}/            # alternates between backend 1 and 2`,
    `  curl -s localhost:${portShown}/hello?x=1 -d 'some body'`,
    `  curl -si localhost:${portShown}/ | grep -i x-backend-id`,
    "Ctrl-C stops everything.",
    "",
  ].join("\n"),
);
const stop = () => {
  lb.kill("SIGTERM");
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
const code = await lb.exited;
for (const b of backends) b.stop();
process.exit(code);
