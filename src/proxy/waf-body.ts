// Reading a request body the WAF must check before the backend sees any of it: a chunked body against
// max_body_size, a JSON body against max_json_depth. The body is buffered up to the limit (as nginx
// buffers request bodies by default) and refused as soon as it goes over, so a 1 MB body of "[" stops
// after max_json_depth + 1 bytes. In shadow mode a finding does not refuse: the bytes read so far and
// the rest of the stream go on to the backend unchanged.
import { JsonDepthScanner } from "../core/waf/json-depth.ts";
import type { WafVerdict } from "./waf.ts";

export interface CheckedBody {
  /** The whole body, when it was read to the end. */
  readonly bytes: Uint8Array;
  /** What went over a limit, or null. */
  readonly refused: "body_too_large" | "json_too_deep" | null;
  /** When refused: the body as it arrived (read part + the rest), for shadow mode; else null. */
  readonly rest: ReadableStream<Uint8Array> | null;
}

const EMPTY = new Uint8Array(0);

interface ChunkReader {
  read(): Promise<{ done: boolean; value?: Uint8Array }>;
  cancel(reason?: unknown): Promise<void>;
}

/** `declaredBytes`: Content-Length, or -1 for a chunked body. */
export async function readChecked(req: Request, v: WafVerdict, declaredBytes: number): Promise<CheckedBody> {
  const body = req.body;
  if (body === null) return { bytes: EMPTY, refused: null, rest: null };
  const reader = (body as ReadableStream<Uint8Array>).getReader() as ChunkReader;
  const scanner = v.jsonDepthMax > 0 ? new JsonDepthScanner(v.jsonDepthMax) : null;
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done || value === undefined) break;
    chunks.push(value);
    total += value.length;
    let refused: CheckedBody["refused"] = null;
    if (total > v.bodyBytesMax) refused = "body_too_large";
    else if (scanner !== null && scanner.push(value) === "too_deep") refused = "json_too_deep";
    if (refused !== null) return { bytes: EMPTY, refused, rest: replay(chunks, reader) };
  }
  if (declaredBytes >= 0 && total !== declaredBytes) throw new Error("body shorter than its Content-Length");
  return {
    bytes: chunks.length === 1 ? chunks[0]! : new Uint8Array(Buffer.concat(chunks)),
    refused: null,
    rest: null,
  };
}

/** The chunks already read, then whatever the reader still yields. Dropped unread when refused. */
function replay(read: Uint8Array[], reader: ChunkReader): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (i < read.length) {
        controller.enqueue(read[i++]!);
        return;
      }
      const { done, value } = await reader.read();
      if (done || value === undefined) controller.close();
      else controller.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}
