#!/usr/bin/env bash
# The Debian packages the tests and benchmarks drive for real.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  cpio libarchive-tools zstd xz-utils lz4 gzip \
  debian-archive-keyring e2fsprogs kmod fdisk util-linux apt-utils \
  qemu-system-x86 \
  squashfs-tools erofs-utils cryptsetup-bin systemd-container openssl \
  rpm dnf createrepo-c gnupg busybox-static \
  dracut-core \
  ovmf mtools dosfstools sbsigntool binutils \
  mmdebstrap lintian \
  linux-image-amd64
# The storage bench boots Debian's own initramfs-tools image on LVM/RAID disks: its hooks
# include lvm and mdadm only when they are installed (scripts/bench/storage.bench.mjs).
apt-get install -y --no-install-recommends initramfs-tools lvm2 mdadm
# Network roots (test/netroot-boot.test.ts): userspace servers the tests start on
# 127.0.0.1 only, reached by QEMU user-mode guests as 10.0.2.2; the tests run their own
# instances. nfs-ganesha: a userspace NFS server (the host kernel's nfsd is not relied on);
# the test runs it in the foreground with its own configuration (NFSv4 on 127.0.0.1, a
# free port). Their packaged services would listen on every address, so they must not
# start on a host with an init: policy-rc.d (invoke-rc.d's and deb-systemd-invoke's hook,
# exit 101 = "action forbidden") refuses them during this install, unless the host already
# has one (container images do), which is then left as it was.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get install -y --no-install-recommends nbd-server tgt nfs-ganesha nfs-ganesha-vfs
