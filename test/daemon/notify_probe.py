# Plays systemd's notify socket for hsd tests: binds a datagram socket at PATH
# with SO_PASSCRED and prints one JSON line per message: the sender's PID as
# systemd sees it (SCM_CREDENTIALS) and the text. Ends when stdin closes.
# Usage: notify_probe.py PATH
import json, os, select, socket, struct, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(path)
print(json.dumps({"bound": path}), flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [])
    if s in r:
        msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", data[:12])[0]
        print(json.dumps({"pid": pid, "msg": msg.decode()}), flush=True)
    elif sys.stdin in r and not os.read(sys.stdin.fileno(), 4096):
        break
