"""Syslog over UDP at fixed rates: hostlog (into its spool) beside rsyslog (imudp -> omfile).

    .venv/bin/python bench/syslog_udp.py [--rates 50000,100000,150000,300000]
        [--seconds 4] [--runs 3] [--cache DIR] [--rsyslog-rcvbuf 4m]

The load generator is syslog-ng's loggen (RFC 5424 datagrams of 160 B,
`loggen --inet --dgram --syslog-proto --no-framing --size 160 --rate R
--interval S`, one sender, loopback). syslog-ng-core conflicts with rsyslog
on Debian, so the script fetches it with `apt-get download syslog-ng-core
libivykis0 libnet1`, unpacks the three with `dpkg -x` into a folder outside
the repository (`--cache`, default `$XDG_CACHE_HOME/hostlog-bench` or
`~/.cache/hostlog-bench`) and runs loggen from there (`SYSLOGNG_PREFIX`,
`LD_LIBRARY_PATH`). The sent count is loggen's own ("count=N").

Both receivers run with their defaults (hostlog: the built-in UDP receive
buffer request; rsyslog: imudp without rcvbufSize, or with
`--rsyslog-rcvbuf` for a run with equal buffers); each measurement gets a
fresh receiver process. Nothing is polled while loggen sends; afterwards the
stored count is polled every 0.25 s until it has not moved for 1 s:
hostlog's `hostlog_records_in{source="syslog"}` on its metrics endpoint (a
counter, no spool query), rsyslog's lines in its output file (read only
where it grew). The kernel's drop counter for the receiver's socket is read
from /proc/net/udp before the receiver stops (an account independent of
the receiver), and hostlog's own count of drops from
`hostlog_records_dropped{collector="syslog"}`.

Within a run the receivers alternate at every rate (hostlog, rsyslog, ...),
so load that comes and goes on a shared machine hits both alike. Prints, per
rate, the median over the runs of the share stored, and for hostlog whether
stored + counted drops == sent.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import LineCounter, free_port, need_rsyslogd, start_rsyslogd, stop  # noqa: E402

LOGGEN_PACKAGES = ("syslog-ng-core", "libivykis0", "libnet1")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hostlog-bench"


def ensure_loggen(cache: Path) -> tuple[Path, dict[str, str]]:
    """loggen unpacked under cache (fetched once): its path and environment."""
    root = cache / "loggen"
    loggen = root / "usr" / "bin" / "loggen"
    if not loggen.exists():
        if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
            sys.exit("loggen is fetched with apt-get download and dpkg -x: neither is here")
        debs = cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", *LOGGEN_PACKAGES], cwd=debs, check=True)
        root.mkdir(parents=True, exist_ok=True)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    usr = root / "usr"
    libs = [str(p) for p in (usr / "lib" / f"{platform.machine()}-linux-gnu", usr / "lib",
                             usr / "lib" / "syslog-ng") if p.is_dir()]
    env = dict(os.environ, SYSLOGNG_PREFIX=str(usr),
               LD_LIBRARY_PATH=":".join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]))
    return loggen, env


def loggen_version(cache: Path) -> str:
    """loggen's package, from the name of the .deb it came from."""
    debs = sorted((cache / "debs").glob("syslog-ng-core_*.deb"))
    return "loggen of " + (debs[-1].name.split("_")[1] if debs else "?")


def send(loggen: Path, env: dict[str, str], port: int, rate: int, seconds: int,
         size: int) -> int:
    """Run loggen to 127.0.0.1:port; the number of datagrams it sent."""
    out = subprocess.run([str(loggen), "--inet", "--dgram", "--syslog-proto", "--no-framing",
                          "--size", str(size), "--rate", str(rate), "--interval", str(seconds),
                          "127.0.0.1", str(port)], env=env, capture_output=True, text=True,
                         timeout=seconds + 60, check=False)
    # the last line is the total: "average rate = ..., count=N, time=..."
    counts = re.findall(r"average rate = .*?count=(\d+)", out.stdout + out.stderr)
    if not counts:
        raise RuntimeError(f"loggen said no count: {out.stdout!r} {out.stderr!r}")
    return int(counts[-1])


def udp_drops(port: int) -> int | None:
    """The kernel's drop counter of the UDP socket bound to 127.0.0.1:port."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1] == want:
                return int(cols[-1])
    return None


def settle(count, quiet: float = 1.0, timeout: float = 120.0) -> int:
    """Poll count() every 0.25 s until it has not changed for `quiet` s."""
    last, since = count(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("receiver exited")
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError("receiver did not come up")


def metric(port: int, name: str, labels: str) -> int:
    """One sample of the agent's metrics endpoint (0 when absent)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", text, re.MULTILINE)
    return int(float(m[1])) if m else 0


class Result:
    def __init__(self, sent: int, stored: int, counted_drops: int | None,
                 kernel_drops: int | None, cpu: float) -> None:
        self.sent, self.stored = sent, stored
        self.counted_drops, self.kernel_drops, self.cpu = counted_drops, kernel_drops, cpu

    @property
    def share(self) -> float:
        return self.stored / self.sent if self.sent else 0.0


