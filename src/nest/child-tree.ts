// The one place that walks this level's children for a tree operation: nest,
// destroy, the sync wave, status, and whatever comes next (a request relayed
// to a level by path, a manifest's subtrees). It picks which children, in what
// order and how many at once, and it is where a child's level path is made:
// events about a child carry [this level, child]; events streamed up from a
// child get this level's name prefixed (relayUnder).
// Imported by: src/level, src/nest.

import { relayUnder, type EventSink, type LocalEvent } from "../domain/events.js";
import type { ChildRecord, Journal } from "./journal.js";

export type { LocalEvent };

/** One child as a tree operation sees it. */
export interface ChildScope {
  readonly name: string;
  /** [this level, child]: the level path of events about the child. */
  readonly path: readonly string[];
  /** Emits an event about the child (its path and time filled in). */
  emit(ev: LocalEvent): void;
  /** Relays an event from the child's own stream up this level's sink. */
  readonly relay: EventSink;
}

export interface ChildTreeDeps {
  readonly self: () => { readonly name: string };
  readonly journal: Journal;
  readonly clock: { now(): number };
}

/** How a walk visits children: at most `concurrency` at a time, started in the given order. */
export interface WalkOrder {
  readonly concurrency: number;
  /** No child starts after a visit failed (those under way finish): a manifest's on_error stop. */
  readonly stopAfterFailure?: boolean;
}

/** Every child at once (sync wave, status). */
export const ALL_AT_ONCE: WalkOrder = Object.freeze({ concurrency: Number.POSITIVE_INFINITY });
/** One child after another (teardown). */
export const ONE_AT_A_TIME: WalkOrder = Object.freeze({ concurrency: 1 });

export class ChildTree {
  constructor(private readonly d: ChildTreeDeps) {}

  /** Every child this level's journal knows, in the order they were first built. */
  children(): ChildRecord[] {
    return this.d.journal.children();
  }

  /** Children with an hsd to ask (an endpoint, not destroyed): sync waves. */
  live(): ChildRecord[] {
    return this.children().filter((c) => c.endpoint && c.state !== "destroyed");
  }

  /** Leaves (type vm, no hsd) that are ready: the parent configures them again after a sync. */
  readyLeaves(): ChildRecord[] {
    return this.children().filter((c) => c.node?.type === "vm" && c.state === "ready" && c.handle);
  }

  /** Teardown order: the last built goes first. */
  teardownOrder(): ChildRecord[] {
    return this.children().reverse();
  }

  /** Emits an event about this level itself (level path [self]). */
  emitSelf(sink: EventSink, ev: LocalEvent): void {
    sink({ ...ev, levelPath: [this.d.self().name], time: this.d.clock.now() });
  }

  /** The scope of child `name` under `sink`. */
  scope(name: string, sink: EventSink): ChildScope {
    const self = this.d.self().name;
    const path = [self, name];
    return {
      name, path,
      emit: (ev) => sink({ ...ev, levelPath: path, time: this.d.clock.now() }),
      relay: relayUnder(self, sink),
    };
  }

  /**
   * Visits each of `children`, at most `order.concurrency` at a time, and
   * returns every outcome in the children's order. A visit that throws is
   * that child's subtree's failure only: its siblings go on.
   */
  async walk<T extends { readonly name: string }, R>(
    children: readonly T[], sink: EventSink, order: WalkOrder, visit: (child: T, at: ChildScope) => Promise<R>,
  ): Promise<Walked<R>> {
    const out: PromiseSettledResult<R>[] = new Array(children.length);
    const failures: unknown[] = [];
    let next = 0;
    const worker = async () => {
      while (next < children.length) {
        if (order.stopAfterFailure && failures.length > 0) return;
        const i = next++;
        const child = children[i]!;
        try {
          out[i] = { status: "fulfilled", value: await visit(child, this.scope(child.name, sink)) };
        } catch (reason) {
          out[i] = { status: "rejected", reason };
          failures.push(reason);
        }
      }
    };
    const workers = Math.max(1, Math.min(order.concurrency, children.length));
    await Promise.all(Array.from({ length: workers }, worker));
    return { outcomes: out, failures };
  }
}

/**
 * What a walk gives back: each child's outcome (children's order) and the
 * failures as they happened. A child a stopAfterFailure walk never started has no outcome.
 */
export interface Walked<R> {
  readonly outcomes: readonly (PromiseSettledResult<R> | undefined)[];
  readonly failures: readonly unknown[];
}

/** The values of a walk, or the failure that happened first. */
export function valuesOrFirstFailure<R>(w: Walked<R>): R[] {
  if (w.failures.length > 0) throw w.failures[0];
  // No failure: every child was visited and fulfilled.
  return w.outcomes.map((r) => (r as PromiseFulfilledResult<R>).value);
}
