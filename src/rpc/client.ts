// Typed gRPC client for any protobuf-es GenService over grpc-js: promises for
// unary calls, async iterables for streams, AbortSignal and deadlines on every
// call, typed HsErrors for every failure. Proto types stay with the caller's
// edge code.
// Imported by: src/rpc.

import * as grpc from "@grpc/grpc-js";
import {
  create, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape,
} from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { CancelledError, HsError } from "../domain/errors.js";
import { fromServiceError } from "./error-status.js";
import { deserializer, methodPath, serializer, type ServerCall } from "./service-definition.js";
import { reachableSocketPath } from "../util/unix-socket-path.js";

export interface CallOpts {
  /** Aborting cancels the call; the caller sees the signal's HsError reason or CancelledError. */
  signal?: AbortSignal;
  /** Relative deadline; DEADLINE_EXCEEDED surfaces as code "DeadlineExceeded". */
  deadlineMs?: number;
  /** A server call being handled: its cancellation and deadline propagate into this call. */
  parent?: ServerCall;
  metadata?: grpc.Metadata;
}

export interface ClientOptions {
  channelOptions?: grpc.ChannelOptions;
  credentials?: grpc.ChannelCredentials;
}

type MethodShape = GenServiceMethods[string];
type InInit<M extends MethodShape> = MessageInitShape<M["input"]>;
type Out<M extends MethodShape> = MessageShape<M["output"]>;

export type ClientMethod<M extends MethodShape> =
  M["methodKind"] extends "unary" ? (req: InInit<M>, opts?: CallOpts) => Promise<Out<M>>
  : M["methodKind"] extends "server_streaming" ? (req: InInit<M>, opts?: CallOpts) => AsyncIterable<Out<M>>
  : M["methodKind"] extends "client_streaming"
    ? (reqs: AsyncIterable<InInit<M>> | Iterable<InInit<M>>, opts?: CallOpts) => Promise<Out<M>>
  : (reqs: AsyncIterable<InInit<M>> | Iterable<InInit<M>>, opts?: CallOpts) => AsyncIterable<Out<M>>;

export type Client<S extends GenServiceMethods> = { [K in keyof S]: ClientMethod<S[K]> } & {
  /** Closes the channel; in-flight calls fail with CANCELLED/UNAVAILABLE. */
  close(): void;
  /** The grpc-js client (escape hatch: waitForReady, channel state). */
  readonly raw: grpc.Client;
};

/**
 * "unix:///abs/path" for a bare absolute path or a unix: target (a path too
 * long for sun_path made reachable); anything else (host:port, dns:) as is.
 */
export function normalizeTarget(target: string): string {
  if (target.startsWith("/")) return `unix://${reachableSocketPath(target)}`;
  if (target.startsWith("unix://")) return `unix://${reachableSocketPath(target.slice("unix://".length))}`;
  return target;
}

function callOptions(opts: CallOpts | undefined): grpc.CallOptions {
  const o: grpc.CallOptions = {};
  if (opts?.deadlineMs !== undefined) o.deadline = Date.now() + Math.max(0, Math.round(opts.deadlineMs));
  if (opts?.parent) {
    o.parent = opts.parent as grpc.CallOptions["parent"];
    o.propagate_flags = grpc.propagate.DEFAULTS;
  }
  return o;
}

/** The error a failed call rejects with: an abort's own HsError reason wins over the generic CANCELLED. */
function callError(err: unknown, target: string, signal: AbortSignal | undefined, gotResponse: boolean): unknown {
  if (signal?.aborted) {
    return signal.reason instanceof HsError ? signal.reason : new CancelledError(`call to ${target} cancelled`);
  }
  if (err && typeof err === "object" && "code" in err && typeof (err as grpc.ServiceError).code === "number") {
    return fromServiceError(err as grpc.ServiceError, target, gotResponse);
  }
  return err;
}

function onAbort(signal: AbortSignal | undefined, fn: () => void): () => void {
  if (!signal) return () => {};
  if (signal.aborted) { queueMicrotask(fn); return () => {}; }
  signal.addEventListener("abort", fn, { once: true });
  return () => signal.removeEventListener("abort", fn);
}