def run_hostlog(loggen: Path, env: dict[str, str], rate: int, seconds: int,
                size: int) -> Result:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        port, mport = free_port(socket.SOCK_DGRAM), free_port()
        conf = Path(d) / "agent.toml"
        conf.write_text(f'[agent]\nstate_dir = "{d}/state"\n'
                        f'[control]\nmetrics = "127.0.0.1:{mport}"\nsocket = "{d}/control.sock"\n'
                        f'[[source]]\ntype = "syslog"\nname = "syslog"\n'
                        f'listen = ["udp://127.0.0.1:{port}"]\n')
        agent_log = open(Path(d) / "agent.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "hostlog.cli.main", "agent", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=agent_log)
        try:
            wait_for(lambda: udp_drops(port) is not None and metric(
                mport, "hostlog_agent_uptime_seconds", "") >= 0, proc)
            p = psutil.Process(proc.pid)
            cpu0 = sum(p.cpu_times()[:2])
            sent = send(loggen, env, port, rate, seconds, size)
            stored = settle(lambda: metric(mport, "hostlog_records_in_total", 'source="syslog"'))
            cpu = sum(p.cpu_times()[:2]) - cpu0
            kernel = udp_drops(port)
            # the agent reads the drop counter once a second: give it that second
            time.sleep(1.2)
            counted = metric(mport, "hostlog_records_dropped_total", 'collector="syslog"')
            stored = metric(mport, "hostlog_records_in_total", 'source="syslog"')
            if proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {proc.returncode} during the run:\n"
                                   + (Path(d) / "agent.log").read_text()[-3000:])
        finally:
            stop(proc)
            agent_log.close()
    return Result(sent, stored, counted, kernel, cpu)


RSYSLOG_CONF = """
global(workDirectory="{d}")
module(load="imudp")
input(type="imudp" port="{port}" address="127.0.0.1"{rcvbuf})
action(type="omfile" file="{d}/out.log" template="RSYSLOG_FileFormat")
"""


#: imudp's rcvbufSize ("" = rsyslog's default: the kernel's rmem_default)
RSYSLOG_RCVBUF = ""


def run_rsyslog(loggen: Path, env: dict[str, str], rate: int, seconds: int,
                size: int) -> Result:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        port = free_port(socket.SOCK_DGRAM)
        rcvbuf = f' rcvbufSize="{RSYSLOG_RCVBUF}"' if RSYSLOG_RCVBUF else ""
        proc = start_rsyslogd(Path(d), RSYSLOG_CONF.format(d=d, port=port, rcvbuf=rcvbuf))
        try:
            wait_for(lambda: udp_drops(port) is not None, proc)
            p = psutil.Process(proc.pid)
            cpu0 = sum(p.cpu_times()[:2])
            sent = send(loggen, env, port, rate, seconds, size)
            stored = settle(LineCounter(Path(d) / "out.log"))
            cpu = sum(p.cpu_times()[:2]) - cpu0
            kernel = udp_drops(port)
        finally:
            stop(proc)
    return Result(sent, stored, None, kernel, cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="50000,100000,150000,300000",
                    help="messages per second, comma-separated")
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=default_cache(),
                    help="where loggen is unpacked (fetched once)")
    ap.add_argument("--only", choices=("hostlog", "rsyslog"), help="one receiver only")
    ap.add_argument("--rsyslog-rcvbuf", default="",
                    help='imudp rcvbufSize, e.g. "4m" (default: rsyslog\'s own default)')
    args = ap.parse_args()
    global RSYSLOG_RCVBUF
    RSYSLOG_RCVBUF = args.rsyslog_rcvbuf
    rates = [int(r) for r in args.rates.split(",")]
    loggen, env = ensure_loggen(args.cache)
    receivers = [("hostlog", run_hostlog), ("rsyslog", run_rsyslog)]
    if args.only:
        receivers = [r for r in receivers if r[0] == args.only]
    if any(name == "rsyslog" for name, _ in receivers):
        need_rsyslogd()
    rmem = Path("/proc/sys/net/core/rmem_default").read_text().strip()
    rmem_max = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, net.core.rmem_default {rmem}, rmem_max {rmem_max}")
    print(f"load: {loggen_version(args.cache)}, RFC 5424 datagrams of {args.size} B, "
          f"{args.seconds} s per rate, {args.runs} runs; rsyslog imudp rcvbufSize "
          f"{args.rsyslog_rcvbuf or '(default)'}")
    results: dict[tuple[str, int], list[Result]] = {}
    for run in range(args.runs):
        for rate in rates:
            order = receivers if run % 2 == 0 else receivers[::-1]
            for name, fn in order:
                r = fn(loggen, env, rate, args.seconds, args.size)
                results.setdefault((name, rate), []).append(r)
                extra = ""
                if r.counted_drops is not None:
                    extra = (f", counted drops {r.counted_drops:,}, stored + counted "
                             f"{'==' if r.stored + r.counted_drops == r.sent else '!='} sent")
                print(f"  run {run + 1} {name} {rate:,}/s: sent {r.sent:,}, stored {r.stored:,} "
                      f"({r.share:.1%}), kernel drops {r.kernel_drops}{extra}, "
                      f"CPU {r.cpu:.2f} s", flush=True)
    print()
    print("| rate (msg/s) | " + " | ".join(f"{n} stored (median)" for n, _ in receivers)
          + " | hostlog stored + counted drops == sent |")
    print("|---|" + "---|" * len(receivers) + "---|")
    for rate in rates:
        cells = []
        for name, _ in receivers:
            rs = results[(name, rate)]
            cells.append(f"{statistics.median(r.share for r in rs):.1%} ("
                         + ", ".join(f"{r.share:.1%}" for r in rs) + ")")
        hl = results.get(("hostlog", rate), [])
        exact = sum(r.stored + (r.counted_drops or 0) == r.sent for r in hl)
        print(f"| {rate:,} | " + " | ".join(cells) + f" | {exact} of {len(hl)} runs |")


if __name__ == "__main__":
    main()
