#!/bin/sh
# SPDX-License-Identifier: MIT
# Run by a kernel package's postinst (run-parts /etc/kernel/postinst.d KVER IMAGE) and
# after a module package is installed: (re)build /boot/initrd.img-KVER with mkinitrd-pkg.
set -e

version="$1"
[ -n "$version" ] || exit 0

# Like initramfs-tools' hook: from a kernel package only at "configure".
if [ -n "${DEB_MAINT_PARAMS:-}" ]; then
    eval set -- "$DEB_MAINT_PARAMS"
    [ "$1" = configure ] || exit 0
fi

# Removed but not purged: this conffile stays, the program is gone.
[ -x /usr/lib/mkinitrd-pkg/kernel-hook ] || exit 0

exec /usr/lib/mkinitrd-pkg/kernel-hook add "$version"
