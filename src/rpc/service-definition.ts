// Server side of the protobuf-es <-> grpc-js bridge: turns a generated
// GenService into a grpc-js ServiceDefinition and typed async handlers into a
// grpc-js implementation. Nothing else touches grpc-js server calls.
//
// Handler shapes (chosen so every kind is a plain async function):
//   unary             (req, ctx) => Promise<OutInit>
//   server_streaming  (req, ctx) => AsyncIterable<OutInit>   (an async generator)
//   client_streaming  (reqs, ctx) => Promise<OutInit>         (reqs: AsyncIterable<In>)
//   bidi_streaming    (reqs, ctx) => AsyncIterable<OutInit>
// A thrown HsError becomes a gRPC status with the code in the `hs-code` trailer.
// Imported by: src/api, src/rpc.

import * as grpc from "@grpc/grpc-js";
import {
  create, fromBinary, isMessage, toBinary,
  type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape,
} from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { CancelledError, DeadlineExceededError, HsError, InvalidArgumentError } from "../domain/errors.js";
import type { Logger } from "../log/logger.js";
import { toWireStatus } from "./error-status.js";

/** Any server-side call grpc-js hands a handler. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ServerCall = grpc.ServerUnaryCall<any, any> | grpc.ServerReadableStream<any, any> | grpc.ServerWritableStream<any, any> | grpc.ServerDuplexStream<any, any>;

export interface HandlerContext {
  /** Aborted when the client cancels, the deadline passes, or the server shuts down; never after a normal end. */
  readonly signal: AbortSignal;
  /** The grpc-js call, for `parent` propagation in outgoing calls (CallOpts.parent). */
  readonly call: ServerCall;
  /** Epoch ms, or undefined when the caller set none. */
  readonly deadline: number | undefined;
  readonly metadata: grpc.Metadata;
}

type MethodShape = GenServiceMethods[string];
type In<M extends MethodShape> = MessageShape<M["input"]>;
type OutInit<M extends MethodShape> = MessageInitShape<M["output"]>;

export type UnaryHandler<M extends MethodShape> = (req: In<M>, ctx: HandlerContext) => Promise<OutInit<M>>;
export type ServerStreamHandler<M extends MethodShape> = (req: In<M>, ctx: HandlerContext) => AsyncIterable<OutInit<M>>;
export type ClientStreamHandler<M extends MethodShape> = (reqs: AsyncIterable<In<M>>, ctx: HandlerContext) => Promise<OutInit<M>>;
export type BidiHandler<M extends MethodShape> = (reqs: AsyncIterable<In<M>>, ctx: HandlerContext) => AsyncIterable<OutInit<M>>;

export type HandlerFor<M extends MethodShape> =
  M["methodKind"] extends "unary" ? UnaryHandler<M>
  : M["methodKind"] extends "server_streaming" ? ServerStreamHandler<M>
  : M["methodKind"] extends "client_streaming" ? ClientStreamHandler<M>
  : BidiHandler<M>;

/** The method map of a generated service: `ServiceHandlers<MethodsOf<typeof NestService>>`. */
export type MethodsOf<T> = T extends GenService<infer S extends GenServiceMethods> ? S : never;

export type ServiceHandlers<S extends GenServiceMethods> = { [K in keyof S]: HandlerFor<S[K]> };

export interface AdapterOptions {
  /** Where serialization and handler failures are reported. Defaults to stderr. */
  log?: Logger;
}

/** Full gRPC path of a method, e.g. "/homestak.nest.v1.NestService/Status". */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

type Reporter = (msg: string, err: unknown, method: DescMethod) => void;

function reporter(log: Logger | undefined): Reporter {
  if (log) return (msg, err, method) => log.error({ err, method: methodPath(method) }, msg);
  return (msg, err, method) => process.stderr.write(`${msg} ${methodPath(method)}: ${String(err)}\n`);
}

/** Serializer that accepts a message or its init shape, and never fails silently. */
export function serializer<D extends DescMessage>(schema: D, onError: (err: unknown) => void) {
  return (value: MessageShape<D> | MessageInitShape<D>): Buffer => {
    try {
      const msg = isMessage(value, schema) ? value : create(schema, value as MessageInitShape<D>);
      return Buffer.from(toBinary(schema, msg));
    } catch (err) {
      onError(err);
      throw err;
    }
  };
}

