"""The .deb and the .rpm, as an operator gets them.

`make deb` and `make rpm` build the packages of this tree; lintian checks the
.deb; the .deb is installed on this machine with dpkg, the agent is started as
the unit's ExecStart runs it (user, groups, capabilities and umask from the
installed unit, MemoryDenyWriteExecute where the kernel can enforce it by
prctl) and ingests and answers; a rebuilt package with a higher version
upgrades it and config, key and spool survive; remove and purge clean up. The
.rpm must ship the same files with the same metadata.

Needs root, dpkg, lintian, rpm, Debian's python3 with venv and headers, and
pip's index; takes a minute or so (the tree is staged once, the three packages are built from it in parallel).
"""

from __future__ import annotations

import ctypes
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.agentproc import wait_for
from tests.conftest import REPO, need

UNIT = Path("/lib/systemd/system/hostlog.service")
CONFIG = Path("/etc/hostlog/agent.toml")
STATE = Path("/var/lib/hostlog")
RUNTIME = Path("/run/hostlog")
WANTS = Path("/etc/systemd/system/multi-user.target.wants/hostlog.service")
RPM_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686", "ppc64el": "ppc64le", "s390x": "s390x"}
# The unit's path in the .rpm: RPM distributions merged /usr, a package must not
# own a path through the /lib symlink. Debian bookworm still ships units in /lib.
DEB_TO_RPM_PATH = {"/lib/systemd/system/hostlog.service": "/usr/lib/systemd/system/hostlog.service"}
DEB_ONLY = {"/usr/share/lintian/overrides/hostlog"}
VERSION = re.search(r'^__version__ = "(.+)"$', (REPO / "src/hostlog/__init__.py").read_text(), re.M)[1]

pytestmark = pytest.mark.root


def run(*cmd: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check:
        assert res.returncode == 0, f"{shlex.join(cmd)} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def requirements() -> None:
    need(os.geteuid() == 0, "root (dpkg -i, a system user, port 514)")
    for tool, package in (("dpkg-deb", "dpkg"), ("dpkg-shlibdeps", "dpkg-dev"), ("lintian", "lintian"),
                          ("rpmbuild", "rpm"), ("make", "make"), ("gcc", "gcc"), ("pkg-config", "pkg-config"),
                          ("setpriv", "util-linux"), ("runuser", "util-linux"), ("logger", "bsdutils"),
                          ("systemd-analyze", "systemd"), ("readelf", "binutils")):
        need(shutil.which(tool) is not None, f"{tool} (apt package {package})")
    need(Path("/usr/bin/python3").exists(), "Debian's /usr/bin/python3 (apt package python3)")
    venv_ok = subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True).returncode == 0
    need(venv_ok, "python3-venv")
    need(subprocess.run(["pkg-config", "--exists", "libsystemd"]).returncode == 0, "libsystemd-dev")


def package_version(suffix: str = "") -> str:
    """The package version the build scripts derive from VERSION (1.0rc1 -> 1.0~rc1)."""
    script = '. packaging/common/metadata.sh && VERSION_SUFFIX="$2" pkg_version "$1"'
    return run("bash", "-c", script, "_", VERSION, suffix, cwd=REPO).stdout.strip()


def build(target: str, suffix: str = "", stage: Path | None = None) -> Path:
    env = dict(os.environ, VERSION_SUFFIX=suffix)
    if stage is not None:
        env["HOSTLOG_STAGE"] = str(stage)
    res = run("make", "--no-print-directory", target, cwd=REPO, env=env, timeout=900)
    out = REPO / res.stdout.strip().splitlines()[-1]
    assert out.is_file(), res.stdout
    return out


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    """v1 .deb, v2 .deb (VERSION_SUFFIX=+1), v1 .rpm: the file tree staged once
    by packaging/common/stage.sh (its virtualenv is the slow part), the three
    packages built from that tree in parallel by `make deb` / `make rpm`."""
    requirements()
    stage = tmp_path_factory.mktemp("stage") / "tree"
    run("packaging/common/stage.sh", str(stage), cwd=REPO, timeout=900)
    with ThreadPoolExecutor(3) as pool:
        jobs = {"deb": pool.submit(build, "deb", "", stage), "deb2": pool.submit(build, "deb", "+1", stage),
                "rpm": pool.submit(build, "rpm", "", stage)}
        return {name: job.result() for name, job in jobs.items()}


# -- reading packages ------------------------------------------------------------------


def deb_field(deb: Path, field: str) -> str:
    return run("dpkg-deb", "-f", str(deb), field).stdout.strip()


