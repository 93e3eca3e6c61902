// The dependency rules of hsd's src/ (docs/architecture.md explains them).
// Run by `npm run lint:deps` and by .ci/run before the tests; a violation
// names the rule below. Type-only imports count: they couple folders too.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "domain-imports-nothing",
      comment: "src/domain is the shared contract: it imports nothing else of hsd (only its own files and node/npm).",
      severity: "error",
      from: { path: "^src/domain/" },
      to: { path: "^src/", pathNot: "^src/domain/" },
    },
    {
      name: "inner-layers-never-see-proto-api-or-cli",
      comment: "nest, level, providers, git and ssh speak domain types; generated code, the gRPC server and the CLI are edges above them.",
      severity: "error",
      from: { path: "^src/(nest|level|providers|git|ssh)/" },
      to: { path: "^src/(gen|api|cli)/" },
    },
    {
      name: "generated-code-only-at-the-rpc-edge",
      comment: "Generated proto types meet domain types only in src/rpc (converters, clients) and the src/api handlers.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/(rpc|api|gen)/" },
      to: { path: "^src/gen/" },
    },
    {
      name: "git-never-imports-secrets",
      comment: "What git serves or fetches must never be able to reach the secrets store.",
      severity: "error",
      from: { path: "^src/git/" },
      to: { path: "^src/secrets/" },
    },
    {
      name: "git-never-imports-homestak",
      comment: "Sync is handed each working tree's path; it must never be able to reach the level's config/secrets.yaml code.",
      severity: "error",
      from: { path: "^src/git/" },
      to: { path: "^src/homestak/" },
    },
    {
      name: "secrets-never-imports-git",
      comment: "The secrets store knows nothing of git: a sync can never write a secret and vice versa.",
      severity: "error",
      from: { path: "^src/secrets/" },
      to: { path: "^src/git/" },
    },
    {
      name: "only-hsctl-imports-cli",
      comment: "src/cli is the hsctl program; nothing else of hsd (the daemon included) may import it.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/cli/" },
      to: { path: "^src/cli/" },
    },
    {
      name: "no-folder-cycles",
      comment: "Folders depend on each other in one direction only (e.g. git uses ssh's client; ssh gets upload-pack injected).",
      severity: "error",
      scope: "folder",
      from: { path: "^src/" },
      to: { circular: true },
    },
    {
      name: "no-module-cycles",
      comment: "No module reaches itself through its imports.",
      severity: "error",
      from: { path: "^src/" },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^src/gen/.*_pb\\.d\\.ts$" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
