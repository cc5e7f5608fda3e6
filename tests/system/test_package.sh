#!/usr/bin/env bash
# Builds the Debian package, lints it, installs it, mounts and unmounts a
# directory with the installed binary, removes it again; parses the RPM spec.
# Needs root (dpkg -i); labelled "system".
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "SKIP: installing a package needs root"; exit 77; }
out=$(mktemp -d)
tmp=$(mktemp -d)
cleanup() {
    mountpoint -q "$tmp/mnt" && umount "$tmp/mnt"
    dpkg -r splicefs >/dev/null 2>&1 || true
    rm -rf "$out" "$tmp"
}
trap cleanup EXIT

"$top/packaging/build-deb.sh" "$out"
dpkg -i "$out"/splicefs_*.deb
mkdir "$tmp/src" "$tmp/mnt"
echo packaged > "$tmp/src/file"
/usr/bin/splicefs "$tmp/src" "$tmp/mnt"
[ "$(cat "$tmp/mnt/file")" = packaged ]
findmnt -n -o FSTYPE "$tmp/mnt" | grep -qx fuse.splicefs
fusermount3 -u "$tmp/mnt"
! mountpoint -q "$tmp/mnt"
man -w splicefs >/dev/null
dpkg -r splicefs
rpmspec -P "$top/packaging/rpm/splicefs.spec" >/dev/null
echo "package built, lintian clean, installed, mounted, removed; spec parses"
