// A simulated node's storage as the simulator reads it. A node that is the host
// itself (level 0) keeps its files under the simulator's root; a node that is a VM
// (its parent's nodeFor) has PVE's own `local` path, /var/lib/vz, and the files
// there are the VM's. A namespace VM's are read through its root as the host sees
// it (/proc/<pid>/root of a process in the VM's mount namespace); a real QEMU
// guest's through its guest agent's file calls (guest-file-open/seek/read/close,
// guest-exec for a listing: the cloud kernel has no 9p), so what the VM's hsd writes
// into its /var/lib/vz (snippets, images, import volumes) is exactly what the node's
// API finds. Test-only.
// Imported by: test/pve-sim/pve-sim.ts, test/pve-sim/pve-sim-api.ts, test/pve-sim/sim-qemu.ts, test/pve/sim-node-fs.test.ts.

import { readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";

/** PVE's `local` dir storage path on every node. */
export const VM_VZ = "/var/lib/vz";

/** One regular file of a listed directory. */
export interface NodeFileEntry { readonly name: string; readonly size: number; readonly ctimeMs: number }

/** Where a node's files are read from. */
export interface NodeFsBackend {
  exists(path: string): Promise<boolean>;
  /** Bytes; throws when the file does not exist. */
  size(path: string): Promise<number>;
  readFile(path: string): Promise<Buffer>;
  /** The regular files directly in dir; [] when dir does not exist. */
  list(dir: string): Promise<NodeFileEntry[]>;
}

/** The host's own files under root ("" for the host's "/"). */
export function hostBackend(root: string): NodeFsBackend {
  const p = (x: string) => (root ? join(root, x) : x);
  return {
    exists: (x) => stat(p(x)).then(() => true, () => false),
    size: async (x) => (await stat(p(x))).size,
    readFile: (x) => readFile(p(x)),
    list: async (dir) => {
      const names = await readdir(p(dir)).catch(() => [] as string[]);
      const out: NodeFileEntry[] = [];
      for (const name of names) {
        const st = await stat(join(p(dir), name)).catch(() => undefined);
        if (st?.isFile()) out.push({ name, size: st.size, ctimeMs: st.ctimeMs });
      }
      return out;
    },
  };
}

/** What the backend needs of a guest agent: one command, its `return` (throws the agent's error). */
export type AgentCall = (command: string, args?: Record<string, unknown>) => Promise<unknown>;

/** QGA reads at most 48 MiB a call; a small chunk keeps each answer's base64 line short. */
const READ_CHUNK = 1 << 20;
const EXEC_WAIT_MS = 20_000;

/** A real guest's files through its qemu-guest-agent. */
export function agentBackend(call: AgentCall): NodeFsBackend {
  const withHandle = async <T>(path: string, use: (h: number) => Promise<T>): Promise<T> => {
    const h = await call("guest-file-open", { path, mode: "r" }) as number;
    try { return await use(h); } finally { await call("guest-file-close", { handle: h }).catch(() => {}); }
  };
  const size = (path: string) => withHandle(path, async (h) =>
    (await call("guest-file-seek", { handle: h, offset: 0, whence: "end" }) as { position: number }).position);
  return {
    exists: (path) => size(path).then(() => true, () => false),
    size,
    readFile: (path) => withHandle(path, async (h) => {
      const parts: Buffer[] = [];
      for (;;) {
        const r = await call("guest-file-read", { handle: h, count: READ_CHUNK }) as { count: number; "buf-b64": string; eof: boolean };
        parts.push(Buffer.from(r["buf-b64"], "base64"));
        if (r.eof || r.count === 0) return Buffer.concat(parts);
      }
    }),
    list: async (dir) => {
      // QGA has no readdir: find(1) in the guest, as guest-exec runs it (pid, then its status).
      const { pid } = await call("guest-exec", {
        path: "/usr/bin/find", arg: [dir, "-mindepth", "1", "-maxdepth", "1", "-type", "f", "-printf", "%f\\t%s\\t%C@\\n"], "capture-output": true,
      }) as { pid: number };
      const deadline = Date.now() + EXEC_WAIT_MS;
      for (;;) {
        const s = await call("guest-exec-status", { pid }) as { exited: boolean; exitcode?: number; "out-data"?: string };
        if (s.exited) {
          if (s.exitcode !== 0) return []; // no such directory
          return Buffer.from(s["out-data"] ?? "", "base64").toString("utf8").split("\n").filter(Boolean).map((l) => {
            const [name, bytes, ctime] = l.split("\t") as [string, string, string];
            return { name, size: Number(bytes), ctimeMs: Math.floor(Number(ctime) * 1000) };
          });
        }
        if (Date.now() > deadline) throw new Error(`find ${dir} in the guest did not end within ${EXEC_WAIT_MS} ms`);
        await new Promise((r) => setTimeout(r, 100)); // guest-exec-status is a poll by design
      }
    },
  };
}

export class SimNodeFs {
  private backend?: NodeFsBackend;

  constructor(readonly isVm: boolean) {
    if (!isVm) this.backend = hostBackend("");
  }

  /** The namespace VM standing for this node is running: its "/" on the host. */
  attach(fsRoot: string): void { this.backend = hostBackend(fsRoot); }

  /** The QEMU guest standing for this node is running: its files through its agent. */
  attachAgent(call: AgentCall): void { this.backend = agentBackend(call); }

  /** The VM is gone, and its files with it. */
  detach(): void { if (this.isVm) this.backend = undefined; }

  /** This node's files; throws while a VM node is not running, as PVE cannot answer from a node that is down. */
  private get b(): NodeFsBackend {
    if (!this.backend) throw new Error("this node's VM is not running (no filesystem)");
    return this.backend;
  }

  async exists(path: string): Promise<boolean> { return this.b.exists(path); }
  async size(path: string): Promise<number> { return this.b.size(path); }
  async readFile(path: string): Promise<Buffer> { return this.b.readFile(path); }
  async list(dir: string): Promise<NodeFileEntry[]> { return this.b.list(dir); }
}
