# A reflection client nobody on this project wrote the server for: Debian's
# python3-grpcio, a raw stream_stream call, hand-encoded protobuf. Prints one
# service name per line. Usage: reflection_client.py SOCKET [v1|v1alpha]
import sys
import grpc

def varint(b, i):
    shift = result = 0
    while True:
        c = b[i]; i += 1
        result |= (c & 0x7F) << shift
        if c < 0x80:
            return result, i
        shift += 7

def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 2:
            n, i = varint(b, i)
            yield num, b[i:i + n]; i += n
        elif wt == 0:
            v, i = varint(b, i)
            yield num, v
        else:
            raise ValueError("unexpected wire type %d" % wt)

def main():
    sock, version = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "v1")
    channel = grpc.insecure_channel("unix://" + sock)
    call = channel.stream_stream(
        "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version,
        request_serializer=lambda b: b, response_deserializer=lambda b: b)
    request = b"\x3a\x01*"  # field 7 (list_services), string "*"
    for response in call(iter([request]), timeout=10):
        for num, val in fields(response):
            if num == 6:  # list_services_response
                for snum, service in fields(val):
                    if snum == 1:
                        for nnum, name in fields(service):
                            if nnum == 1:
                                print(name.decode())
        break
    channel.close()

main()
