#!/usr/bin/env bash
# Builds (once) a small Debian 12 guest image from Debian's packages only, for
# tests that need a real systemd as PID 1 under QEMU. Used by test/guest/ (the
# issue-19 systemd test); the PVE real-guest simulator (issue 18) reuses it.
#
# Interface:
#   scripts/guest-image.sh [--packages "p1 p2 ..."] [--cache DIR]
#     --packages  extra Debian packages on top of BASE_PACKAGES below
#                 (e.g. "cloud-init python3-cffi-backend qemu-guest-agent").
#     --cache     parent directory of images; default $HSD_GUEST_CACHE or /var/cache/hsd-guest.
#   Env: HSD_GUEST_MIRROR (default http://deb.debian.org/debian; not part of the hash).
#   Prints one line on stdout: the image directory <cache>/<hash>, holding
#     rootfs.img   raw ext4 root filesystem (boot it with snapshot=on or an overlay; never write it)
#     vmlinuz, initrd.img   the guest kernel (linux-image-cloud-amd64) for QEMU -kernel/-initrd
#     manifest     suite, packages, hash, build seconds, size
#   <hash> = sha256 of this script and the sorted package list, so a second run with the
#   same inputs returns at once; a changed script or package set builds a new image.
#   Concurrent runs for the same hash wait on a lock; the directory appears atomically.
#
# Boot contract (what the image does, for whoever starts QEMU):
#   kernel cmdline: root=/dev/vda rw console=ttyS0 hsd.ssh_key=<base64 of an OpenSSH public key>
#   - hsd-guest-key.service writes that key to /root/.ssh/authorized_keys before sshd starts
#     (no key is baked into the image; cloud-init, if added, can do the same from a NoCloud seed).
#   - systemd-networkd takes DHCP on every en*/eth* link (QEMU user networking gives 10.0.2.15).
#   - sshd allows root by key only. A fresh ed25519 host key is generated on every boot (snapshot=on).
#   - cloud-init reads a NoCloud seed only (a disk labelled cidata, as PVE's cloud-init drive);
#     without one it stays disabled. qemu-guest-agent starts when its virtio-serial port
#     (org.qemu.guest_agent.0) appears.
#   - apt's only source is an empty local repository: `apt-get update` and installing what the
#     image already has succeed offline (cloud-init's `packages:` as hsd's snippet asks), the rest fails.
#   - cmdline word hsd.pvenode: a disk labelled hsdpvenode is mounted on /run/hsd-pvenode and its
#     `setup` run once before sshd starts (the PVE simulator's stand-in for "PVE is installed here").
set -euo pipefail

SUITE=bookworm
# cloud-init (+ python3-cffi-backend, a dependency debootstrap's resolver misses), the guest agent and
# psmisc (fuser: the install phase's apt/dpkg lock check) make it a PVE-style guest (issue 18);
# locales with en_US.UTF-8 generated: cloud-init's locale module sets it (update-locale refuses a
# locale that is not generated).
BASE_PACKAGES="systemd-sysv udev dbus openssh-server iproute2 procps git linux-image-cloud-amd64 ca-certificates cloud-init python3-cffi-backend qemu-guest-agent psmisc locales"
extra=""
cache="${HSD_GUEST_CACHE:-/var/cache/hsd-guest}"
mirror="${HSD_GUEST_MIRROR:-http://deb.debian.org/debian}"
while [ $# -gt 0 ]; do
  case "$1" in
    --packages) extra="$2"; shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    *) echo "guest-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "guest-image.sh: needs root (debootstrap, chroot)" >&2; exit 1; }
for t in debootstrap mkfs.ext4; do
  command -v "$t" >/dev/null || { echo "guest-image.sh: $t missing (apt-get install debootstrap e2fsprogs)" >&2; exit 1; }
done

packages="$(printf '%s\n' $BASE_PACKAGES $extra | sort -u | tr '\n' ' ' | sed 's/ $//')"
hash="$( { cat "$0"; echo "$SUITE"; echo "$packages"; } | sha256sum | cut -c1-16)"
out="$cache/$hash"
mkdir -p "$cache"
exec 9>"$cache/.$hash.lock"
flock 9
if [ -f "$out/manifest" ]; then echo "$out"; exit 0; fi

