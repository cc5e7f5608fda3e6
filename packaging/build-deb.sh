#!/usr/bin/env bash
# Builds the Debian package from a copy of the tree (packaging/debian becomes
# ./debian there) and checks it with lintian. The .deb lands in OUTDIR
# (default: build-deb/).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/build-deb}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/splicefs-0.1.0" "$out"
tar -C "$top" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$work/splicefs-0.1.0" -xf -
cp -r "$top/packaging/debian" "$work/splicefs-0.1.0/debian"
(cd "$work/splicefs-0.1.0" && dpkg-buildpackage -us -uc -b)
cp "$work"/*.deb "$out"/
lintian --fail-on warning --pedantic "$work"/*.changes
ls "$out"/*.deb
