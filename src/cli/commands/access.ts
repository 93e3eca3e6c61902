// `hsctl access add|remove|list`: manage the keys allowed on this level's SSH
// endpoint through AccessService. Registered in commands/index.ts.
// Imported by: src/cli/commands.

import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { InvalidArgumentError } from "../../domain/errors.js";
import type { AuthorizedKey, KeyRole } from "../../domain/level-api.js";
import type { CliIo, Command } from "../command.js";

const ROLES: readonly KeyRole[] = ["reader", "controller"];

/** The first key line of a public key file ("-" reads stdin). */
async function readKeyFile(file: string, io: CliIo): Promise<string> {
  let text: string;
  try {
    text = file === "-" ? await readStdin() : await readFile(resolve(io.cwd, file), "utf8");
  } catch (err) {
    throw new InvalidArgumentError(`cannot read key file ${file}: ${(err as NodeJS.ErrnoException).code ?? "error"}`, { details: { file } });
  }
  const line = text.split("\n").map((l) => l.trim()).find((l) => l !== "" && !l.startsWith("#"));
  if (!line) throw new InvalidArgumentError(`${file} holds no public key line`, { details: { file } });
  if (line.includes("PRIVATE KEY")) throw new InvalidArgumentError(`${file} is a private key; give the .pub file`, { details: { file } });
  return line;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function keyLine(k: AuthorizedKey): string {
  return `${k.role.padEnd(10)}  ${k.fingerprint}  ${k.comment || "-"}`;
}

export const accessCommand: Command = {
  name: "access",
  summary: "authorize, revoke and list SSH keys of this level",
  help: `Usage:
  hsctl access add --role reader|controller KEYFILE [--json]
  hsctl access remove KEYFILE | --fingerprint SHA256:... [--json]
  hsctl access list [--json]

Keys decide who may use this level's SSH endpoint:
  reader      may fetch the exported repos (git-upload-pack), nothing else
  controller  may open a tunnel to this level's API (the parent, an operator)
KEYFILE is an OpenSSH public key file (e.g. ~/.ssh/id_ed25519.pub), or - for stdin.

Examples:
  hsctl access add --role controller ~/.ssh/id_ed25519.pub
  hsctl access list
  hsctl access remove --fingerprint SHA256:abc...
`,
  options: { role: { type: "string" }, fingerprint: { type: "string" }, json: { type: "boolean" } },
  allowPositionals: true,
  async run(args, io) {
    const [sub, file, ...extra] = args.positionals;
    if (extra.length > 0) throw new InvalidArgumentError(`unexpected argument ${JSON.stringify(extra[0])}`);
    const json = Boolean(args.values.json);
    switch (sub) {
      case "add": {
        const role = args.values.role;
        if (typeof role !== "string" || !ROLES.includes(role as KeyRole)) {
          throw new InvalidArgumentError("access add needs --role reader or --role controller", { details: { field: "role" } });
        }
        if (!file) throw new InvalidArgumentError("access add needs a KEYFILE", { details: { field: "KEYFILE" } });
        const publicKey = await readKeyFile(file, io);
        const conn = await args.connect();
        const k = (await conn.access.addKey({ publicKey, role: role as KeyRole }, { deadlineMs: conn.unaryDeadlineMs, signal: io.signal }))!;
        io.out(json ? `${JSON.stringify(k)}\n` : `added ${keyLine(k)}\n`);
        return 0;
      }
      case "remove": {
        const fp = typeof args.values.fingerprint === "string" ? args.values.fingerprint : "";
        if (!file && !fp) throw new InvalidArgumentError("access remove needs a KEYFILE or --fingerprint", { details: { field: "KEYFILE" } });
        const publicKey = file ? await readKeyFile(file, io) : "";
        const conn = await args.connect();
        const removed = await conn.access.removeKey({ publicKey, fingerprint: fp }, { deadlineMs: conn.unaryDeadlineMs, signal: io.signal });
        io.out(json ? `${JSON.stringify({ removed })}\n` : removed ? "removed\n" : "no such key\n");
        return removed ? 0 : 1;
      }
      case "list": {
        const conn = await args.connect();
        const keys = await conn.access.listKeys({ deadlineMs: conn.unaryDeadlineMs, signal: io.signal });
        if (json) io.out(`${JSON.stringify(keys)}\n`);
        else io.out(keys.length === 0 ? "no keys authorized\n" : `${keys.map(keyLine).join("\n")}\n`);
        return 0;
      }
      default:
        throw new InvalidArgumentError(sub ? `unknown access command ${JSON.stringify(sub)} (add, remove, list)` : "access needs add, remove or list");
    }
  },
};
