// Holds a TCP port for a test the way another daemon would (a listener on
// 0.0.0.0), e.g. the system hsd's 2222. Shared by tests that prove hsd does not
// collide with it.
import { createServer, type Server } from "node:net";

export interface HeldPort { port: number; release(): Promise<void> }

/**
 * Listens on `port` (0: one the OS picks). If something else already holds
 * it, that is as good for the test: the port is taken either way.
 */
export function holdPort(port = 0): Promise<HeldPort> {
  return new Promise((resolve, reject) => {
    const srv: Server = createServer((s) => s.destroy());
    srv.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE" && port !== 0) resolve({ port, release: async () => {} });
      else reject(err);
    });
    srv.listen(port, "0.0.0.0", () => {
      const bound = (srv.address() as { port: number }).port;
      resolve({ port: bound, release: () => new Promise<void>((r) => srv.close(() => r())) });
    });
  });
}
