// Shared by the streaming commands (nest, sync, destroy): drains a server
// stream of events into a NestView and turns failed events into the exit code
// and one summary line naming the deepest failed level and phase. Keeps no
// event: the view holds per-level rows and failures (bounded by the tree), and
// a full stdout holds the stream back (outReady) instead of buffering output.
// Imported by: src/cli/commands.

import type { LevelEvent } from "../../domain/events.js";
import { HsError } from "../../domain/errors.js";
import type { CliIo } from "../command.js";
import { NestView } from "../nest-view.js";
import { hintFor } from "../../domain/hints.js";

export async function streamEvents(
  stream: AsyncIterable<LevelEvent>, io: CliIo, json: boolean, what: string,
): Promise<{ code: number }> {
  const view = new NestView(json ? "json" : io.tty ? "tty" : "plain", { write: (s: string) => { io.out(s); return true; } } as NodeJS.WritableStream);
  let streamError: unknown;
  try {
    for await (const ev of stream) {
      view.onEvent(ev);
      if (io.outReady) await io.outReady();
    }
  } catch (err) {
    streamError = err;
  } finally {
    view.finish();
  }
  const failed = view.failures.sort((a, b) => b.levelPath.length - a.levelPath.length)[0];
  if (failed) {
    const code = failed.failure?.code ?? "Internal";
    const hint = failed.failure?.hint || hintFor(code);
    io.err(`hsctl: ${what} failed at ${failed.levelPath.join("/")} in phase ${failed.phase}: ${failed.failure?.message ?? ""} [${code}]\n${hint ? `  hint: ${hint}\n` : ""}`);
    return { code: 1 };
  }
  if (streamError) {
    if (streamError instanceof HsError) throw streamError;
    throw new HsError(`${what} stream broke: ${(streamError as Error).message}`);
  }
  return { code: 0 };
}
