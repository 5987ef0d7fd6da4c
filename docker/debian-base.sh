#!/usr/bin/env bash
# A Docker base image made from Debian packages alone (no image registry needed):
#
#   docker/debian-base.sh NAME PACKAGE[,PACKAGE…]      e.g. docker/debian-base.sh orthoscale-base:bookworm python3,python3-venv
#
# debootstrap (minbase variant) installs Debian bookworm with the given packages into a folder on this host,
# which `docker import` turns into the image NAME. The tag is left alone when the image exists already, so
# a second call costs nothing. Downloaded .deb files are kept in DEBOOTSTRAP_CACHE (default .build/debs)
# for the next base. Needs root, debootstrap and a running Docker engine.
set -euo pipefail
name=${1:?usage: docker/debian-base.sh NAME PACKAGE[,PACKAGE…]}
packages=${2:?usage: docker/debian-base.sh NAME PACKAGE[,PACKAGE…]}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$name" > /dev/null 2>&1; then
  exit 0
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache=$(realpath -m "${DEBOOTSTRAP_CACHE:-.build/debs}")
mkdir -p "$cache" .build
root=$(mktemp -d .build/rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "debian-base: debootstrap $suite with $packages -> $name"
debootstrap --variant=minbase --include="$packages" --cache-dir="$cache" "$suite" "$root" "$mirror" > "$root.log" 2>&1 \
  || { tail -30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Nothing of this host and nothing downloadable at run time: no apt lists, no package cache, no
# clusters or keys made by maintainer scripts (each image makes its own at start).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/* \
       "$root"/var/lib/postgresql/* "$root"/etc/postgresql/* "$root"/etc/ssl/private/ssl-cert-snakeoil.key \
       "$root"/etc/ssl/certs/ssl-cert-snakeoil.pem
: > "$root/etc/hostname"
: > "$root/etc/resolv.conf"
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["bash"]' - "$name" > /dev/null
echo "debian-base: $name ($(docker image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}'))"
