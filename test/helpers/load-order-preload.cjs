// Test-only probe, preloaded into hsctl with `node --require` (NODE_OPTIONS):
// appends to $HSD_LOAD_ORDER_FILE, in order, "spawn <argv>" for each process
// hsctl spawns and "load http2" the first time hsctl requires http2 (the gRPC
// client loads it; no gRPC dial can happen before). Processes other than
// hsctl (the hsd it starts inherits NODE_OPTIONS) record nothing.
const { appendFileSync } = require("node:fs");
const Module = require("node:module");
const childProcess = require("node:child_process");

const file = process.env.HSD_LOAD_ORDER_FILE;
if (file && /hsctl\.js$/.test(process.argv[1] ?? "")) {
  const note = (line) => appendFileSync(file, `${line}\n`);
  const watched = new Set(["http2"]);
  const seen = new Set();
  const load = Module._load;
  Module._load = function (request, ...rest) {
    const name = String(request).replace(/^node:/, "");
    if (watched.has(name) && !seen.has(name)) { seen.add(name); note(`load ${name}`); }
    return load.call(this, request, ...rest);
  };
  const spawn = childProcess.spawn;
  childProcess.spawn = function (cmd, args, ...rest) {
    note(`spawn ${[cmd, ...(Array.isArray(args) ? args : [])].join(" ")}`);
    return spawn.call(this, cmd, args, ...rest);
  };
}