def deb_entries(deb: Path) -> dict[str, tuple[str, int, str]]:
    """path -> (mode string, size, symlink target) for every entry of the data archive."""
    out = {}
    for line in run("dpkg-deb", "-c", str(deb)).stdout.splitlines():
        mode, _owner, size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        path = "/" + path.lstrip("./").rstrip("/") if path != "./" else "/"
        out[DEB_TO_RPM_PATH.get(path, path)] = (mode, int(size), target)
    return out


def rpm_entries(rpm: Path) -> dict[str, tuple[str, int, str]]:
    fmt = "[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILESIZES}\t%{FILELINKTOS}\n]"
    out = {}
    for line in run("rpm", "-qp", "--qf", fmt, str(rpm)).stdout.splitlines():
        path, mode, size, target = line.split("\t")
        out[path] = (mode, int(size), target)
    return out


def rpm_info(rpm: Path) -> dict[str, str]:
    """`rpm -qpi` as fields; Description is the rest of the output."""
    text = run("rpm", "-qpi", str(rpm)).stdout
    head, _, description = text.partition("Description :\n")
    info = {}
    for line in head.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    info["Description"] = description
    return info


def words(text: str) -> list[str]:
    return [w for w in text.split() if w != "."]


# -- the agent, as the unit starts it -------------------------------------------------------


def unit_settings() -> dict[str, str]:
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings[key] = value if key not in settings else settings[key] + " " + value
    return settings


def mdwe_supported() -> bool:
    """PR_SET_MDWE (Linux 6.3): the prctl form of MemoryDenyWriteExecute=."""
    probe = "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run(["/usr/bin/python3", "-c", probe]).returncode == 0


def _deny_write_execute() -> None:  # runs in the child, before exec
    if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
        os._exit(121)


class UnitLikeAgent:
    """The agent started the way systemd starts hostlog.service: ExecStart,
    User=, Group=, SupplementaryGroups=, AmbientCapabilities=,
    CapabilityBoundingSet=, NoNewPrivileges=, UMask=, StateDirectory= and
    RuntimeDirectory= taken from the installed unit, NOTIFY_SOCKET for
    Type=notify, and MemoryDenyWriteExecute= by prctl when the kernel has it
    (Linux 6.3+; on older kernels the ELF check above is what remains)."""

    def __init__(self, tmp: Path, mdwe: bool) -> None:
        self.tmp = tmp
        self.mdwe = mdwe
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.notify: socket.socket | None = None

    def start(self) -> None:
        unit = unit_settings()
        user, group = unit["User"], unit["Group"]
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
        for directory, mode in ((STATE, 0o750), (RUNTIME, 0o755)):
            directory.mkdir(exist_ok=True)
            os.chown(directory, uid, gid)
            os.chmod(directory, mode)
        groups = [g for g in unit["SupplementaryGroups"].split() if _group_exists(g)]
        caps = ",".join("+" + c.lower().removeprefix("cap_") for c in unit["AmbientCapabilities"].split())
        bounding = ",".join("+" + c.lower().removeprefix("cap_") for c in unit["CapabilityBoundingSet"].split())
        setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}",
                   f"--groups={','.join(groups)}" if groups else "--clear-groups",
                   f"--inh-caps=-all,{caps}", f"--ambient-caps={caps}", f"--bounding-set=-all,{bounding}"]
        if unit.get("NoNewPrivileges") == "yes":
            setpriv.append("--no-new-privs")
        # An abstract socket, as systemd may use: no directory the service
        # user would need to reach.
        notify_name = f"hostlog-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind("\0" + notify_name)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "NOTIFY_SOCKET": "@" + notify_name}
        exec_start = shlex.split(unit["ExecStart"])
        self.proc = subprocess.Popen([*setpriv, "--", *exec_start], env=env, cwd="/",
                                     umask=int(unit["UMask"], 8), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),
                                     preexec_fn=_deny_write_execute if self.mdwe else None)
        self.notify.settimeout(60)
        try:
            ready = self.notify.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no READY=1 in 60 s:\n{self.log_text()}") from None
        assert "READY=1" in ready.splitlines(), ready

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            if self.notify is not None:
                self.notify.close()
                self.notify = None


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def port_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def query(*args: str) -> list[dict]:
    """`hostlog query` as the service user reads the service's spool."""
    res = run("runuser", "-u", "hostlog", "--", "/usr/bin/hostlog", "query", "-c", str(CONFIG),
              "-o", "json", "--no-pager", *args)
    return [json.loads(line) for line in res.stdout.splitlines() if line]


