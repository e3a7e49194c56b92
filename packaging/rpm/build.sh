#!/usr/bin/env bash
# Build dist/hostlog-<version>-<release>.<arch>.rpm from the current tree.
#
#   packaging/rpm/build.sh [OUTDIR]          (default OUTDIR: dist)
#
# The file tree comes from packaging/common/stage.sh, the same as the .deb's;
# packaging/rpm/hostlog.spec (a template) packages it with rpmbuild -bb
# (Debian's `rpm` package provides rpmbuild). Needs what stage.sh needs plus
# rpm. VERSION_SUFFIX=+1 builds a package that upgrades this one; RELEASE
# sets the RPM release (default 1).
set -euo pipefail
umask 022

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$repo/dist}"
. "$repo/packaging/common/metadata.sh"

command -v rpmbuild >/dev/null || { echo "rpm/build.sh: rpmbuild is missing: apt-get install rpm" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/hostlog-rpm.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
"$repo/packaging/common/stage.sh" "$root"
. "$root.env"

rpmver="$(pkg_version "$VERSION")"
release="${RELEASE:-1}"
description="$(printf '%s\n' "$PKG_DESCRIPTION" | sed '1!s/^/\n/' | fold -s -w 76 | sed 's/ *$//')"

spec="$(cat "$here/hostlog.spec")"
spec="${spec//@VERSION@/$rpmver}"
spec="${spec//@RELEASE@/$release}"
spec="${spec//@SUMMARY@/$PKG_SUMMARY}"
spec="${spec//@LICENSE@/$PKG_LICENSE}"
spec="${spec//@MAINTAINER@/$PKG_MAINTAINER}"
spec="${spec//@ARCH@/$ARCH}"
spec="${spec//@PYVER@/$PYVER}"
spec="${spec//@DESCRIPTION@/$description}"
spec="${spec//@STAGE@/$root}"
if grep -q '@[A-Z]*@' <<< "$spec"; then
  echo "rpm/build.sh: unfilled fields in the spec: $(grep -o '@[A-Z]*@' <<< "$spec" | sort -u | tr '\n' ' ')" >&2
  exit 1
fi
mkdir -p "$work/top/SPECS"
printf '%s\n' "$spec" > "$work/top/SPECS/hostlog.spec"

rpmbuild --quiet -bb \
  --define "_topdir $work/top" \
  --define "_tmppath $work/tmp" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  "$work/top/SPECS/hostlog.spec" >&2

mkdir -p "$out"
rpm="$(find "$work/top/RPMS" -name '*.rpm' | head -n 1)"
[ -n "$rpm" ] || { echo "rpm/build.sh: rpmbuild made no package" >&2; exit 1; }
cp "$rpm" "$out/"
echo "$out/$(basename "$rpm")"
