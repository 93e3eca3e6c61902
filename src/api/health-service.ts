// grpc.health.v1.Health (Check, Watch, List) over the generated protobuf-es
// messages and the src/rpc adapter, so health needs no .proto files or
// protobufjs at start-up.
// Imported by: src/api.

import type * as grpc from "@grpc/grpc-js";
import { NotFoundError } from "../domain/errors.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { toServiceDefinition, toServiceImpl, type ImplOptions } from "../rpc/service-definition.js";

export type ServingStatus = "SERVING" | "NOT_SERVING";

export class HealthService {
  private readonly statuses = new Map<string, Status>();
  /** One wake-up per open Watch; called on every status change. */
  private readonly watchers = new Set<() => void>();
  private closed = false;

  /** `initial` maps service names ("" is the whole server) to their first status. */
  constructor(initial: Record<string, ServingStatus> = {}) {
    for (const [name, s] of Object.entries(initial)) this.statuses.set(name, Status[s]);
  }

  /** Ignored after shutdown(): a server on its way down must not flip back to SERVING (as grpc-go). */
  setStatus(service: string, status: ServingStatus): void {
    if (this.closed) return;
    this.statuses.set(service, Status[status]);
    this.wake();
  }

  /**
   * Every service NOT_SERVING for good; each open Watch sends that and ends
   * with OK rather than holding up the server's graceful shutdown.
   */
  shutdown(): void {
    if (this.closed) return;
    for (const name of this.statuses.keys()) this.statuses.set(name, Status.NOT_SERVING);
    this.closed = true;
    this.wake();
  }

  /** Registers grpc.health.v1.Health on `server`; opts.shutdown also cancels open Watches. */
  addToServer(server: Pick<grpc.Server, "addService">, opts: ImplOptions = {}): void {
    server.addService(toServiceDefinition(Health, opts), toServiceImpl(Health, {
      check: async (req) => {
        const status = this.statuses.get(req.service);
        if (status === undefined) throw new NotFoundError(`unknown service ${JSON.stringify(req.service)}`, { details: { service: req.service } });
        return { status };
      },
      watch: (req, ctx) => this.watch(req.service, ctx.signal),
      list: async () => ({
        statuses: Object.fromEntries([...this.statuses].map(([name, status]) => [name, { status }])),
      }),
    }, opts));
  }

  private wake(): void {
    for (const w of this.watchers) w();
  }

  /**
   * Sends the current status, then the latest one after each change: bursts
   * coalesce (as in grpc-go), so a slow watcher never queues stale states.
   */
  private async *watch(service: string, signal: AbortSignal): AsyncGenerator<{ status: Status }> {
    // `dirty` catches a change made while the consumer held us at a yield.
    let dirty = false;
    let resume: (() => void) | undefined;
    const waker = () => { dirty = true; resume?.(); };
    this.watchers.add(waker);
    try {
      let sent: Status | undefined;
      for (;;) {
        const now = this.statuses.get(service) ?? Status.SERVICE_UNKNOWN;
        if (now !== sent) {
          sent = now;
          yield { status: now };
        }
        if (this.closed) return;
        if (!dirty) await changed(signal, (r) => { resume = r; });
        dirty = false;
        resume = undefined;
      }
    } finally {
      this.watchers.delete(waker);
    }
  }
}

/** Resolves when the registered resume is called; rejects with the abort reason when the call ends first. */
function changed(signal: AbortSignal, register: (resume: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    register(() => { signal.removeEventListener("abort", onAbort); resolve(); });
  });
}