def spool_files() -> dict[str, bytes]:
    return {str(p.relative_to(STATE)): p.read_bytes()
            for p in sorted((STATE / "spool" / "segments").glob("*.seg"))}


# -- the tests ---------------------------------------------------------------------------------


def test_lintian_finds_no_errors_or_warnings(packages):
    res = run("lintian", "--fail-on", "error,warning", "--no-tag-display-limit", str(packages["deb"]),
              check=False, timeout=300)
    tags = [line for line in res.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert res.returncode == 0 and not tags, res.stdout + res.stderr


def test_the_rpm_ships_the_debs_files_and_metadata(packages):
    deb, rpm = packages["deb"], packages["rpm"]
    d_entries, r_entries = deb_entries(deb), rpm_entries(rpm)

    def non_dirs(entries):
        return {p: e for p, e in entries.items() if not e[0].startswith("d") and p not in DEB_ONLY}

    d_files, r_files = non_dirs(d_entries), non_dirs(r_entries)
    assert sorted(d_files) == sorted(r_files)
    assert len(d_files) > 100 and "/usr/bin/hostlog" in d_files and "/opt/hostlog/bin/hostlog" in d_files
    for path, (mode, size, target) in d_files.items():
        r_mode, r_size, r_target = r_files[path]
        assert (mode, target) == (r_mode, r_target), path
        # marshal output is not byte-stable across builds; rpm counts a symlink's target
        if not path.endswith(".pyc") and not mode.startswith("l"):
            assert size == r_size, path
    # The rpm owns only its own directories, and all of them are in the .deb too.
    r_dirs = {p for p, e in r_entries.items() if e[0].startswith("d")}
    assert r_dirs <= {p for p, e in d_entries.items() if e[0].startswith("d")}
    assert {"/opt/hostlog", "/etc/hostlog", "/usr/share/doc/hostlog"} <= r_dirs
    assert not r_dirs & {"/usr", "/usr/bin", "/etc", "/opt", "/usr/lib/systemd/system"}

    info = rpm_info(rpm)
    assert info["Name"] == deb_field(deb, "Package") == "hostlog"
    assert info["Version"] == deb_field(deb, "Version") == package_version()
    assert info["Architecture"] == RPM_ARCH[deb_field(deb, "Architecture")]
    assert info["Packager"] == deb_field(deb, "Maintainer")
    description = deb_field(deb, "Description")
    summary, _, body = description.partition("\n")
    assert info["Summary"] == summary
    assert words(info["Description"]) == words(body)
    assert info["License"] == "Apache-2.0"
    # One conffile, preserved on upgrade by both.
    assert run("dpkg-deb", "-I", str(deb), "conffiles").stdout.split() == ["/etc/hostlog/agent.toml"]
    assert run("rpm", "-qp", "--configfiles", str(rpm)).stdout.split() == ["/etc/hostlog/agent.toml"]
    # Both need the interpreter the venv links to and libsystemd.
    depends = deb_field(deb, "Depends")
    requires = run("rpm", "-qp", "--requires", str(rpm)).stdout.split("\n")
    pyver = d_files["/opt/hostlog/bin/python3"][2].removeprefix("/usr/bin/python")
    assert re.search(rf"\bpython{re.escape(pyver)}\b", depends), depends
    assert f"/usr/bin/python{pyver}" in requires
    assert "libsystemd0" in depends and any(r.startswith("libsystemd.so.0") for r in requires)
    scripts = run("rpm", "-qp", "--scripts", str(rpm)).stdout
    assert "systemd-sysusers hostlog.conf" in scripts and "disable --now hostlog.service" in scripts


def test_install_run_upgrade_remove_purge(packages, tmp_path):
    deb, deb2 = packages["deb"], packages["deb2"]
    need(package_status() in ("", "unknown ok not-installed"), "a machine without the hostlog package installed")
    need(port_free(514), "127.0.0.1:514 free (the packaged config listens there)")
    mdwe = mdwe_supported()
    agent = UnitLikeAgent(tmp_path, mdwe)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        # -- install --------------------------------------------------------------------------
        run("dpkg", "-i", str(deb), env=env, timeout=300)
        assert run("dpkg-query", "-W", "-f", "${Status} ${Version}", "hostlog").stdout == \
            f"install ok installed {package_version()}"
        assert run("/usr/bin/hostlog", "--version").stdout.strip() == f"hostlog {VERSION}"
        user = pwd.getpwnam("hostlog")
        assert grp.getgrgid(user.pw_gid).gr_name == "hostlog"
        assert user.pw_shell.endswith("nologin") and user.pw_dir == str(STATE)
        assert STATE.stat().st_uid == user.pw_uid and STATE.stat().st_mode & 0o777 == 0o750
        assert WANTS.is_symlink() and os.readlink(WANTS) == str(UNIT), "enabled as deb-systemd-helper does"
        run("systemd-analyze", "verify", "--man=no", str(UNIT))
        assert "OK" in run("/usr/bin/hostlog", "config", "check", str(CONFIG)).stdout
        # The venv runs Debian's interpreter and mentions no build machine path.
        interp = os.readlink("/opt/hostlog/bin/python3")
        assert re.fullmatch(r"/usr/bin/python3\.\d+", interp), interp
        assert Path("/opt/hostlog/bin/hostlog").read_text().startswith("#!/opt/hostlog/bin/python3.")
        leaks = run("grep", "-rlsE", f"{re.escape(str(REPO))}|/\\.pyenv/|/hostlog-(deb|rpm)\\.", "/opt/hostlog",
                    check=False).stdout
        assert not leaks, leaks
        # MemoryDenyWriteExecute=yes: no object needs an executable stack or text relocations.
        for so in Path("/opt/hostlog").rglob("*.so*"):
            headers = run("readelf", "-lWd", str(so)).stdout
            assert not re.search(r"GNU_STACK.*RWE", headers) and "TEXTREL" not in headers, so

        # -- run as the unit does; ingest; query --------------------------------------------
        agent.start()
        run("logger", "--tcp", "--server", "127.0.0.1", "--port", "514", "-t", "pkgtest", "over tcp 514")
        run("logger", "--udp", "--server", "127.0.0.1", "--port", "514", "-t", "pkgtest", "over udp 514")
        run("logger", "--socket", str(RUNTIME / "dev-log"), "-t", "pkgtest", "over dev-log")
        rows = wait_for(lambda: (r := query("-t", "pkgtest")) and len(r) >= 3 and r, what="3 records")
        assert {r["MESSAGE"] for r in rows} == {"over tcp 514", "over udp 514", "over dev-log"}
        key = STATE / "spool.key"
        assert key.stat().st_uid == user.pw_uid and key.stat().st_mode & 0o777 == 0o600
        assert agent.stop() == 0, agent.log_text()
        assert "stopped: spool closed" in agent.log_text()

        # -- upgrade: config, key and spool survive -------------------------------------
        config = CONFIG.read_text().replace('#fsync_interval = "50ms"', 'fsync_interval = "20ms"')
        config += "\n# changed by the admin before the upgrade\n"
        CONFIG.write_text(config)
        key_before, spool_before = key.read_bytes(), spool_files()
        assert spool_before
        run("dpkg", "-i", str(deb2), env=env, timeout=300)
        assert run("dpkg-query", "-W", "-f", "${Version}", "hostlog").stdout == package_version("+1")
        assert CONFIG.read_text() == config
        assert not Path(f"{CONFIG}.dpkg-new").exists() and not Path(f"{CONFIG}.dpkg-dist").exists()
        assert key.read_bytes() == key_before
        assert spool_files() == spool_before
        assert pwd.getpwnam("hostlog").pw_uid == user.pw_uid
        agent.start()
        run("logger", "--tcp", "--server", "127.0.0.1", "--port", "514", "-t", "pkgtest", "after the upgrade")
        rows = wait_for(lambda: (r := query("-t", "pkgtest")) and len(r) >= 4 and r, what="4 records")
        assert [r["MESSAGE"] for r in rows][-1] == "after the upgrade"
        assert agent.stop() == 0, agent.log_text()

        # -- remove keeps state and config; purge deletes them ---------------------------
        run("dpkg", "-r", "hostlog", env=env, timeout=300)
        assert not Path("/opt/hostlog").exists() and not Path("/usr/bin/hostlog").exists()
        assert not UNIT.exists()
        assert CONFIG.read_text() == config and key.read_bytes() == key_before
        run("dpkg", "--purge", "hostlog", env=env, timeout=300)
        assert not STATE.exists() and not Path("/etc/hostlog").exists()
        assert not WANTS.is_symlink(), "the enable symlink outlived the purge"
        assert not Path("/etc/systemd/system/hostlog.service").is_symlink(), "the mask outlived the purge"
        assert package_status() in ("", "unknown ok not-installed")
    finally:
        agent.stop()
        if package_status() not in ("", "unknown ok not-installed"):
            run("dpkg", "--purge", "hostlog", env=env, check=False, timeout=300)
        shutil.rmtree(RUNTIME, ignore_errors=True)


def package_status() -> str:
    return run("dpkg-query", "-W", "-f", "${Status}", "hostlog", check=False).stdout.strip()
