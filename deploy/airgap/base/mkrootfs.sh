#!/usr/bin/env bash
# Builds a slim Debian bookworm root filesystem in $1 (an empty or missing directory), the
# stand-in for debian:bookworm-slim. Called by ../build.sh, which imports it as an image.
# Needs root (debootstrap creates device nodes and chowns files).
set -euo pipefail

ROOTFS=${1:?usage: mkrootfs.sh ROOTFS_DIR}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# minbase = Essential packages + apt: the same variant Debian's official images start from.
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >/dev/null

install -m 0644 "$here/sources.list" "$ROOTFS/etc/apt/sources.list"
install -m 0644 "$here/dpkg-slim.cfg" "$ROOTFS/etc/dpkg/dpkg.cfg.d/01-airgap-slim"
install -m 0644 "$here/apt.conf" "$ROOTFS/etc/apt/apt.conf.d/01-airgap-docker"
# Packages must not try to start services while an image is built (there is no init).
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"

# Bring the packages up to the current point release + security fixes, as the official image is.
chroot "$ROOTFS" apt-get -q update >/dev/null
DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get -q -y upgrade >/dev/null

# Slim it down. debootstrap installed before the dpkg excludes existed, so remove by hand what
# they would have kept out, plus caches, package lists and logs.
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$ROOTFS"/usr/share/{man,info,groff,lintian,linda}/*
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/cache/debconf/*-old \
  "$ROOTFS"/var/lib/dpkg/*-old "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
find "$ROOTFS/var/log" -type f -delete
mkdir -p "$ROOTFS/var/lib/apt/lists/partial" "$ROOTFS/var/cache/apt/archives/partial"
# Docker provides these at run time; don't bake in the build host's.
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"
