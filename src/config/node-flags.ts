// The V8 flags of every hsd, set by its loader (src/util/run-bundle.ts) at
// runtime, never on node's command line: a flag given there changes V8's flag
// hash from node's first line of JavaScript, and V8 then refuses node's own
// code cache for every builtin (~35 ms of each hsd start spent compiling them).
// Imported by: nothing in src (scripts/bundle-entries.mjs writes them into hsd's entry; tests, benches).

/**
 * --semi-space-growth-factor=1: the young generation stays at V8's initial
 * 1 MiB semi-space instead of growing to 16 MiB. A long-lived daemon that idles
 * most of its life keeps ~5 MiB less RSS (bench/daemon-start.ts) for a few
 * more, cheap scavenges while it works (what --max-semi-space-size=1 did).
 */
export const HSD_V8_FLAGS: readonly string[] = Object.freeze(["--semi-space-growth-factor=1"]);
