#!/usr/bin/env node
// A PVE host command (pveum, pvesm, pvecm, qm) on a simulated node: sends its
// argv to the simulator's control endpoint and replays the answer's stdout,
// stderr and exit code. Test-only; written into bin dirs by the e2e tests and
// sim-vm.ts as `exec node sim-shim.mjs <control url> <cmd> "$@"`.
import http from "node:http";

const [url, ...argv] = process.argv.slice(2);
const body = JSON.stringify({ argv });
const req = http.request(url, { method: "POST", headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) }, timeout: 60_000 }, (res) => {
  let s = "";
  res.setEncoding("utf8").on("data", (d) => { s += d; }).on("end", () => {
    try {
      const r = JSON.parse(s);
      process.stdout.write(r.stdout ?? "");
      process.stderr.write(r.stderr ?? "");
      process.exitCode = r.code ?? 1;
    } catch {
      process.stderr.write(`sim-shim: bad answer from ${url}: ${s}\n`);
      process.exitCode = 1;
    }
  });
});
req.on("timeout", () => req.destroy(new Error("timed out")));
req.on("error", (e) => { process.stderr.write(`sim-shim: ${argv[0]}: cannot reach the simulator at ${url}: ${e.message}\n`); process.exitCode = 255; });
req.end(body);
