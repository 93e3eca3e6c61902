// The V8 flags every hsd is started with: by a parent's local provider, by
// hsctl for a user's level 0, by a PVE child's launcher, and (copied, a
// shebang cannot import) by bin/hsd.js's shebang for the service. A
// long-lived daemon that idles most of its life: a 1 MiB young generation
// instead of V8's 16 MiB takes ~5 MiB off its idle RSS (bench/daemon-start.ts)
// for a few more, cheap scavenges while it works.
// Imported by: src/cli, src/daemon, src/providers.

export const HSD_NODE_FLAGS: readonly string[] = Object.freeze(["--max-semi-space-size=1"]);
