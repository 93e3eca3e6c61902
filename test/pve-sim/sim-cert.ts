// Self-signed certificates for the PVE simulator, made with the openssl CLI.
// Test-only; imported by pve-sim.ts. A zone-id SAN (fe80::1%vmbr0) reproduces
// what `pvecm updatecerts` writes when the hostname resolves link-local.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { readFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";

const run = promisify(execFile);

export interface SimCert {
  readonly key: string;
  readonly cert: string;
  readonly fingerprint: string;
  readonly subjectAltName: string;
}

export async function makeSimCert(dir: string, cn: string, opts: { zoneId?: boolean } = {}): Promise<SimCert> {
  await mkdir(dir, { recursive: true });
  const sans = ["DNS:localhost", "IP:127.0.0.1", `DNS:${cn}`];
  if (opts.zoneId) sans.push("DNS:fe80::1%vmbr0");
  const keyPath = join(dir, "pve-ssl.key");
  const certPath = join(dir, "pve-ssl.pem");
  await run("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", keyPath, "-out", certPath, "-days", "2", "-subj", `/CN=${cn}`, "-addext", `subjectAltName=${sans.join(",")}`,
  ], { timeout: 20_000 });
  const key = await readFile(keyPath, "utf8");
  const cert = await readFile(certPath, "utf8");
  const x = new X509Certificate(cert);
  return { key, cert, fingerprint: x.fingerprint256, subjectAltName: x.subjectAltName ?? "" };
}