/** Writes every request to a client-side stream, waiting for drain; ends it when the source ends. */
async function feed(
  reqs: AsyncIterable<unknown> | Iterable<unknown>, call: grpc.ClientWritableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>,
  schema: DescMessage,
): Promise<void> {
  let gone = false;
  const markGone = () => { gone = true; };
  call.once("close", markGone);
  call.once("error", markGone);
  try {
    for await (const r of reqs as AsyncIterable<unknown>) {
      if (gone) return;
      const ok = call.write(create(schema, r as MessageInitShape<DescMessage>));
      if (!ok) {
        await new Promise<void>((resolve) => {
          const done = () => { call.off("drain", done); call.off("close", done); call.off("error", done); resolve(); };
          call.once("drain", done); call.once("close", done); call.once("error", done);
        });
      }
    }
    if (!gone) call.end();
  } catch (err) {
    // A failing request source aborts the call rather than half-sending it.
    call.cancel();
    throw err;
  }
}

export function createClient<S extends GenServiceMethods>(
  service: GenService<S>, target: string, opts: ClientOptions = {},
): Client<S> {
  const address = normalizeTarget(target);
  const raw = new grpc.Client(address, opts.credentials ?? grpc.credentials.createInsecure(), opts.channelOptions);
  const out: Record<string, unknown> = {
    close: () => raw.close(),
    raw,
  };
  for (const m of (service as unknown as DescService).methods) out[m.localName] = bind(raw, m, target);
  return out as Client<S>;
}

function bind(raw: grpc.Client, m: DescMethod, target: string): unknown {
  const path = methodPath(m);
  const noop = () => {};
  const ser = serializer(m.input, noop) as (v: unknown) => Buffer;
  const deser = deserializer(m.output, noop);
  const md = (o?: CallOpts) => o?.metadata ?? new grpc.Metadata();

  switch (m.methodKind) {
    case "unary":
      return (req: unknown, o?: CallOpts) => new Promise((resolve, reject) => {
        let off = noop;
        const call = raw.makeUnaryRequest(path, ser, deser, req, md(o), callOptions(o), (err, res) => {
          off();
          if (err) reject(callError(err, target, o?.signal, false));
          else resolve(res);
        });
        off = onAbort(o?.signal, () => call.cancel());
      });

    case "client_streaming":
      return (reqs: AsyncIterable<unknown>, o?: CallOpts) => new Promise((resolve, reject) => {
        let off = noop;
        let feedErr: unknown;
        const call = raw.makeClientStreamRequest(path, ser, deser, md(o), callOptions(o), (err, res) => {
          off();
          if (feedErr !== undefined) reject(feedErr);
          else if (err) reject(callError(err, target, o?.signal, false));
          else resolve(res);
        });
        off = onAbort(o?.signal, () => call.cancel());
        feed(reqs, call, m.input).catch((err) => { feedErr = err; });
      });

    case "server_streaming":
      return (req: unknown, o?: CallOpts): AsyncIterable<unknown> => ({
        async *[Symbol.asyncIterator]() {
          const call = raw.makeServerStreamRequest(path, ser, deser, req, md(o), callOptions(o));
          yield* readAll(call, target, o, () => undefined);
        },
      });

    case "bidi_streaming":
      return (reqs: AsyncIterable<unknown>, o?: CallOpts): AsyncIterable<unknown> => ({
        async *[Symbol.asyncIterator]() {
          const call = raw.makeBidiStreamRequest(path, ser, deser, md(o), callOptions(o));
          let feedErr: unknown;
          feed(reqs, call, m.input).catch((err) => { feedErr = err; });
          yield* readAll(call, target, o, () => feedErr);
        },
      });
  }
  throw new Error(`unsupported method kind ${String(m.methodKind)}`);
}

/**
 * Yields a call's responses. Leaving early (break, return, throw in the
 * consumer's loop) cancels the call, so the server's handler sees its signal abort.
 */
async function* readAll(
  call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>,
  target: string, o: CallOpts | undefined, feedError: () => unknown,
): AsyncGenerator<unknown> {
  const off = onAbort(o?.signal, () => call.cancel());
  let got = false;
  let completed = false;
  try {
    for await (const msg of call as AsyncIterable<unknown>) {
      got = true;
      yield msg;
    }
    completed = true;
  } catch (err) {
    completed = true;
    const fe = feedError();
    throw fe !== undefined ? fe : callError(err, target, o?.signal, got);
  } finally {
    off();
    if (!completed) call.cancel();
  }
  const fe = feedError();
  if (fe !== undefined) throw fe;
}
