#!/usr/bin/env bash
# Build dist/hostlog_<version>_<arch>.deb from the current tree.
#
#   packaging/deb/build.sh [OUTDIR]          (default OUTDIR: dist)
#
# The file tree comes from packaging/common/stage.sh (a private virtualenv in
# /opt/hostlog built with Debian's python3, the unit, the config, the sysusers
# and tmpfiles snippets); this script adds the control files and runs
# dpkg-deb. Needs: python3 python3-venv python3-dev gcc libsystemd-dev
# pkg-config dpkg-dev (dpkg-shlibdeps), and network access to PyPI (or pip's
# configured index). VERSION_SUFFIX=+1 builds a package that upgrades this one.
set -euo pipefail
umask 022

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$repo/dist}"
. "$repo/packaging/common/metadata.sh"

command -v dpkg-deb >/dev/null || { echo "deb/build.sh: dpkg-deb is missing" >&2; exit 1; }
command -v dpkg-shlibdeps >/dev/null || { echo "deb/build.sh: dpkg-shlibdeps is missing: apt-get install dpkg-dev" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/hostlog-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
"$repo/packaging/common/stage.sh" "$root"
. "$root.env"

debver="$(pkg_version "$VERSION")"
dpkg --validate-version "$debver" || { echo "deb/build.sh: bad version $debver" >&2; exit 1; }
debarch="$(dpkg --print-architecture)"

# Library dependencies of the compiled extensions, as dh_shlibdeps computes them.
mkdir -p "$work/shlibs/debian"
printf 'Source: hostlog\n\nPackage: hostlog\nArchitecture: any\n' > "$work/shlibs/debian/control"
mapfile -t elves < <(find "$root" -type f -name '*.so*' | sort)
shlibs="$(cd "$work/shlibs" && dpkg-shlibdeps -O "${elves[@]/#/-e}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
[ -n "$shlibs" ] || { echo "deb/build.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

# The venv's interpreter is /usr/bin/python$PYVER (Debian's python3 of the
# build); kill (ExecReload) is in procps; the user is made by systemd-sysusers,
# or adduser where systemd-sysusers is not there.
depends="python$PYVER, $shlibs, procps, adduser"

install -d -m 0755 "$root/DEBIAN"
{
  echo "Package: $PKG_NAME"
  echo "Version: $debver"
  echo "Architecture: $debarch"
  echo "Maintainer: $PKG_MAINTAINER"
  echo "Installed-Size: $(du -sk --apparent-size "$root" | cut -f1)"
  echo "Depends: $depends"
  echo "Section: admin"
  echo "Priority: optional"
  echo "Description: $PKG_SUMMARY"
  first=1
  while IFS= read -r para; do
    [ $first = 1 ] || echo " ."
    first=0
    printf '%s\n' "$para" | fold -s -w 72 | sed 's/ *$//; s/^/ /'
  done <<< "$PKG_DESCRIPTION"
} > "$root/DEBIAN/control"
echo /etc/hostlog/agent.toml > "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
  | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

# Lintian overrides: what a self-contained virtualenv in /opt necessarily is.
install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/$PKG_NAME"
(cd "$root" && md5sum "usr/share/lintian/overrides/$PKG_NAME") >> "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/${PKG_NAME}_${debver}_${debarch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
