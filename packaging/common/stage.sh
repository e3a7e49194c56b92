#!/usr/bin/env bash
# Build the file tree that both packages ship, under STAGE (an empty directory):
#
#   STAGE/opt/hostlog/                  private virtualenv: hostlog + its deps
#   STAGE/usr/bin/hostlog            -> /opt/hostlog/bin/hostlog
#   STAGE/lib/systemd/system/hostlog.service
#   STAGE/usr/lib/sysusers.d/hostlog.conf, STAGE/usr/lib/tmpfiles.d/hostlog.conf
#   STAGE/etc/hostlog/agent.toml        (a conffile / %config(noreplace))
#   STAGE/usr/share/doc/hostlog/...     copyright, changelog, operations, install
#   STAGE/usr/share/man/man1/hostlog.1.gz
#
# usage: packaging/common/stage.sh STAGE
#        (progress on stderr; writes STAGE.env beside it: VERSION, PYVER, ARCH)
#
# The virtualenv is created with Debian's interpreter (/usr/bin/python3.X,
# never a pyenv or other private build: its path is baked into the venv) at
# STAGE/opt/hostlog and then made to live at /opt/hostlog, as dh-virtualenv
# does: the scripts' #! lines and pyvenv.cfg are rewritten to the final path,
# bytecode is compiled with the final path recorded in it, and the build fails
# if the staging path is left anywhere in the tree. Nothing is written outside
# STAGE and a temporary directory; the build machine's /opt is not touched, so
# a build works next to an installed hostlog.
#
# Environment: HOSTLOG_STAGE (a tree staged before, copied instead of built),
# PYTHON (default /usr/bin/python3: any Debian python3 whose
# /usr/bin/python3.X exists), PIP_* (pip's own settings, e.g. PIP_INDEX_URL,
# PIP_CONSTRAINT to pin dependency versions), SOURCE_DATE_EPOCH.
set -euo pipefail
umask 022

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
stage="${1:?usage: stage.sh STAGE_DIR}"
mkdir -p "$stage"
stage="$(cd "$stage" && pwd)"
prefix=/opt/hostlog
venv="$stage$prefix"

die() { echo "stage.sh: $*" >&2; exit 1; }
say() { echo "stage.sh: $*" >&2; }

[ -z "$(ls -A "$stage")" ] || die "$stage is not empty"

# HOSTLOG_STAGE=DIR: a tree this script staged before, copied as it is (the
# packaging tests build three packages of one source tree and stage it once).
if [ -n "${HOSTLOG_STAGE:-}" ]; then
  [ -d "$HOSTLOG_STAGE" ] && [ -f "$HOSTLOG_STAGE.env" ] \
    || die "HOSTLOG_STAGE=$HOSTLOG_STAGE is not a tree staged by this script (no $HOSTLOG_STAGE.env)"
  cp -a "$HOSTLOG_STAGE/." "$stage/"
  cp "$HOSTLOG_STAGE.env" "$stage.env"
  say "copied the tree staged in $HOSTLOG_STAGE"
  exit 0
fi

# -- the interpreter: Debian's, by its versioned name ---------------------------
python="${PYTHON:-/usr/bin/python3}"
[ -x "$python" ] || die "$python not found: apt-get install python3 python3-venv python3-dev"
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
interp="/usr/bin/python$pyver"
[ -x "$interp" ] || die "$interp not found (PYTHON=$python is not a system python)"
"$interp" -c 'import ensurepip, venv' 2>/dev/null \
  || die "python$pyver cannot create virtualenvs: apt-get install python3-venv"
"$interp" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || die "Python.h for python$pyver is missing (systemd-python compiles against it): apt-get install python3-dev"
pkg-config --exists libsystemd 2>/dev/null \
  || die "libsystemd development files are missing (systemd-python): apt-get install libsystemd-dev pkg-config"
command -v gcc >/dev/null || die "gcc is missing (systemd-python, the syslog splitter): apt-get install gcc"

version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/src/hostlog/__init__.py")"
[ -n "$version" ] || die "no __version__ in src/hostlog/__init__.py"
arch="$(uname -m)"

