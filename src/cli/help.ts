// --help text, rendered from the flag table so a new flag or a deleted NOT_YET line shows up here.
import { FLAGS, type FlagDef, GROUPS, NOT_YET, PROGRAM, VERSION } from "./flags.ts";

/** Fits an 80-column terminal. */
const WIDTH = 80;
const LEFT = 28;

const EXAMPLES: readonly (readonly [string, string])[] = [
  [`${PROGRAM} -b 127.0.0.1:9001 -b 127.0.0.1:9002 -p 8080`, "Round-robin between two local backends."],
  [
    `${PROGRAM} -b api.example.com:443 --host-header backend`,
    "An HTTPS API (443 means TLS), sent its own name as Host.",
  ],
  [
    `${PROGRAM} --mode sp -b https://10.0.0.5:8443 -k -l debug`,
    "One TLS backend with a self-signed certificate, verbose logs.",
  ],
];

const NBSP = "\u00a0";

/** Breaks at spaces; join words with NBSP to keep them on one line. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : line + " " + word;
    }
  }
  if (line !== "") lines.push(line);
  return lines.map((l) => l.replaceAll(NBSP, " "));
}

function describe(name: string, def: FlagDef): string {
  const flag = `--${name}`;
  let text = def.description ?? "";
  if (def.choices) {
    const words = def.choices.map((c) =>
      NOT_YET[`${flag} ${c}`] !== undefined ? `${c}${NBSP}(not${NBSP}yet)` : c,
    );
    text += `: ${words.join(" | ")}`;
  }
  if (def.type === "string" && def.default !== undefined) {
    text += ` (default:${NBSP}${def.default === "" ? "''" : def.default})`;
  }
  if (NOT_YET[flag] !== undefined) text += ` (not${NBSP}yet)`;
  return text;
}

export function renderHelp(): string {
  const out: string[] = [
    `${PROGRAM} ${VERSION} - zzz-lb, an HTTP load balancer`,
    "",
    `Usage: ${PROGRAM} [FLAGS] -b BACKEND [-b BACKEND ...]`,
    `       ${PROGRAM} --help | --version`,
    "",
    "A flag's value is the next argument or follows '=': -p 8080, --port=8080.",
    "A value starting with '-' needs the '=' form. Only -b may be repeated.",
  ];
  const entries = Object.entries(FLAGS) as [string, FlagDef][];
  for (const group of GROUPS) {
    out.push("", `${group}:`);
    for (const [name, def] of entries) {
      if (def.group !== group) continue;
      const short = typeof def.alias === "string" ? `-${def.alias}, ` : "    ";
      const hint = def.type === "string" ? ` ${def.valueHint ?? "VALUE"}` : "";
      const left = `  ${short}--${name}${hint}`;
      const body = wrap(describe(name, def), WIDTH - LEFT);
      const pad = " ".repeat(LEFT);
      if (left.length < LEFT - 1) {
        out.push(left.padEnd(LEFT) + (body[0] ?? ""));
        for (const l of body.slice(1)) out.push(pad + l);
      } else {
        out.push(left);
        for (const l of body) out.push(pad + l);
      }
    }
  }
  out.push("", "Examples:");
  for (const [cmd, why] of EXAMPLES) out.push(`  ${cmd}`, `      ${why}`);
  return out.join("\n");
}
