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
  mmdebstrap lintian \
  linux-image-amd64