work="$(mktemp -d "${TMPDIR:-/tmp}/hostlog-stage.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# -- the source: a copy, so the build leaves nothing in the working tree --------
mkdir -p "$work/src"
cp -a "$repo/pyproject.toml" "$repo/setup.py" "$repo/README.md" "$work/src/"
[ -f "$repo/LICENSE" ] && cp -a "$repo/LICENSE" "$work/src/"
cp -a "$repo/src" "$work/src/src"
find "$work/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

# -- the virtualenv ---------------------------------------------------------------
say "virtualenv with $interp ($("$interp" -V 2>&1))"
"$interp" -m venv "$venv"
# The venv's interpreter is the versioned one: the packages depend on exactly it,
# and a later default python3 of another version cannot break the venv.
ln -sfn "$interp" "$venv/bin/python3"
say "installing hostlog $version and its dependencies"
# What compiles here (systemd-python) gets Debian's hardening flags.
if command -v dpkg-buildflags >/dev/null; then
  eval "$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --export=sh)"
fi
# pip's own wheel cache may hold extensions compiled by another interpreter of
# the same ABI tag (a pyenv build links them with its own RUNPATH): packages
# get a cache of their own, filled only by this script.
export PIP_CACHE_DIR="${HOSTLOG_PIP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hostlog-packaging/pip}"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 \
  "$venv/bin/python" -m pip install --quiet --no-compile --use-pep517 "$work/src[systemd]" 2>&1 \
  | { grep -v "^WARNING: Location '.*' is ignored" || true; } >&2
"$venv/bin/python" -B -c 'import systemd.daemon, systemd.journal, hostlog.cli.main' \
  || die "the installed tree does not import"
# setup.py builds the syslog splitter as optional (a source install without a
# compiler still works); a package must not ship without it.
"$venv/bin/python" -B -c 'import hostlog.collectors.syslog._syslog5424' \
  || die "hostlog.collectors.syslog._syslog5424 was not built (gcc, python3-dev)"

# /etc/hostlog/agent.toml from the installed code's own default.
install -d "$stage/etc/hostlog"
"$venv/bin/python" -B "$here/system_config.py" > "$stage/etc/hostlog/agent.toml"
chmod 0644 "$stage/etc/hostlog/agent.toml"

# -- make it live at /opt/hostlog ---------------------------------------------------
# Build tools are not needed at run time: drop pip and setuptools, the activate
# scripts, and every console script but ours.
"$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools >/dev/null
find "$venv/bin" -mindepth 1 -maxdepth 1 ! -name hostlog ! -name 'python*' -exec rm -f {} +
rm -rf "$venv/include"
find "$venv/lib" -name direct_url.json -path '*.dist-info/*' -delete
find "$venv" -name __pycache__ -prune -exec rm -rf {} +
# (The dist-info RECORD files still list what was deleted; only pip reads them,
# to uninstall, and nobody runs pip inside the package.)

# Strip the compiled extensions as dh_strip would (the wheels ship symbols and
# debug sections: a third of the size, of no use to the agent).
find "$venv" -type f -name '*.so*' -exec strip --strip-unneeded \
  --remove-section=.comment --remove-section=.note {} +

# pyvenv.cfg: Python 3.11 records the creating command (with the staging path).
cat > "$venv/pyvenv.cfg" <<EOF
home = /usr/bin
include-system-site-packages = false
version = $("$interp" -c 'import platform; print(platform.python_version())')
executable = $interp
EOF

# #! lines: the staging path becomes the final one, and the launcher runs the
# interpreter isolated (-I): PYTHONPATH, PYTHONHOME and the user site-packages
# of whoever runs `hostlog` do not reach the agent's code.
for script in "$venv"/bin/*; do
  [ -f "$script" ] && [ ! -L "$script" ] || continue
  if head -c 2 "$script" | grep -q '^#!'; then
    sed -i "1s|^#!.*$|#!$prefix/bin/python$pyver -I|" "$script"
  fi
done

# Files of third-party packages are imported or read, never run: an
# executable bit on one (protobuf's wheel ships its __init__.py and LICENSE
# so) only makes it look like a program. Shared objects keep theirs.
find "$venv"/lib/python*/site-packages -type f -perm /111 ! -name '*.so' ! -name '*.so.*' -exec chmod a-x {} +

