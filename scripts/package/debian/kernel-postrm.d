#!/bin/sh
# SPDX-License-Identifier: MIT
# Run by a kernel package's postrm (run-parts /etc/kernel/postrm.d KVER IMAGE): remove the
# /boot/initrd.img-KVER mkinitrd-pkg built for it.
set -e

version="$1"
[ -n "$version" ] || exit 0

# Removed but not purged: this conffile stays, the program is gone.
[ -x /usr/lib/mkinitrd-pkg/kernel-hook ] || exit 0

exec /usr/lib/mkinitrd-pkg/kernel-hook remove "$version"
