// The real ChildLink: the child's NestService over gRPC through an SSH tunnel
// to its endpoint. This is the child-client edge: proto types stop here and
// the engine sees domain types. Built by the daemon wiring's connectChild.

import { NestService, Isolation } from "../gen/homestak/nest/v1/nest_pb.js";
import { createClient } from "../rpc/client.js";
import { fromProtoCheck, fromProtoEvent, fromProtoIdentity, fromProtoStatus } from "../api/convert.js";
import type { ChildLink } from "./child-link.js";
import type { EventSink } from "../domain/events.js";
import type { Identity, LevelStatus, NestOptions } from "../domain/level-api.js";

export interface GrpcChildLinkOptions {
  /** grpc-js target of the tunnel, e.g. "unix:///.../tunnel.sock". */
  readonly target: string;
  /** Per-call deadline for unary calls (a command timeout, never the connect timeout). */
  readonly commandMs: number;
  /** Closes the tunnel under the channel. */
  readonly closeTunnel: () => Promise<void>;
}

export function grpcChildLink(o: GrpcChildLinkOptions): ChildLink {
  const client = createClient(NestService, o.target);
  const drain = async (stream: AsyncIterable<{ event?: import("../gen/homestak/nest/v1/nest_pb.js").Event }>, sink: EventSink) => {
    for await (const msg of stream) if (msg.event) sink(fromProtoEvent(msg.event));
  };
  return {
    async identify(): Promise<Identity> {
      return fromProtoIdentity(await client.identify({}, { deadlineMs: o.commandMs }));
    },
    async status(signal: AbortSignal): Promise<LevelStatus> {
      const r = await client.status({}, { signal, deadlineMs: o.commandMs });
      if (!r.root) throw new Error("child status without a root");
      return fromProtoStatus(r.root);
    },
    async putSecrets(yaml: string): Promise<string[]> {
      return (await client.putSecrets({ yaml }, { deadlineMs: o.commandMs })).keys;
    },
    nest(opts: NestOptions, sink: EventSink, signal: AbortSignal): Promise<void> {
      return drain(client.nest({
        depth: opts.depth, width: opts.width, provider: opts.provider,
        isolation: opts.isolation === "netns" ? Isolation.NETNS : Isolation.PROCESS,
      }, { signal }), sink);
    },
    sync(opts: { recursive: boolean }, sink: EventSink, signal: AbortSignal): Promise<void> {
      return drain(client.sync({ recursive: opts.recursive }, { signal }), sink);
    },
    destroy(opts: { self: boolean }, sink: EventSink, signal: AbortSignal): Promise<void> {
      return drain(client.destroy({ self: opts.self }, { signal }), sink);
    },
    configure(sink: EventSink, signal: AbortSignal): Promise<void> {
      return drain(client.configure({}, { signal }), sink);
    },
    async doctor(opts, signal) {
      const r = await client.doctor({ provider: opts.provider, isolation: opts.isolation === "netns" ? Isolation.NETNS : Isolation.PROCESS }, { signal, deadlineMs: o.commandMs });
      return r.checks.map(fromProtoCheck);
    },
    async close(): Promise<void> {
      client.close();
      await o.closeTunnel();
    },
  };
}
