"""Throughput of the syslog parser (and framer): messages per second, one core.

    python bench/syslog_parse_bench.py [--n 200000] [--runs 5]

Parses N RFC 5424 and N RFC 3164 messages through ``parse_messages`` in
batches of 512 (as the collector hands them over) and prints the median of
``--runs`` runs for each, plus the framer splitting the same messages from
one LF-framed and one octet-counted stream. Rates are per second of this
process's CPU time (one core, unaffected by other load on the machine), with
the wall-clock rate beside them. The messages are synthetic but
shaped like real traffic: varied hosts, apps and pids, ~160 byte lines, one
second of time per 1000 messages, a third of the RFC 5424 ones with
STRUCTURED-DATA.
"""

from __future__ import annotations

import argparse
import statistics
import time

from hostlog.collectors.syslog.framing import SyslogFramer
from hostlog.collectors.syslog.parse_batch import parse_messages

BATCH = 512


def rfc5424_lines(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        sec = 1_700_000_000 + i // 1000
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%06dZ" % (i % 1000 * 997)
        sd = '[meta sequenceId="%d" sysUpTime="%d"]' % (i, i * 7) if i % 3 == 0 else "-"
        out.append(("<%d>1 %s web-%d.example.net app%d %d ID%d %s GET /api/v1/items/%d "
                    "status=200 bytes=%d agent=\"curl/8.1\" took=%dms"
                    % (8 + i % 180, ts, i % 17, i % 11, 1000 + i % 5000, i % 40, sd,
                       i, i * 13 % 9999, i % 250)).encode())
    return out


def rfc3164_lines(n: int) -> list[bytes]:
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    out = []
    for i in range(n):
        t = time.localtime(time.time() - 86400 + i // 1000)
        ts = "%s %2d %02d:%02d:%02d" % (months[t.tm_mon - 1], t.tm_mday, t.tm_hour, t.tm_min,
                                        t.tm_sec)
        out.append(("<%d>%s host%d sshd[%d]: Failed password for invalid user admin%d from "
                    "203.0.113.%d port %d ssh2 after %d attempts"
                    % (8 + i % 180, ts, i % 9, 2000 + i % 30000, i % 97, i % 250,
                       40000 + i % 20000, i % 6)).encode())
    return out


def _rates(count: int, cpu: list[float], wall: list[float]) -> str:
    return (f"{count / statistics.median(cpu):>10,.0f} msg/s CPU"
            f"  ({count / statistics.median(wall):,.0f} msg/s wall)")


def time_parse(lines: list[bytes], runs: int) -> str:
    batches = [lines[i:i + BATCH] for i in range(0, len(lines), BATCH)]
    cpu, wall = [], []
    for _ in range(runs):
        received = time.time_ns()
        c0, w0 = time.process_time(), time.perf_counter()
        for b in batches:
            parse_messages(b, received_ns=received, default_host="relay", peer="192.0.2.7")
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return _rates(len(lines), cpu, wall)


def time_framer(stream: bytes, count: int, runs: int, chunk: int = 65536) -> str:
    chunks = [stream[i:i + chunk] for i in range(0, len(stream), chunk)]
    cpu, wall = [], []
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        f = SyslogFramer()
        got = 0
        for c in chunks:
            got += len(f.feed(c))
        got += len(f.finish())
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        assert got == count, (got, count)
    return _rates(count, cpu, wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    l5424 = rfc5424_lines(args.n)
    l3164 = rfc3164_lines(args.n)
    print(f"{args.n} messages per kind, median of {args.runs} runs")
    print(f"RFC 5424 parse ({sum(map(len, l5424)) / len(l5424):.0f} B avg): "
          + time_parse(l5424, args.runs))
    print(f"RFC 3164 parse ({sum(map(len, l3164)) / len(l3164):.0f} B avg): "
          + time_parse(l3164, args.runs))
    lf = b"\n".join(l3164) + b"\n"
    octet = b"".join(b"%d %s" % (len(m), m) for m in l5424)
    print("framer, LF:                 " + time_framer(lf, len(l3164), args.runs))
    print("framer, octet counting:     " + time_framer(octet, len(l5424), args.runs))


if __name__ == "__main__":
    main()
