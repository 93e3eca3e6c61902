// Server reflection fed from the protobuf-es descriptors compiled into
// src/gen, so grpcurl and friends see exactly the API this binary serves
// (no .proto files needed at runtime). Imported by src/api/server.ts only.

import { toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { ReflectionService } from "@grpc/reflection";
import type * as grpc from "@grpc/grpc-js";
import { file_homestak_nest_v1_nest } from "../gen/homestak/nest/v1/nest_pb.js";

/** Serialized FileDescriptorProtos of `file` and everything it imports, each once. */
export function fileDescriptorProtos(file: DescFile): Buffer[] {
  const seen = new Set<string>();
  const out: Buffer[] = [];
  const visit = (f: DescFile) => {
    if (seen.has(f.proto.name)) return;
    seen.add(f.proto.name);
    out.push(Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)));
    f.dependencies.forEach(visit);
  };
  visit(file);
  return out;
}

/** Adds grpc.reflection.v1 and v1alpha for the hsd API to `server`. */
export function addReflection(server: Pick<grpc.Server, "addService">): void {
  // @grpc/reflection reads only `fileDescriptorProtos` from each entry of the
  // package definition, so one entry carrying every file is enough.
  const pkg = { "homestak.nest.v1": { fileDescriptorProtos: fileDescriptorProtos(file_homestak_nest_v1_nest) } };
  new ReflectionService(pkg as unknown as ConstructorParameters<typeof ReflectionService>[0]).addToServer(server);
}