export function deserializer<D extends DescMessage>(schema: D, onError: (err: unknown) => void) {
  return (bytes: Buffer): MessageShape<D> => {
    try {
      return fromBinary(schema, bytes);
    } catch (err) {
      onError(err);
      throw err;
    }
  };
}

export function toServiceDefinition(service: DescService, opts: AdapterOptions = {}): grpc.ServiceDefinition {
  const report = reporter(opts.log);
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) {
    def[m.localName] = {
      path: methodPath(m),
      requestStream: m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming",
      responseStream: m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming",
      requestSerialize: serializer(m.input, (e) => report("cannot serialize request", e, m)) as (v: unknown) => Buffer,
      // A request that does not parse is the caller's fault: it becomes a marker the
      // handler wrapper rejects as InvalidArgument (hs-code), not grpc-js's bare INTERNAL.
      requestDeserialize: requestDeserializer(m.input),
      responseSerialize: serializer(m.output, (e) => report("cannot serialize response", e, m)) as (v: unknown) => Buffer,
      responseDeserialize: deserializer(m.output, (e) => report("cannot parse response", e, m)),
      originalName: m.name,
    };
  }
  return def as grpc.ServiceDefinition;
}

/** What requestDeserialize yields for bytes that are not a valid request message. */
export class UnparsableRequest {
  constructor(readonly reason: string) {}
}

function requestDeserializer<D extends DescMessage>(schema: D) {
  return (bytes: Buffer): MessageShape<D> | UnparsableRequest => {
    try {
      return fromBinary(schema, bytes);
    } catch (err) {
      return new UnparsableRequest(err instanceof Error ? err.message : String(err));
    }
  };
}

/** Throws InvalidArgument for a request that did not parse. */
function checkParsed<T>(req: T): T {
  if (req instanceof UnparsableRequest) {
    throw new InvalidArgumentError("request message is not valid protobuf for this method", { details: { reason: req.reason.slice(0, 120) } });
  }
  return req;
}

interface CallState {
  ctx: HandlerContext;
  /** Marks the call as ended by us, so grpc-js's end-of-call 'cancelled' is not mistaken for a cancel. */
  finish(): void;
  /** What the call failed with: the daemon's stop reason when the stop ended it (the machine going down), else its own error. */
  failure(err: unknown): unknown;
}

/** How early before the server's deadline a cancel still counts as the deadline. */
const DEADLINE_SLACK_MS = 250;

function deadlineMs(call: ServerCall): number | undefined {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) ? ms : undefined;
}

function callState(call: ServerCall, shutdown: AbortSignal | undefined): CallState {
  const ac = new AbortController();
  let finished = false;
  const deadline = deadlineMs(call);
  const onCancel = () => {
    if (finished || ac.signal.aborted) return;
    // The client's own deadline timer fires first and cancels: the server's
    // copy of the deadline was taken on receipt, later by the request's
    // transit and scheduling delay (tens of ms on a loaded host). A cancel
    // that close to the deadline is the deadline.
    const late = deadline !== undefined && Date.now() >= deadline - DEADLINE_SLACK_MS;
    ac.abort(late ? new DeadlineExceededError("deadline exceeded") : new CancelledError("cancelled by the caller"));
  };
  (call as NodeJS.EventEmitter).on("cancelled", onCancel);
  // A stop with a typed reason (the level's machine going down) is that, not an operator's cancel.
  let stoppedBy: HsError | undefined;
  const onShutdown = () => {
    if (finished) return;
    stoppedBy = shutdown?.reason instanceof HsError ? shutdown.reason : undefined;
    ac.abort(stoppedBy ?? new CancelledError("hsd is shutting down"));
  };
  shutdown?.addEventListener("abort", onShutdown, { once: true });
  return {
    ctx: { signal: ac.signal, call, deadline, metadata: call.metadata },
    finish() {
      finished = true;
      shutdown?.removeEventListener("abort", onShutdown);
    },
    failure: (err) => stoppedBy ?? err,
  };
}

