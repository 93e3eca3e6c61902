// Bridges a LevelApi operation that reports through an EventSink into an async
// iterable a streaming handler yields from. The sink never blocks or throws
// (the engine must not stall on a slow client); events queue until the stream
// writes them, none is dropped, and the operation's failure is thrown only
// after every event before it went out.
// Imported by: src/api.

import type { EventSink, LevelEvent } from "../domain/events.js";

export async function* eventStream(run: (sink: EventSink) => Promise<void>): AsyncGenerator<LevelEvent> {
  let queue: LevelEvent[] = [];
  let wake: (() => void) | undefined;
  let settled = false;
  let failed = false;
  let failure: unknown;
  const sink: EventSink = (ev) => {
    queue.push(ev);
    wake?.();
  };
  Promise.resolve().then(() => run(sink)).then(
    () => { settled = true; wake?.(); },
    (err) => { settled = true; failed = true; failure = err; wake?.(); },
  );
  for (;;) {
    if (queue.length > 0) {
      const batch = queue;
      queue = [];
      for (const ev of batch) yield ev;
      continue;
    }
    if (settled) break;
    await new Promise<void>((resolve) => { wake = resolve; });
    wake = undefined;
  }
  if (failed) throw failure;
}