# Modules of third-party packages that open with a #! line are imported,
# never run: the line only makes them look like scripts with a foreign
# interpreter. Blank it (keeping line numbers for tracebacks).
find "$venv"/lib/python*/site-packages -name '*.py' ! -perm -u+x -print0 |
  while IFS= read -r -d '' module; do
    if head -c 2 "$module" | grep -q '^#!'; then
      sed -i '1s|^#!.*$||' "$module"
    fi
  done

# Bytecode, compiled for the final path (tracebacks name /opt/hostlog/...), with
# hash-checked invalidation so it stays valid whatever the packager does to
# mtimes. The agent runs as a user that cannot write /opt/hostlog: without
# shipped .pyc every start would compile everything again.
"$interp" -m compileall -q -j 0 --invalidation-mode checked-hash \
  -s "$stage" -p / "$venv/lib" >/dev/null

# -- the system files ------------------------------------------------------------------
install -D -m 0644 "$repo/systemd/hostlog.service" "$stage/lib/systemd/system/hostlog.service"
install -D -m 0644 "$repo/systemd/sysusers.d/hostlog.conf" "$stage/usr/lib/sysusers.d/hostlog.conf"
install -D -m 0644 "$repo/systemd/tmpfiles.d/hostlog.conf" "$stage/usr/lib/tmpfiles.d/hostlog.conf"
install -d "$stage/usr/bin"
ln -s "$prefix/bin/hostlog" "$stage/usr/bin/hostlog"

doc="$stage/usr/share/doc/hostlog"
install -d "$doc" "$stage/usr/share/man/man1"
install -m 0644 "$here/copyright" "$doc/copyright"
for f in operations.md install.md config.md; do
  [ -f "$repo/docs/$f" ] && install -m 0644 "$repo/docs/$f" "$doc/$f"
done
# Debian changelog format (a native package's changelog.gz).
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}"
{
  echo "hostlog ($version) unstable; urgency=medium"
  echo
  echo "  * hostlog $version."
  echo
  echo " -- hostlog maintainers <maintainers@hostlog.invalid>  $(LC_ALL=C date -u -R -d "@$epoch")"
} | gzip -9n > "$doc/changelog.gz"
sed "s/@VERSION@/$version/" "$here/hostlog.1" | gzip -9n > "$stage/usr/share/man/man1/hostlog.1.gz"

# -- checks ------------------------------------------------------------------------------
# The tree must not mention where it was built.
if leaks="$(grep -rlF --devices=skip "$stage" "$stage" 2>/dev/null)"; then
  die "the staging path is still in: $leaks"
fi
# Compiled extensions must not look for libraries in the build machine's paths.
while IFS= read -r -d '' elf; do
  if readelf -dW "$elf" 2>/dev/null | grep -E '\((RPATH|RUNPATH)\)' | grep -vqE '\[(\$ORIGIN[^]:]*)(:\$ORIGIN[^]:]*)*\]'; then
    die "$elf has a library search path outside the package: $(readelf -dW "$elf" | grep -E 'RPATH|RUNPATH')"
  fi
done < <(find "$stage" -type f -name '*.so*' -print0)
# Every (stripped) extension module still loads, and the CLI imports, from the
# final tree (without writing bytecode).
"$venv/bin/python" -B -I -c '
import importlib, importlib.machinery, pathlib, site
root = pathlib.Path(site.getsitepackages()[0])
for so in sorted(root.rglob("*.so")):
    name = str(so.relative_to(root))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if name.endswith(suffix):
            importlib.import_module(name[: -len(suffix)].replace("/", "."))
            break
import hostlog.cli.main, hostlog.agent.agent
' || die "the staged tree does not import"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -perm /111 -exec chmod 0755 {} +
find "$stage" -type f ! -perm /111 -exec chmod 0644 {} +
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
  find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
fi

cat > "$stage.env" <<EOF
VERSION=$version
PYVER=$pyver
ARCH=$arch
EOF
say "staged hostlog $version (python$pyver, $arch) in $stage: $(du -sh "$stage" | cut -f1)"
