// grpc.health.v1 and server reflection (v1, v1alpha) of the real API server
// over a unix socket, as a foreign client sees them: statuses, Watch across
// close, and descriptor sets that rebuild into a protobuf-es registry.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { createFileRegistry, fromBinary, type FileRegistry, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { startApiServer, type ApiServer } from "../../src/api/server.js";
import { HealthService } from "../../src/api/health-service.js";
import { createClient } from "../../src/rpc/client.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../src/gen/grpc/health/v1/health_pb.js";
import { ServerReflection as ReflectionV1, ServerReflectionRequestSchema } from "../../src/gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../../src/gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { HsError } from "../../src/domain/errors.js";
import { silentLogger } from "../../src/log/logger.js";
import type { AccessApi, LevelApi } from "../../src/domain/level-api.js";

const ALL_SERVICES = [
  "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
  "homestak.nest.v1.AccessService", "homestak.nest.v1.NestService",
];

let dir: string;
let server: ApiServer;
let socket: string;

async function start(name: string): Promise<ApiServer> {
  // Health and reflection never reach the level or the key store.
  return startApiServer({ socketPath: join(dir, name), level: {} as LevelApi, access: {} as AccessApi, log: silentLogger() });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hsd-health-"));
  server = await start("hsd.sock");
  socket = server.socketPath;
});
after(async () => {
  await server?.close(1000);
  await rm(dir, { recursive: true, force: true });
});

type ReflectionRequest = MessageInitShape<typeof ServerReflectionRequestSchema>;
type Ask = NonNullable<ReflectionRequest["messageRequest"]>;

/** A request stream the test feeds one message at a time, to prove the server answers each in turn. */
function feed<T>() {
  const queue: T[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  return {
    push(v: T) { queue.push(v); wake?.(); },
    end() { ended = true; wake?.(); },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (queue.length) yield queue.shift()!;
        if (ended) return;
        await new Promise<void>((r) => { wake = r; });
        wake = undefined;
      }
    },
  };
}

/** A registry built only from the descriptor set the server sent; throws if any import is missing. */
function registryOf(set: Uint8Array[]): FileRegistry {
  const protos = set.map((b) => fromBinary(FileDescriptorProtoSchema, b));
  const byName = new Map<string, FileDescriptorProto>(protos.map((p) => [p.name, p]));
  return createFileRegistry(protos[0]!, (name) => byName.get(name));
}

test("Check: SERVING for the server and NestService, NOT_FOUND for an unknown service", async () => {
  const c = createClient(Health, socket);
  try {
    assert.equal((await c.check({ service: "" })).status, Status.SERVING);
    assert.equal((await c.check({ service: "homestak.nest.v1.NestService" })).status, Status.SERVING);
    await assert.rejects(c.check({ service: "no.such.Service" }), (e: unknown) => {
      assert.equal((e as HsError).code, "NotFound");
      assert.equal((e as HsError).details.grpcStatus, grpc.status.NOT_FOUND);
      return true;
    });
    const list = await c.list({});
    assert.deepEqual(Object.keys(list.statuses).sort(), ["", "homestak.nest.v1.NestService"]);
  } finally {
    c.close();
  }
});

test("Watch: SERVING at once, NOT_SERVING on close, then the stream ends OK and close does not wait out its grace", async () => {
  const own = await start("watch.sock");
  const c = createClient(Health, own.socketPath);
  try {
    const known = c.watch({ service: "homestak.nest.v1.NestService" })[Symbol.asyncIterator]();
    const unknown = c.watch({ service: "later.Service" })[Symbol.asyncIterator]();
    assert.equal((await known.next()).value?.status, Status.SERVING);
    assert.equal((await unknown.next()).value?.status, Status.SERVICE_UNKNOWN);
    const t0 = Date.now();
    const closed = own.close(30_000);
    assert.equal((await known.next()).value?.status, Status.NOT_SERVING);
    assert.equal((await known.next()).done, true);
    assert.equal((await unknown.next()).done, true);
    await closed;
    assert.ok(Date.now() - t0 < 10_000, "close was held up by the Watch streams");
  } finally {
    c.close();
    await own.close(1000);
  }
});

