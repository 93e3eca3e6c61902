// The ciphers hsd's SSH endpoint offers: ssh2's defaults without
// chacha20-poly1305, so an OpenSSH client (git, ssh, an operator) settles on
// AES-GCM and the bundled hsd never needs ssh2's poly1305 WebAssembly (16 MiB
// of memory it would hold for the daemon's life; scripts/bundle-entries.mjs).
// Imported by: src/ssh.

export const ENDPOINT_CIPHERS: readonly string[] = Object.freeze([
  "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr",
]);