/** Resolves when a writable drains; rejects when the call is aborted first. */
function drained(stream: NodeJS.EventEmitter, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => { signal.removeEventListener("abort", onAbort); resolve(); };
    const onAbort = () => { stream.off("drain", done); reject(signal.reason); };
    if (signal.aborted) return reject(signal.reason);
    stream.once("drain", done);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** The incoming message stream of a call; destroying it on abort unblocks a handler stuck reading. */
function incoming<T>(call: grpc.ServerReadableStream<T, unknown> | grpc.ServerDuplexStream<T, unknown>, signal: AbortSignal): AsyncIterable<T> {
  signal.addEventListener("abort", () => call.destroy(signal.reason instanceof Error ? signal.reason : undefined), { once: true });
  // Plain for-await over a Readable destroys it when the reads end, which on a
  // duplex call would also kill the response side before its status is sent.
  const it = call.iterator({ destroyOnReturn: false }) as AsyncIterable<T>;
  return (async function* () { for await (const r of it) yield checkParsed(r); })();
}

async function pump<T>(
  source: AsyncIterable<T>, call: grpc.ServerWritableStream<unknown, T> | grpc.ServerDuplexStream<unknown, T>,
  schema: DescMessage, signal: AbortSignal,
): Promise<void> {
  for await (const out of source) {
    if (signal.aborted) throw signal.reason;
    const msg = create(schema, out as MessageInitShape<DescMessage>) as T;
    if (!call.write(msg)) await drained(call, signal);
  }
}

export interface ImplOptions extends AdapterOptions {
  /** Aborts every running handler's signal (graceful shutdown). */
  shutdown?: AbortSignal;
}

/**
 * Builds the grpc-js implementation object for `service` from typed handlers.
 * Every handler failure is logged (HsErrors at debug, anything else at error)
 * and sent as a status with `hs-code`.
 */
export function toServiceImpl<S extends GenServiceMethods>(
  service: GenService<S>, handlers: ServiceHandlers<S>, opts: ImplOptions = {},
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  const log = opts.log;
  const fail = (m: DescMethod, err: unknown) => {
    if (err instanceof HsError) log?.debug({ method: methodPath(m), code: err.code, msg: err.message }, "rpc failed");
    else reporter(log)("rpc handler crashed", err, m);
    return toWireStatus(err);
  };
  for (const m of (service as DescService).methods) {
    const h = (handlers as Record<string, unknown>)[m.localName];
    if (typeof h !== "function") throw new Error(`no handler for ${methodPath(m)}`);
    switch (m.methodKind) {
      case "unary": {
        const fn = h as (req: unknown, ctx: HandlerContext) => Promise<unknown>;
        impl[m.localName] = ((call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          const st = callState(call, opts.shutdown);
          Promise.resolve().then(() => fn(checkParsed(call.request), st.ctx)).then(
            (out) => { st.finish(); cb(null, create(m.output, out as MessageInitShape<DescMessage>)); },
            (err) => { st.finish(); cb(fail(m, st.failure(err))); },
          );
        }) as grpc.handleUnaryCall<unknown, unknown>;
        break;
      }
      case "server_streaming": {
        const fn = h as (req: unknown, ctx: HandlerContext) => AsyncIterable<unknown>;
        impl[m.localName] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
          const st = callState(call, opts.shutdown);
          (async () => pump(fn(checkParsed(call.request), st.ctx), call, m.output, st.ctx.signal))().then(
            () => { st.finish(); call.end(); },
            (err) => { st.finish(); call.emit("error", fail(m, st.failure(err))); },
          );
        }) as grpc.handleServerStreamingCall<unknown, unknown>;
        break;
      }
      case "client_streaming": {
        const fn = h as (reqs: AsyncIterable<unknown>, ctx: HandlerContext) => Promise<unknown>;
        impl[m.localName] = ((call: grpc.ServerReadableStream<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          const st = callState(call, opts.shutdown);
          Promise.resolve().then(() => fn(incoming(call, st.ctx.signal), st.ctx)).then(
            (out) => { st.finish(); cb(null, create(m.output, out as MessageInitShape<DescMessage>)); },
            (err) => { st.finish(); cb(fail(m, st.failure(err))); },
          );
        }) as grpc.handleClientStreamingCall<unknown, unknown>;
        break;
      }
      case "bidi_streaming": {
        const fn = h as (reqs: AsyncIterable<unknown>, ctx: HandlerContext) => AsyncIterable<unknown>;
        impl[m.localName] = ((call: grpc.ServerDuplexStream<unknown, unknown>) => {
          const st = callState(call, opts.shutdown);
          (async () => pump(fn(incoming(call, st.ctx.signal), st.ctx), call, m.output, st.ctx.signal))().then(
            () => { st.finish(); call.end(); },
            (err) => { st.finish(); call.emit("error", fail(m, st.failure(err))); },
          );
        }) as grpc.handleBidiStreamingCall<unknown, unknown>;
        break;
      }
    }
  }
  return impl;
}
