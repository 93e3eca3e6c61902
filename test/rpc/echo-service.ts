// A test-only service with all four gRPC method kinds, built from a
// descriptor at runtime (hsd's own API has no client/bidi streams).
// Imported by test/rpc tests only.

import { create, createFileRegistry, type Message } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { GenMessage, GenService } from "@bufbuild/protobuf/codegenv2";

export type Num = Message<"hsd.test.v1.Num"> & { n: number; note: string };

const file = create(FileDescriptorProtoSchema, {
  name: "hsd/test/v1/echo.proto",
  package: "hsd.test.v1",
  syntax: "proto3",
  messageType: [{
    name: "Num",
    field: [
      { name: "n", number: 1, type: 5 /* int32 */, label: 1, jsonName: "n" },
      { name: "note", number: 2, type: 9 /* string */, label: 1, jsonName: "note" },
    ],
  }],
  service: [{
    name: "Echo",
    method: [
      { name: "Unary", inputType: ".hsd.test.v1.Num", outputType: ".hsd.test.v1.Num" },
      { name: "Count", inputType: ".hsd.test.v1.Num", outputType: ".hsd.test.v1.Num", serverStreaming: true },
      { name: "Sum", inputType: ".hsd.test.v1.Num", outputType: ".hsd.test.v1.Num", clientStreaming: true },
      { name: "Chat", inputType: ".hsd.test.v1.Num", outputType: ".hsd.test.v1.Num", clientStreaming: true, serverStreaming: true },
    ],
  }],
});

const registry = createFileRegistry(file, () => undefined);
const desc = registry.getFile("hsd/test/v1/echo.proto")!;

export const NumSchema = desc.messages[0] as unknown as GenMessage<Num>;
export const EchoService = desc.services[0] as unknown as GenService<{
  unary: { methodKind: "unary"; input: typeof NumSchema; output: typeof NumSchema };
  count: { methodKind: "server_streaming"; input: typeof NumSchema; output: typeof NumSchema };
  sum: { methodKind: "client_streaming"; input: typeof NumSchema; output: typeof NumSchema };
  chat: { methodKind: "bidi_streaming"; input: typeof NumSchema; output: typeof NumSchema };
}>;
