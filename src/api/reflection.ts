// Server reflection (grpc.reflection.v1 and v1alpha) fed from the protobuf-es
// descriptors compiled into src/gen, so grpcurl and friends see exactly the API
// this binary serves with no .proto files or protobufjs at runtime.
// Imported by: src/api.

import { toBinary, type DescEnum, type DescFile, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { InvalidArgumentError } from "../domain/errors.js";
import { ServerReflection as ReflectionV1 } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { toServiceDefinition, toServiceImpl, type ImplOptions } from "../rpc/service-definition.js";

/** gRPC NOT_FOUND; error_response carries a bare status number. */
const NOT_FOUND = 5;

/** Serialized FileDescriptorProtos of `file` and everything it imports, each once, `file` first. */
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

/** What the two reflection versions' requests have in common (their shapes are identical). */
interface ReflectionRequest {
  host: string;
  messageRequest:
    | { case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; value: string }
    | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
    | { case: undefined; value?: undefined };
}

type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/** Name lookups over the served files and everything they import. */
class DescriptorIndex {
  readonly byFile = new Map<string, DescFile>();
  /** Every fully-qualified name (types, fields, oneofs, enum values, services, methods) -> declaring file. */
  readonly bySymbol = new Map<string, DescFile>();
  readonly messages = new Set<string>();
  /** "extendee:number" -> declaring file. */
  readonly byExtension = new Map<string, DescFile>();
  readonly extensionNumbers = new Map<string, number[]>();
  private readonly serialized = new Map<string, Buffer[]>();

  constructor(readonly services: string[], files: DescFile[]) {
    files.forEach((f) => this.addFile(f));
  }

  /** Cached: a reflection client asks for the same few files over and over. */
  descriptors(file: DescFile): Buffer[] {
    let d = this.serialized.get(file.proto.name);
    if (!d) this.serialized.set(file.proto.name, d = fileDescriptorProtos(file));
    return d;
  }

  private addFile(file: DescFile): void {
    if (this.byFile.has(file.proto.name)) return;
    this.byFile.set(file.proto.name, file);
    const pkg = file.proto.package;
    for (const m of file.messages) this.addMessage(file, m);
    for (const e of file.enums) this.addEnum(file, e, pkg);
    this.addExtensions(file, file.extensions);
    for (const s of file.services) this.addService(file, s);
    file.dependencies.forEach((d) => this.addFile(d));
  }

  private addMessage(file: DescFile, m: DescMessage): void {
    this.bySymbol.set(m.typeName, file);
    this.messages.add(m.typeName);
    for (const f of m.fields) this.bySymbol.set(`${m.typeName}.${f.name}`, file);
    for (const o of m.oneofs) this.bySymbol.set(`${m.typeName}.${o.name}`, file);
    for (const n of m.nestedMessages) this.addMessage(file, n);
    for (const e of m.nestedEnums) this.addEnum(file, e, m.typeName);
    this.addExtensions(file, m.nestedExtensions);
  }

  /** Enum values are scoped beside their enum, not inside it (protobuf's C++ scoping). */
  private addEnum(file: DescFile, e: DescEnum, scope: string): void {
    this.bySymbol.set(e.typeName, file);
    for (const v of e.values) this.bySymbol.set(scope ? `${scope}.${v.name}` : v.name, file);
  }

  private addExtensions(file: DescFile, exts: DescFile["extensions"]): void {
    for (const x of exts) {
      this.bySymbol.set(x.typeName, file);
      this.byExtension.set(`${x.extendee.typeName}:${x.number}`, file);
      const nums = this.extensionNumbers.get(x.extendee.typeName) ?? [];
      this.extensionNumbers.set(x.extendee.typeName, [...nums, x.number]);
    }
  }

  private addService(file: DescFile, s: DescService): void {
    this.bySymbol.set(s.typeName, file);
    for (const m of s.methods) this.bySymbol.set(`${s.typeName}.${m.name}`, file);
  }
}

function notFound(errorMessage: string): Answer {
  return { case: "errorResponse", value: { errorCode: NOT_FOUND, errorMessage } };
}

function files(idx: DescriptorIndex, file: DescFile | undefined, missing: string): Answer {
  return file ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: idx.descriptors(file) } } : notFound(missing);
}

/** Unknown names answer with error_response and leave the stream open (as grpc-go). */
function answer(idx: DescriptorIndex, req: ReflectionRequest): Answer {
  const r = req.messageRequest;
  switch (r.case) {
    case "listServices":
      return { case: "listServicesResponse", value: { service: idx.services.map((name) => ({ name })) } };
    case "fileByFilename":
      return files(idx, idx.byFile.get(r.value), `file ${JSON.stringify(r.value)} not found`);
    case "fileContainingSymbol":
      return files(idx, idx.bySymbol.get(r.value), `symbol ${JSON.stringify(r.value)} not found`);
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = r.value;
      return files(idx, idx.byExtension.get(`${containingType}:${extensionNumber}`),
        `no extension ${extensionNumber} of ${JSON.stringify(containingType)}`);
    }
    case "allExtensionNumbersOfType":
      if (!idx.messages.has(r.value)) return notFound(`message type ${JSON.stringify(r.value)} not found`);
      return { case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: idx.extensionNumbers.get(r.value) ?? [] } };
    default:
      // grpc-go ends the stream here too: the client sent something this protocol version lacks.
      throw new InvalidArgumentError("reflection request sets no message_request field");
  }
}

async function* serve<R extends ReflectionRequest>(idx: DescriptorIndex, reqs: AsyncIterable<R>) {
  for await (const req of reqs) {
    yield { validHost: req.host, originalRequest: req, messageResponse: answer(idx, req) };
  }
}

/**
 * Adds grpc.reflection.v1 and v1alpha to `server`, describing `services`
 * (everything else the server registers) plus the reflection services themselves.
 * v1alpha stays for older grpcurl and Debian's python3-grpcio client.
 */
export function addReflection(server: Pick<grpc.Server, "addService">, services: DescService[], opts: ImplOptions = {}): void {
  const all = [...services, ReflectionV1, ReflectionV1alpha];
  const idx = new DescriptorIndex(all.map((s) => s.typeName), all.map((s) => s.file));
  server.addService(toServiceDefinition(ReflectionV1, opts),
    toServiceImpl(ReflectionV1, { serverReflectionInfo: (reqs) => serve(idx, reqs) }, opts));
  server.addService(toServiceDefinition(ReflectionV1alpha, opts),
    toServiceImpl(ReflectionV1alpha, { serverReflectionInfo: (reqs) => serve(idx, reqs) }, opts));
}
