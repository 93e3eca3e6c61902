// Child process for the crash-safe-file test: writes versions of a journal or
// a secrets file with the real stores (built dist/), printing each version
// once its write returned. With a kill version it SIGKILLs itself between
// that version's fsync and rename (the stores' beforeRename hook).
// argv: kind(journal|secrets) path fromVersion killAtVersion(0 = never)
import { Journal } from "../../../dist/nest/journal.js";
import { SecretsStore } from "../../../dist/secrets/secrets-store.js";

const [kind, path, fromText, killText] = process.argv.slice(2);
const killAt = Number(killText);
let current = Number(fromText);
const beforeRename = () => { if (current === killAt) process.kill(process.pid, "SIGKILL"); };
const pad = "p".repeat(4096 + (Number(fromText) % 7) * 1000); // multi-page writes
if (kind === "journal") {
  const j = new Journal(path, { beforeRename });
  await j.load();
  for (;; current++) {
    await j.update((d) => { d.configured = { kind: "finished", durationMs: current, budgetMs: 0, at: current }; d.children.pad = { name: pad }; });
    process.stdout.write(`${current}\n`);
  }
} else {
  const s = new SecretsStore(path, { beforeRename });
  for (;; current++) {
    await s.write({ version: current, pad });
    process.stdout.write(`${current}\n`);
  }
}
