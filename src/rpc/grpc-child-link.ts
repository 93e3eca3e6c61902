// The real ChildLink: the child's NestService over gRPC through an SSH tunnel
// to its endpoint. Proto types stop in level-client.ts; the engine sees domain
// types only.
// Imported by: src/daemon.

import type { ChildLink } from "../nest/child-link.js";
import type { EventSink, LevelEvent } from "../domain/events.js";
import type { DestroyOptions, DoctorOptions, Identity, LevelPath, LevelStatus, LogLine, LogsOptions, NestOptions, SyncOptions } from "../domain/level-api.js";
import type { CheckResult } from "../domain/checks.js";
import { nestClient } from "./level-client.js";

export interface GrpcChildLinkOptions {
  /** grpc-js target of the tunnel, e.g. "unix:///.../tunnel.sock". */
  readonly target: string;
  /** Per-call deadline for unary calls (a command timeout, never the connect timeout). */
  readonly commandMs: number;
  /** Closes the tunnel under the channel. */
  readonly closeTunnel: () => Promise<void>;
}

export function grpcChildLink(o: GrpcChildLinkOptions): ChildLink {
  const client = nestClient(o.target);
  const drain = async (stream: AsyncIterable<LevelEvent>, sink: EventSink) => {
    for await (const ev of stream) sink(ev);
  };
  return {
    identify(): Promise<Identity> {
      return client.identify({ deadlineMs: o.commandMs });
    },
    async status(signal: AbortSignal, levelPath?: LevelPath): Promise<LevelStatus> {
      const r = await client.status({ signal, deadlineMs: o.commandMs }, levelPath);
      if (!r) throw new Error("child status without a root");
      return r;
    },
    putSecrets(yaml: string): Promise<string[]> {
      return client.putSecrets(yaml, { deadlineMs: o.commandMs });
    },
    nest(opts: NestOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
      return drain(client.nest(opts, { signal }), sink);
    },
    sync(opts: SyncOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
      return drain(client.sync(opts, { signal }), sink);
    },
    destroy(opts: DestroyOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
      return drain(client.destroy(opts, { signal }), sink);
    },
    configure(sink: EventSink, signal: AbortSignal): Promise<void> {
      return drain(client.configure({ signal }), sink);
    },
    doctor(opts: DoctorOptions, signal: AbortSignal): Promise<CheckResult[]> {
      return client.doctor(opts, { signal, deadlineMs: o.commandMs });
    },
    logs(opts: LogsOptions, signal: AbortSignal): AsyncIterable<LogLine> {
      const { sinceMs, ...rest } = opts;
      // A duration, not an instant: the child's clock need not agree with ours.
      return client.logs({ ...rest, ...(sinceMs !== undefined ? { sinceAgoMs: Math.max(0, Date.now() - sinceMs) } : {}) }, { signal });
    },
    async close(): Promise<void> {
      client.close();
      await o.closeTunnel();
    },
  };
}