start=$(date +%s)
work="$(mktemp -d "$cache/.build-$hash.XXXXXX")"
root="$work/root"
cleanup() {
  for m in proc sys dev; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "guest-image: debootstrap $SUITE ($packages)" >&2
debootstrap --variant=minbase --include="$(echo "$packages" | tr ' ' ',')" "$SUITE" "$root" "$mirror" >&2

# The guest's configuration: no key, no password; everything per boot comes from the cmdline.
echo hsd-guest > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 hsd-guest\n' > "$root/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$root/etc/fstab"
cat > "$root/etc/systemd/network/80-guest-dhcp.network" <<'NET'
[Match]
Name=en* eth*
[Network]
DHCP=yes
NET
cat > "$root/etc/ssh/sshd_config.d/hsd-guest.conf" <<'SSHD'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
SSHD
rm -f "$root"/etc/ssh/ssh_host_*
sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' "$root/etc/locale.gen"
chroot "$root" locale-gen >&2
# NoCloud only: no probing of cloud metadata services that do not exist here. ed25519 host keys
# only: cloud-init's default RSA key takes ~30 s under TCG.
cat > "$root/etc/cloud/cloud.cfg.d/90-hsd-guest.cfg" <<'CLOUD'
datasource_list: [NoCloud]
ssh_genkeytypes: [ed25519]
CLOUD
cat > "$root/usr/local/sbin/hsd-guest-key" <<'KEY'
#!/bin/sh
# hsd.ssh_key=<base64 public key> on the kernel cmdline -> root's authorized_keys.
set -e
# ed25519 only: ssh-keygen -A's RSA key takes ~30 s under TCG.
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
install -d -m 0700 /root/.ssh
for w in $(cat /proc/cmdline); do
  case "$w" in hsd.ssh_key=*) echo "${w#hsd.ssh_key=}" | base64 -d > /root/.ssh/authorized_keys ;; esac
done
[ ! -f /root/.ssh/authorized_keys ] || chmod 0600 /root/.ssh/authorized_keys
KEY
chmod 0755 "$root/usr/local/sbin/hsd-guest-key"
cat > "$root/etc/systemd/system/hsd-guest-key.service" <<'UNIT'
[Unit]
Description=root's authorized_keys from the kernel cmdline (hsd.ssh_key=), host keys
Before=ssh.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hsd-guest-key
[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable systemd-networkd.service hsd-guest-key.service >&2
# No getty on the serial console or tty1 to wait for; nothing needs time sync.
chroot "$root" systemctl mask getty@tty1.service serial-getty@ttyS0.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service e2scrub_all.timer fstrim.timer man-db.timer >&2 || true
# Offline apt: one empty, trusted flat repository (no mirror is reachable from a test guest).
mkdir -p "$root/var/lib/hsd-guest-repo"
: > "$root/var/lib/hsd-guest-repo/Packages"
echo 'deb [trusted=yes] file:/var/lib/hsd-guest-repo ./' > "$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*
# Early, before networkd, cloud-init's network stage and sshd: the setup may reshape the network
# (a PVE node's bridge) and must be done before anyone logs in. After cloud-init-local (it
# writes the seed's network config, which the setup's files override).
cat > "$root/etc/systemd/system/hsd-pvenode.service" <<'UNIT'
[Unit]
Description=the PVE simulator's node set-up (disk labelled hsdpvenode)
ConditionKernelCommandLine=hsd.pvenode
DefaultDependencies=no
After=systemd-udevd.service local-fs.target cloud-init-local.service
Before=systemd-networkd.service cloud-init.service ssh.service shutdown.target
Conflicts=shutdown.target
[Service]
Type=oneshot
RemainAfterExit=yes
# Waits for the disk itself (a Requires= on its device unit would hold networkd back on every boot without it).
ExecStart=/bin/sh -c 'udevadm wait --timeout=90 /dev/disk/by-label/hsdpvenode && mkdir -p /run/hsd-pvenode && mount -o ro LABEL=hsdpvenode /run/hsd-pvenode && exec /run/hsd-pvenode/setup'
[Install]
WantedBy=sysinit.target
UNIT
chroot "$root" systemctl enable hsd-pvenode.service >&2
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

mkdir -p "$work/img"
cp -L "$root/vmlinuz" "$work/img/vmlinuz"
cp -L "$root/initrd.img" "$work/img/initrd.img"
used_mb=$(du -sm "$root" | cut -f1)
size_mb=$(( used_mb + 1024 ))
mkfs.ext4 -q -F -L hsd-guest -d "$root" "$work/img/rootfs.img" "${size_mb}M" >&2
{
  echo "suite=$SUITE"
  echo "packages=$packages"
  echo "hash=$hash"
  echo "build_seconds=$(( $(date +%s) - start ))"
  echo "rootfs_used_mb=$used_mb"
} > "$work/img/manifest"
mv "$work/img" "$out"
echo "$out"
