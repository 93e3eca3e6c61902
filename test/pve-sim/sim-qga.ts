// The two QEMU control channels of a real-guest VM: QMP (quit, powerdown, status) and the
// guest agent's virtio-serial socket, spoken the way PVE speaks them (guest-sync first,
// then the command), with PVE's error texts while the agent is not up: a guest-sync that
// goes unanswered for 3 s is "QEMU guest agent is not running"; a command that goes
// unanswered is "qga command '<cmd>' failed - got timeout". Test-only.
// Imported by: test/pve-sim/sim-qemu.ts, test/pve-sim/pve-sim-api.ts.

import { connect, type Socket } from "node:net";
import { SimError } from "./pve-sim.js";

type Msg = { QMP?: unknown; return?: unknown; error?: { class?: string; desc: string }; event?: string };

/** One JSON-lines exchange over a socket: `onLine` returns a value to finish, undefined to read on. */
function exchange<T>(path: string, timeoutMs: number, start: (s: Socket) => void, onLine: (m: Msg, s: Socket) => T | undefined): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const s = connect(path);
    let buf = "";
    const timer = setTimeout(() => { s.destroy(); reject(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })); }, timeoutMs);
    const done = (f: () => void) => { clearTimeout(timer); s.destroy(); f(); };
    s.setEncoding("utf8");
    s.on("error", (e) => done(() => reject(e)));
    s.on("connect", () => start(s));
    s.on("data", (c: string) => {
      buf += c;
      for (let nl; (nl = buf.indexOf("\n")) >= 0;) {
        const line = buf.slice(0, nl).replace(/^\xff/, "").trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        let m: Msg;
        try { m = JSON.parse(line) as Msg; } catch { continue; } // a partial answer to an abandoned request
        try {
          const v = onLine(m, s);
          if (v !== undefined) { done(() => resolve(v)); return; }
        } catch (e) { done(() => reject(e)); return; }
      }
    });
  });
}

/** Runs one QMP command (after qmp_capabilities); its `return`, or throws its error. */
export function qmpCommand(path: string, execute: string, timeoutMs: number, args?: Record<string, unknown>): Promise<unknown> {
  let step = 0;
  return exchange(path, timeoutMs, () => {}, (m, s) => {
    if (m.event) return undefined;
    if (m.error) throw new Error(`QMP ${execute}: ${m.error.desc}`);
    if (step === 0 && m.QMP) { step = 1; s.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`); return undefined; }
    if (step === 1 && m.return !== undefined) { step = 2; s.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`); return undefined; }
    if (step === 2 && m.return !== undefined) return { value: m.return };
    return undefined;
  }).then((r) => r.value);
}

/** The agent socket of one VM. QEMU serves one client at a time, so calls queue. */
export class QgaChannel {
  private queue: Promise<unknown> = Promise.resolve();
  private nextId = Math.floor(Math.random() * 1e9);
  private closed = false;

  constructor(private readonly path: string, private readonly vmid: number) {}

  /** A guest agent command as PVE's /agent/<cmd> runs it; SimError 500 with PVE's texts. */
  call(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
    const p = this.queue.then(() => this.once(command, args, timeoutMs));
    this.queue = p.catch(() => {});
    return p;
  }

  close(): void { this.closed = true; }

  private async once(command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown> {
    if (this.closed) throw new SimError(500, `VM ${this.vmid} is not running`);
    const id = this.nextId++;
    let synced = false;
    const syncMs = 3000;
    const t0 = Date.now();
    try {
      return await exchange(this.path, syncMs + timeoutMs, (s) => {
        s.write(`${JSON.stringify({ execute: "guest-sync", arguments: { id } })}\n`);
        // PVE's 3 s for the sync; the socket stays open for the command's own bound.
        setTimeout(() => { if (!synced) s.destroy(Object.assign(new Error("sync timeout"), { code: "ESYNC" })); }, syncMs).unref();
      }, (m, s) => {
        if (!synced) {
          // Answers to an earlier caller's abandoned request are skipped until ours arrives.
          if (m.return === id) { synced = true; s.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`); }
          return undefined;
        }
        if (m.error) throw new SimError(500, `VM ${this.vmid} qga command '${command}' failed - ${m.error.desc}`);
        return m.return !== undefined ? { value: m.return } : undefined;
      }).then((r) => r.value);
    } catch (e) {
      if (e instanceof SimError) throw e;
      if (!synced || (e as NodeJS.ErrnoException).code === "ESYNC" || Date.now() - t0 < syncMs) {
        throw new SimError(500, "QEMU guest agent is not running");
      }
      throw new SimError(500, `VM ${this.vmid} qga command '${command}' failed - got timeout`);
    }
  }
}
