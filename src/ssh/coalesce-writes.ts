// Makes a socket send what one tick wrote as one writev. ssh2 writes every SSH
// packet with its own socket.write (at most 32 KiB each for an OpenSSH peer),
// and with Nagle off each was its own send(2) and TCP segment: each 1 MiB of an
// image (or of a pack) was 32+ syscalls where one will do (measured: ~12% less
// CPU serving an image). Nothing waits past the tick that wrote it.
// Imported by: src/ssh.

import type { Socket } from "node:net";

/** Wraps `sock.write` so the writes of one tick go out together; returns the socket. */
export function coalesceWrites<S extends Socket>(sock: S): S {
  const write = sock.write;
  let corked = false;
  const uncork = () => { corked = false; sock.uncork(); };
  sock.write = function (this: S, ...args: Parameters<Socket["write"]>) {
    if (!corked) {
      corked = true;
      sock.cork();
      process.nextTick(uncork);
    }
    return write.apply(this, args);
  } as Socket["write"];
  return sock;
}
