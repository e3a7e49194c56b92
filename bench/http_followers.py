"""Syslog over TCP at full speed, with and without live-tail followers.

    .venv/bin/python bench/http_followers.py [--messages 2000000] [--runs 5] [--followers 50]
    .venv/bin/python bench/http_followers.py --paced 10000 [--seconds 10] --followers 5 [--runs 3]

One agent per run (syslog over TCP, ``[http]`` on a loopback port, a read
key made with ``hostlog key create``). The load is bench/syslog_tcp.py's: N
RFC 5424 messages (~172 B, LF-framed) built in memory first and written down
one TCP connection in 1 MiB pieces, so the receiver is the bottleneck. The
clock runs from the first byte sent until the spool's frame index holds all
N (read by this process, as syslog_tcp.py does: a counter, not a query, and
nothing asked of the agent).

Runs alternate: no followers, then ``--followers`` WebSocket followers of
everything (``/api/v1/tail``, no filter), connected before the load starts.
The followers are one client process (aiohttp), run at nice 19 on the same
machine: it takes what the agent sends as fast as the machine lets it, and
the agent's CPU comes first. The client keeps, per follower, the position of
every record it got and every ``dropped`` notice, and checks after the run,
against the spool, that

* no record came twice or out of order;
* every position between the first and the last thing it was told of was
  either received or inside a ``dropped`` notice (audit records aside, which
  a follower of everything is not sent), and each exact notice's count is
  the number of records in its range: no gap it was not told of.

After the load, the followers are given up to SETTLE_S to be told of every
position (the client says the lowest position all of them reached). The
agent's RSS is sampled every 50 ms during the run (psutil), and its http
counters (the followers' charged CPU) read with ``hostlog ctl status``.
Prints the medians and a Markdown table; bench/RESULTS.md ("HTTP
followers") records it.

``--paced RATE``: instead, the load at RATE messages a second (10 ms ticks)
for ``--seconds``, to ``--followers`` followers: a load below the agent's
limit, of which every follower should get every record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from syslog_tcp import build_load, free_port, send, spool_records, wait_port, wait_until  # noqa: E402

HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]
SETTLE_S = 60.0  # after ingest: the followers are given up to this long to be told of every record


# -- the client process: N followers -------------------------------------------------------

class Follower:
    def __init__(self) -> None:
        self.seqs = array("q")
        self.notices: list[tuple[int, int, int, bool]] = []  # count, first, last, exact
        self.error: str | None = None

    def told(self) -> int:
        """The newest position this follower was sent or told of."""
        return max([self.seqs[-1] if self.seqs else 0] + [last for _, _, last, _ in self.notices])

    def check(self, audit: set[int]) -> list[str]:
        problems = []
        seqs = self.seqs
        for a, b in zip(seqs, seqs[1:]):
            if b <= a:
                problems.append(f"position {b} after {a}")
                break
        events = [(s, s) for s in seqs] + [(f, la) for _, f, la, _ in self.notices]
        if not events:
            return problems
        lo = min(e[0] for e in events)
        hi = max(e[1] for e in events)
        covered = bytearray(hi - lo + 1)
        for s in seqs:
            covered[s - lo] = 1
        for count, first, last, exact in self.notices:
            covered[first - lo:last - lo + 1] = b"\x01" * (last - first + 1)
            in_range = (last - first + 1) - sum(1 for p in audit if first <= p <= last)
            got = bisect_right(seqs, last) - bisect_left(seqs, first)
            if exact and count != in_range - got:
                problems.append(f"notice {first}..{last} says {count}, the range holds {in_range - got} not sent")
        untold = [lo + i for i, c in enumerate(covered) if not c and lo + i not in audit]
        if untold:
            problems.append(f"{len(untold)} positions neither sent nor told of (first {untold[0]})")
        return problems


async def _follow(session, url: str, key: str, f: Follower, ready: asyncio.Event, count: list[int]) -> None:
    import aiohttp
    try:
        async with session.ws_connect(url, headers={"Authorization": f"Bearer {key}"}, heartbeat=30,
                                      max_msg_size=1 << 24) as ws:
            count[0] += 1
            if count[0] == count[1]:
                ready.set()
            append = f.seqs.append
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = msg.data
                if data.startswith('{"dropped"'):
                    o = json.loads(data)
                    f.notices.append((o["dropped"], int(o["first_cursor"].rpartition(":")[2]),
                                      int(o["last_cursor"].rpartition(":")[2]), o["exact"]))
                    continue
                at = data.find('"cursor":"') + 10
                append(int(data[data.find(":", at):data.find('"', at)][1:]))
    except Exception as exc:  # said in the results: a follower that failed is a failed run
        f.error = repr(exc)
        ready.set()


def client_main(url: str, key: str, n: int) -> None:
    """Connect n followers, say "ready", follow until stdin says stop, then
    read the spool's facts from stdin and print the check as JSON."""
    import aiohttp

    async def main() -> None:
        followers = [Follower() for _ in range(n)]
        ready = asyncio.Event()
        count = [0, n]
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(_follow(session, url, key, f, ready, count)) for f in followers]
            await asyncio.wait_for(ready.wait(), 60)
            print("ready", flush=True)
            loop = asyncio.get_running_loop()
            while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "progress":
                # the lowest position every follower has been told of (a record or a notice)
                print(min(f.told() for f in followers), flush=True)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        facts = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
        audit = set(facts["audit"])
        results = []
        for f in followers:
            results.append({"received": len(f.seqs), "dropped": sum(c for c, *_ in f.notices),
                            "notices": len(f.notices), "error": f.error, "problems": f.check(audit)})
        print(json.dumps(results), flush=True)

    asyncio.run(main())


