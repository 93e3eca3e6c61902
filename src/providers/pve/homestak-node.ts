// What a PVE level records for homestak's own tools after its configure made
// its API token: the token under api_tokens.<level name> in its own
// config/secrets.yaml (homestak's place; a level holds only its own), and
// config/nodes/<name>.yaml as homestak's generate_node_config writes it
// (node, host, api_endpoint on localhost, api_token = the key into api_tokens,
// datastore, ip). hsd's private copy of the secret stays in its state.
// Imported by: src/providers.

import { stringify } from "yaml";
import type { CommandRunner } from "../../util/command-runner.js";

/** The two writes this needs from the level's site-config files (SiteConfigFiles). */
export interface HomestakNodeFiles {
  putOwnApiToken(name: string, value: string): Promise<void>;
  putConfigFile(relPath: string, text: string): Promise<void>;
}

export interface HomestakNodeOptions {
  readonly files: HomestakNodeFiles;
  /** The level's name: homestak's node name, nodes/ file name and api_tokens key. */
  readonly name: string;
  /** The PVE node name of this level's own API. */
  readonly node: string;
  readonly tokenId: string;
  readonly tokenSecret: string;
  /** Where homestak puts VM disks on this node (this level's pve.storage). */
  readonly datastore: string;
  /** The node's address comes from this bridge's IPv4, else eth0 (as homestak detects it). */
  readonly bridge: string;
  readonly commands: CommandRunner;
  readonly signal: AbortSignal;
}

export async function recordHomestakNode(o: HomestakNodeOptions): Promise<{ ip: string }> {
  await o.files.putOwnApiToken(o.name, `${o.tokenId}=${o.tokenSecret}`);
  const ip = await nodeAddress(o);
  const doc = {
    node: o.node, host: o.name, api_endpoint: "https://localhost:8006", api_token: o.name, datastore: o.datastore, ...(ip ? { ip } : {}),
  };
  await o.files.putConfigFile(`nodes/${o.name}.yaml`, `# Written by hsd on ${o.name} (homestak's nodes/<name>.yaml)\n${stringify(doc)}`);
  return { ip };
}

async function nodeAddress(o: HomestakNodeOptions): Promise<string> {
  for (const dev of [...new Set([o.bridge, "eth0"])]) {
    const r = await o.commands(["ip", "-j", "-4", "addr", "show", "dev", dev], { signal: o.signal, label: "ip addr show" });
    if (r.code !== 0) continue;
    try {
      const links = JSON.parse(r.stdout || "[]") as { addr_info?: { family?: string; local?: string }[] }[];
      const a = links.flatMap((l) => l.addr_info ?? []).find((x) => x.family === "inet" && x.local);
      if (a?.local) return a.local;
    } catch { /* not JSON: try the next device */ }
  }
  return "";
}
