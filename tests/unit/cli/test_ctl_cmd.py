"""`hostlog ctl status` as text: the agent line, forwarding, the receiver, the apps."""

from __future__ import annotations

from hostlog.cli.ctl_cmd import format_status


def link(name: str, connected: bool, **kw) -> dict:
    return {"name": name, "target": "tls://c1:7514" if connected else None, "connected": connected,
            "acked_seq": 90, "lag_records": 10, "lag_seconds": 1.25, "in_flight": 2,
            "last_error": "" if connected else "Connection refused", **kw}


def test_forward_and_receiver_lines() -> None:
    text = format_status({
        "agent": {"version": "1", "pid": 7, "uptime": 5, "records_in": 100, "records_out": 90},
        "forward": [{"name": "central", "mode": "replicate", "min_acks": 2, "delivered_seq": 80,
                     "links": [link("central@c1_7514", True), link("central@c2_7514", False)]}],
        "receiver": {"listen": "tls://0.0.0.0:7514", "records": 5, "duplicates": 1, "refused": 2,
                     "peers": [{"agent": "a" * 32, "connected": True}, {"agent": "b" * 32, "connected": False}]},
        "apps": []})
    lines = text.splitlines()
    assert lines[1] == ("forward central@c1_7514 (replicate): connected to tls://c1:7514, acked 90, "
                        "lag 10 records / 1.2s, 2 chunks in flight")
    assert lines[2].startswith("forward central@c2_7514 (replicate): disconnected, acked 90")
    assert lines[2].endswith("(Connection refused)")
    assert lines[3] == "forward central: delivered to 2 targets up to seq 80"
    assert lines[4] == ("receiver tls://0.0.0.0:7514: 1 of 2 peers connected, 5 records stored, "
                        "1 duplicates dropped, 2 peers refused")
    assert lines[5] == "no apps"


def test_without_forwarding_nothing_is_added() -> None:
    text = format_status({"agent": {"version": "1"}, "apps": []})
    assert text.splitlines()[1:] == ["no apps"]


def nats_input(**kw) -> dict:
    return {"name": "js-in", "type": "nats", "server": "nats://n1:4222", "connected": True,
            "stream": "HOSTLOG", "durable": "hostlog", "acked": 40, "records": 20000, "duplicates": 512,
            "held_back": 0, "redeliveries": 0, "bad_messages": 0, "errors": 0, "awaiting_durability": 0,
            "last_error": "", "consumer": {"pending": 3, "ack_pending": 1}, **kw}


def test_a_line_per_nats_input() -> None:
    text = format_status({
        "agent": {"version": "1"}, "apps": [],
        "inputs": [nats_input(),
                   nats_input(name="js-2", connected=False, server=None, consumer=None, held_back=4,
                              redeliveries=5, errors=7, awaiting_durability=2, bad_messages=1,
                              last_error="connection: [Errno 111] Connection refused"),
                   {"name": "other", "type": "something else"}]})
    lines = text.splitlines()
    assert lines[1] == ("source js-in (nats): connected to nats://n1:4222, stream HOSTLOG consumer hostlog, "
                        "40 messages acked, 20000 records stored, 512 duplicates dropped, "
                        "pending 3 (ack pending 1)")
    assert lines[2] == ("source js-2 (nats): disconnected, stream HOSTLOG consumer hostlog, 40 messages acked, "
                        "20000 records stored, 512 duplicates dropped, 2 awaiting durability, 4 held back, "
                        "5 redeliveries, 1 bad messages, 7 errors (connection: [Errno 111] Connection refused)")
    assert lines[3:] == ["no apps"]  # (an input of another type has no line of its own yet)


def test_a_line_for_the_http_server() -> None:
    text = format_status({"agent": {"version": "1"}, "apps": [],
                          "http": {"listen": ["http://127.0.0.1:19532", "unix:///run/hostlog/http.sock"],
                                   "requests": 12, "unauthorized": 2}})
    assert ("http http://127.0.0.1:19532, unix:///run/hostlog/http.sock: 12 requests, 2 unauthorized"
            in text.splitlines())


def test_a_line_per_rule() -> None:
    text = format_status({"agent": {"version": "1"}, "apps": [],
                          "rules": [{"name": "no-debug", "matched": 10, "dropped": 10},
                                    {"name": "health", "matched": 100, "sampled_out": 99, "removed": True},
                                    {"name": "api", "matched": 5, "parsed": 4, "parse_errors": 1}]})
    lines = text.splitlines()
    assert "rule no-debug: matched 10, dropped 10" in lines
    assert "rule health: matched 100, dropped 99 (removed by a reload)" in lines
    assert "rule api: matched 5, dropped 0, 4 parsed, 1 parse errors" in lines
