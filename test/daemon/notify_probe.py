# Plays systemd for one hsd: binds a NOTIFY_SOCKET datagram socket, starts
# hsd with it, prints the notification, sends SIGTERM at once and prints the
# exit code. Usage: notify_probe.py HSD_JS ROOT
import os, signal, socket, subprocess, sys
hsd, root = sys.argv[1], sys.argv[2]
path = os.path.join(root, "notify.sock")
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(15)
p = subprocess.Popen(["node", hsd, "run", "--root", os.path.join(root, "level")],
                     env={**os.environ, "NOTIFY_SOCKET": path, "HSD_READY_FD": ""}, stdout=subprocess.DEVNULL)
try:
    msg = s.recv(4096).decode()
    print("notify:" + msg.replace("\n", ";"))
finally:
    p.send_signal(signal.SIGTERM)
    print("exit:%d" % p.wait(15))