# -- the runs ---------------------------------------------------------------------------------

def spool_facts(spool: Path) -> dict:
    from hostlog.query.filters import Query
    from hostlog.query.run import iter_selected
    from hostlog.spool.reader import SpoolReader
    reader = SpoolReader.open(spool)
    audit = [seq for seq, _ in iter_selected(reader, Query(sources=["audit"]))]
    return {"audit": audit}


def http_status(socket_path: Path) -> dict:
    """The agent's http counters (followers' CPU, share, ...), from ``hostlog ctl status``."""
    out = subprocess.run([*HOSTLOG, "ctl", "--socket", str(socket_path), "--json", "status"],
                         capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout).get("http") or {} if out.returncode == 0 else {}


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.max = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                self.max = max(self.max, self.proc.memory_info().rss)
            except psutil.Error:
                return


def send_paced(port: int, data: bytes, n: int, rate: int) -> None:
    """The load at ``rate`` messages a second, in 10 ms ticks (LF-framed lines)."""
    lines = data.split(b"\n")[:n]
    per_tick = max(1, rate // 100)
    with socket.create_connection(("127.0.0.1", port)) as s:
        t = time.monotonic()
        for start in range(0, n, per_tick):
            s.sendall(b"".join(line + b"\n" for line in lines[start:start + per_tick]))
            t += 0.01
            time.sleep(max(0.0, t - time.monotonic()))


def run_once(data: bytes, n: int, followers: int, rate: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        port, http_port = free_port(), free_port()
        conf = Path(d) / "agent.toml"
        conf.write_text(f'[agent]\nstate_dir = "{d}/state"\n[[source]]\ntype = "syslog"\n'
                        f'listen = ["tcp://127.0.0.1:{port}"]\n[http]\nlisten = ["127.0.0.1:{http_port}"]\n'
                        f'[control]\nsocket = "{d}/control.sock"\n')
        key = subprocess.run([*HOSTLOG, "key", "create", "bench", "--scope", "read", "-c", str(conf)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        proc = subprocess.Popen([*HOSTLOG, "agent", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=open(Path(d) / "agent.log", "wb"))
        client = None
        sampler = None
        try:
            wait_port(port, proc)
            wait_port(http_port, proc)
            if followers:
                client = subprocess.Popen([sys.executable, __file__, "--client", f"ws://127.0.0.1:{http_port}"
                                           "/api/v1/tail", key, str(followers)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          preexec_fn=lambda: os.nice(19))
                assert client.stdout is not None and client.stdin is not None
                line = client.stdout.readline()
                if line.strip() != "ready":
                    raise RuntimeError(f"the followers did not connect: {line!r}")
            p = psutil.Process(proc.pid)
            sampler = RssSampler(proc.pid)
            sampler.start()
            rss0 = p.memory_info().rss
            cpu0 = sum(p.cpu_times()[:2])
            t0 = time.perf_counter()
            if rate is None:
                send(port, data)
            else:
                send_paced(port, data, n, rate)
            spool = Path(d) / "state" / "spool"
            wait_until(lambda: spool_records(spool) >= n, 600)
            elapsed = time.perf_counter() - t0
            cpu = sum(p.cpu_times()[:2]) - cpu0
            result = {"elapsed": elapsed, "rate": n / elapsed, "cpu": cpu, "rss0": rss0}
            if client is not None:
                result["status"] = http_status(Path(d) / "control.sock")
                assert client.stdin is not None and client.stdout is not None
                deadline = time.monotonic() + SETTLE_S
                while time.monotonic() < deadline:  # every follower told of every record sent
                    client.stdin.write("progress\n")
                    client.stdin.flush()
                    if int(client.stdout.readline()) >= n:
                        break
                    time.sleep(0.2)
                result["settled"] = time.monotonic() < deadline
            sampler.stop.set()
            sampler.join()
            result["rss_max"] = sampler.max
            if client is not None:
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write("stop\n")
                client.stdin.flush()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            if client is not None:
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(json.dumps(spool_facts(spool)) + "\n")
                client.stdin.flush()
                result["followers"] = json.loads(client.stdout.readline())
                client.wait(timeout=60)
            return result
        finally:
            if sampler is not None:
                sampler.stop.set()
            for child in (client, proc):
                if child is not None and child.poll() is None:
                    child.kill()
                    child.wait()


def paced(args: argparse.Namespace) -> None:
    """A steady load below the agent's limit: what the followers get of it."""
    n = args.paced * args.seconds
    data = build_load(n)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load: {args.paced:,} msg/s for {args.seconds} s; followers: {args.followers} WebSocket, no filter")
    print("| run | agent CPU (cores) | followers' CPU (cores, charged) | records to each follower | told dropped "
          "| untold gaps | agent RSS max |")
    print("|---|---|---|---|---|---|---|")
    for i in range(args.runs):
        r = run_once(data, n, args.followers, rate=args.paced)
        fl = r["followers"]
        problems = sum(len(x["problems"]) + (1 if x["error"] else 0) for x in fl)
        print(f"| {i + 1} | {r['cpu'] / r['elapsed']:.2f} | "
              f"{r['status'].get('follow_cpu_ms', 0) / 1000 / r['elapsed']:.2f} | "
              f"{statistics.median(x['received'] for x in fl):,.0f} of {n:,} | "
              f"{statistics.median(x['dropped'] for x in fl):,.0f} | {problems} | {r['rss_max'] / 2**20:.0f} MiB |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--followers", type=int, default=50)
    ap.add_argument("--paced", type=int, metavar="MSG_PER_S",
                    help="instead: the load at this rate, for --seconds, to --followers followers")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--client", nargs=3, metavar=("URL", "KEY", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args.client[0], args.client[1], int(args.client[2]))
        return
    if args.paced:
        paced(args)
        return
    n = args.messages
    data = build_load(n)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load: {n} RFC 5424 messages, {len(data) / n:.0f} B each, LF-framed; "
          f"followers: {args.followers} WebSocket, no filter")
    runs: dict[int, list[dict]] = {0: [], args.followers: []}
    for i in range(args.runs):
        for f in (0, args.followers):
            r = run_once(data, n, f)
            runs[f].append(r)
            extra = ""
            if f:
                fl = r["followers"]
                extra = (f", per follower: received {statistics.median(x['received'] for x in fl):,.0f}, "
                         f"told dropped {statistics.median(x['dropped'] for x in fl):,.0f}, "
                         f"problems {sum(len(x['problems']) for x in fl)}, errors "
                         f"{sum(1 for x in fl if x['error'])}, all told: {r['settled']}")
            print(f"run {i + 1}, {f} followers: {r['rate']:,.0f} msg/s ({r['elapsed']:.2f} s), "
                  f"CPU {r['cpu'] / n * 1e6:.2f} µs/msg, RSS {r['rss0'] / 2**20:.0f} -> max "
                  f"{r['rss_max'] / 2**20:.0f} MiB{extra}", flush=True)
    base = statistics.median(r["rate"] for r in runs[0])
    with_f = statistics.median(r["rate"] for r in runs[args.followers])
    print()
    print("| followers | msg/s (median) | runs | CPU µs/msg | agent RSS max | records to each follower "
          "| told dropped | untold gaps |")
    print("|---|---|---|---|---|---|---|---|")
    for f in (0, args.followers):
        rs = runs[f]
        rate = statistics.median(r["rate"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs) / n * 1e6
        rss = max(r["rss_max"] for r in rs) / 2**20
        if f:
            received = statistics.median(x["received"] for r in rs for x in r["followers"])
            dropped = statistics.median(x["dropped"] for r in rs for x in r["followers"])
            problems = sum(len(x["problems"]) + (1 if x["error"] else 0) for r in rs for x in r["followers"])
            tail = f"{received:,.0f} | {dropped:,.0f} | {problems} |"
        else:
            tail = "- | - | - |"
        print(f"| {f} | {rate:,.0f} | " + ", ".join(f"{r['elapsed']:.2f} s" for r in rs)
              + f" | {cpu:.2f} | {rss:.0f} MiB | {tail}")
    print(f"\nwith {args.followers} followers / without: {with_f / base:.2f}")
    problems = [p for r in runs[args.followers] for x in r["followers"] for p in x["problems"]]
    if problems:
        print("problems:", *problems[:10], sep="\n  ")


if __name__ == "__main__":
    main()