test("HealthService Watch: every change after the first status, an unknown service once it becomes known", async () => {
  const health = new HealthService({ a: "SERVING" });
  const srv = new grpc.Server();
  health.addToServer(srv);
  const path = join(dir, "bare.sock");
  await new Promise<void>((res, rej) => srv.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
  const c = createClient(Health, path);
  try {
    const w = c.watch({ service: "b" })[Symbol.asyncIterator]();
    assert.equal((await w.next()).value?.status, Status.SERVICE_UNKNOWN);
    health.setStatus("b", "NOT_SERVING");
    assert.equal((await w.next()).value?.status, Status.NOT_SERVING);
    health.setStatus("b", "SERVING");
    assert.equal((await w.next()).value?.status, Status.SERVING);
    await w.return?.(undefined);
    health.shutdown();
    health.setStatus("a", "SERVING");
    assert.equal((await c.check({ service: "a" })).status, Status.NOT_SERVING, "status changes after shutdown are ignored");
  } finally {
    c.close();
    await new Promise<void>((res) => srv.tryShutdown(() => res()));
  }
});

// The two versions' messages are identical but for the package, so one typing serves both.
const VERSIONS = [["v1", ReflectionV1], ["v1alpha", ReflectionV1alpha as unknown as typeof ReflectionV1]] as const;
for (const [version, service] of VERSIONS) {
  test(`reflection ${version}: list_services names every registered service`, async () => {
    const c = createClient(service, socket);
    try {
      const out = [];
      for await (const r of c.serverReflectionInfo([{ host: "h", messageRequest: { case: "listServices", value: "*" } }])) out.push(r);
      assert.equal(out.length, 1);
      const r = out[0]!;
      assert.equal(r.messageResponse.case, "listServicesResponse");
      assert.deepEqual(r.messageResponse.value?.service.map((s) => s.name).sort(), ALL_SERVICES);
      assert.equal(r.validHost, "h");
      assert.equal(r.originalRequest?.messageRequest.case, "listServices");
    } finally {
      c.close();
    }
  });

  test(`reflection ${version}: symbols and files resolve to complete descriptor sets; unknown names answer NOT_FOUND on a live stream`, async () => {
    const c = createClient(service, socket);
    const reqs = feed<ReflectionRequest>();
    const res = c.serverReflectionInfo(reqs)[Symbol.asyncIterator]();
    const ask = async (messageRequest: Ask) => {
      reqs.push({ host: "", messageRequest });
      const r = await res.next();
      assert.equal(r.done, false);
      return r.value!;
    };
    const descriptorSet = async (messageRequest: Ask) => {
      const r = await ask(messageRequest);
      assert.ok(r.messageResponse.case === "fileDescriptorResponse", JSON.stringify(messageRequest));
      return registryOf(r.messageResponse.value.fileDescriptorProto);
    };
    const errorCode = async (messageRequest: Ask) => {
      const r = await ask(messageRequest);
      assert.ok(r.messageResponse.case === "errorResponse", JSON.stringify(messageRequest));
      assert.equal(r.originalRequest?.messageRequest.case, messageRequest.case);
      return r.messageResponse.value.errorCode;
    };
    try {
      assert.equal(await errorCode({ case: "fileContainingSymbol", value: "homestak.nest.v1.NoSuch" }), grpc.status.NOT_FOUND);
      assert.ok((await descriptorSet({ case: "fileContainingSymbol", value: "homestak.nest.v1.NestService" })).getService("homestak.nest.v1.NestService"));
      assert.ok((await descriptorSet({ case: "fileContainingSymbol", value: "homestak.nest.v1.NestService.Status" })).getService("homestak.nest.v1.NestService"));
      assert.ok((await descriptorSet({ case: "fileContainingSymbol", value: "homestak.nest.v1.LevelStatus" })).getMessage("homestak.nest.v1.LevelStatus"));
      assert.ok((await descriptorSet({ case: "fileContainingSymbol", value: "homestak.nest.v1.LevelStatus.name" })).getMessage("homestak.nest.v1.LevelStatus"));
      assert.ok((await descriptorSet({ case: "fileContainingSymbol", value: "homestak.nest.v1.KeyRole" })).getEnum("homestak.nest.v1.KeyRole"));
      assert.ok((await descriptorSet({ case: "fileContainingSymbol", value: "google.protobuf.Timestamp" })).getMessage("google.protobuf.Timestamp"));
      assert.ok((await descriptorSet({ case: "fileContainingSymbol", value: "grpc.health.v1.HealthCheckResponse.ServingStatus" }))
        .getEnum("grpc.health.v1.HealthCheckResponse.ServingStatus"));
      assert.ok((await descriptorSet({ case: "fileContainingSymbol", value: `grpc.reflection.${version}.ServerReflection` }))
        .getService(`grpc.reflection.${version}.ServerReflection`));
      assert.ok((await descriptorSet({ case: "fileByFilename", value: "homestak/nest/v1/nest.proto" })).getFile("homestak/nest/v1/nest.proto"));
      assert.equal(await errorCode({ case: "fileByFilename", value: "no/such.proto" }), grpc.status.NOT_FOUND);
      assert.equal(await errorCode({ case: "fileContainingExtension", value: { containingType: "homestak.nest.v1.LevelStatus", extensionNumber: 100 } }),
        grpc.status.NOT_FOUND);
      assert.equal(await errorCode({ case: "allExtensionNumbersOfType", value: "homestak.nest.v1.NoSuch" }), grpc.status.NOT_FOUND);
      const ext = await ask({ case: "allExtensionNumbersOfType", value: "homestak.nest.v1.LevelStatus" });
      assert.equal(ext.messageResponse.case, "allExtensionNumbersResponse");
      // A request that sets nothing is a protocol error: the stream ends with INVALID_ARGUMENT (as grpc-go).
      reqs.push({ host: "" });
      await assert.rejects(res.next(), (e: unknown) => (e as HsError).code === "InvalidArgument");
    } finally {
      reqs.end();
      c.close();
    }
  });
}
