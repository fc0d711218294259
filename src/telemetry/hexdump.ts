// `hexdump -C` style lines for --trace.
import { TRACE_DUMP_BYTES_MAX } from "../core/limits.ts";

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function hexdumpLines(bytes: Uint8Array): string[] {
  const n = Math.min(bytes.length, TRACE_DUMP_BYTES_MAX);
  const lines: string[] = [];
  for (let off = 0; off < n; off += 16) {
    let hex = "";
    let ascii = "";
    for (let i = 0; i < 16; i++) {
      if (i === 8) hex += " ";
      const p = off + i;
      if (p < n) {
        const b = bytes[p]!;
        hex += HEX[b] + " ";
        ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
      } else hex += "   ";
    }
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex} |${ascii}|`);
  }
  if (bytes.length > n) lines.push(`... ${bytes.length - n} more bytes not shown`);
  return lines;
}
