# Package metadata shared by the .deb and the .rpm (sourced by their build.sh).
# MAINTAINER can be set in the environment.
PKG_NAME=hostlog
PKG_MAINTAINER="${MAINTAINER:-hostlog maintainers <maintainers@hostlog.invalid>}"
PKG_LICENSE="Apache-2.0"
PKG_SUMMARY="host log agent: collect, spool, forward and query logs"
# One paragraph per line; lines are re-wrapped by each format's conventions.
PKG_DESCRIPTION="hostlog collects the logs of a machine (syslog over UDP, TCP and unix sockets, the systemd journal, tailed files, the output of supervised applications) into one record model, keeps them in a compressed, encrypted, crash-safe spool on local disk, ships them to peer agents or a central node, and reads them back with hostlog query, a journalctl-like reader.
The package runs the agent as the sandboxed systemd service hostlog.service, as the system user hostlog, from a private Python virtualenv in /opt/hostlog."

# The package version from the project's (PEP 440) version: pre-releases sort
# before the release (1.0rc1 -> 1.0~rc1, 1.0.dev2 -> 1.0~dev2), post-releases
# after it (1.0.post1 -> 1.0+post1); VERSION_SUFFIX is appended as it is
# (e.g. VERSION_SUFFIX=+1 for a rebuild that must upgrade the previous one).
pkg_version() {
  printf '%s%s\n' "$(printf '%s' "$1" | sed -E 's/[.]?(dev|a|b|rc)([0-9]*)/~\1\2/; s/[.]post/+post/')" \
    "${VERSION_SUFFIX:-}"
}
