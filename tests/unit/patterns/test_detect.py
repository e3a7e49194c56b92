"""The anomaly detector on generated streams (sans-IO: the test is the clock)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.patterns.detect import Anomaly, Detector, DetectSettings

S = 1_000_000_000
SET = DetectSettings(window=60, warmup=300, cooldown=600)
TEMPLATES = [(f"{i:016x}", f"event {i} <*>") for i in range(40)]


def steady(det: Detector, seconds: int, rate: int, rng: random.Random, start: int = 0,
           errors: float = 0.0) -> list[Anomaly]:
    """``rate`` records a second (±50%, templates drawn by weight, a share
    ``errors`` of them err) for ``seconds``."""
    out: list[Anomaly] = []
    w = [1.0 / (1 + i % 10) for i in range(len(TEMPLATES))]
    for sec in range(start, start + seconds):
        n = rng.randint(rate // 2, rate + rate // 2)
        rows = [("web", pid, tpl, 3 if rng.random() < errors else 6)
                for pid, tpl in rng.choices(TEMPLATES, w, k=n)]
        out += det.observe(rows, sec * S)
    return out


def test_a_steady_noisy_stream_of_a_million_records_raises_nothing() -> None:
    rng = random.Random(7)
    det = Detector(SET)
    out = steady(det, 1000, 1000, rng, errors=0.02)  # ~1M records over ~17 windows, 2% errors
    assert sum(det.counts.values()) == 0 and out == []


def test_a_new_error_template_after_warmup_is_reported_once() -> None:
    rng = random.Random(1)
    det = Detector(SET)
    assert steady(det, 600, 50, rng) == []
    out: list[Anomaly] = []
    for sec in range(600, 700):
        out += det.observe([("web", "ffffffffffffffff", "disk <*> failed", 3)] * 3, sec * S)
    new = [a for a in out if a.kind == "new_pattern"]
    assert len(new) == 1 and new[0].pattern_id == "ffffffffffffffff" and new[0].template == "disk <*> failed"
    assert new[0].received_ns == 600 * S and "never seen" in new[0].explanation
    # 3 errors a second where there were none is also an error burst of the app, said once
    assert [a.kind for a in out if a.kind != "new_pattern"] == ["error_burst"]


def test_before_the_warmup_new_templates_are_not_anomalies() -> None:
    det = Detector(SET)
    assert det.observe([("web", pid, tpl, 6) for pid, tpl in TEMPLATES], 0) == []
    assert det.observe([("web", "aaaaaaaaaaaaaaaa", "later <*>", 6)], 299 * S) == []
    assert [a.kind for a in det.observe([("web", "bbbbbbbbbbbbbbbb", "after <*>", 6)], 300 * S)] == ["new_pattern"]


def test_a_tenfold_burst_of_one_template_is_reported_once_per_cooldown() -> None:
    rng = random.Random(2)
    det = Detector(SET)
    pid, tpl = TEMPLATES[0]
    out: list[Anomaly] = []
    for sec in range(0, 900):  # 5 a second: 300 a window
        out += det.observe([("web", pid, tpl, 6)] * rng.randint(4, 6), sec * S)
    assert out == []
    for sec in range(900, 1020):  # 50 a second: 10x for two windows
        out += det.observe([("web", pid, tpl, 6)] * 50, sec * S)
    spikes = [a for a in out if a.kind == "spike"]
    assert len(spikes) == 1 and spikes[0].pattern_id == pid
    assert spikes[0].count >= 10 * 290 and 280 <= spikes[0].baseline <= 320
    assert spikes[0].received_ns < 960 * S  # said when the count got there, within the window


def test_a_stopped_heartbeat_is_reported() -> None:
    det = Detector(SET)
    beat = ("cron", "1111111111111111", "heartbeat ok", 6)
    out: list[Anomaly] = []
    for sec in range(0, 600, 10):  # every 10 s: 6 a window
        out += det.observe([beat], sec * S)
    assert out == []
    for sec in range(600, 900, 10):  # silence (other apps' records, and ticks)
        out += det.observe([("web", "2222222222222222", "other", 6)], sec * S)
    stopped = [a for a in out if a.kind == "stopped"]
    assert len(stopped) == 1 and stopped[0].app == "cron" and stopped[0].pattern_id == beat[1]
    assert stopped[0].count == 0 and stopped[0].baseline >= 5
    assert stopped[0].window_end_ns - stopped[0].window_start_ns == 2 * 60 * S


def test_an_error_burst_of_an_app_is_reported() -> None:
    det = Detector(SET)
    out: list[Anomaly] = []
    for sec in range(0, 600):  # one error a minute
        out += det.observe([("db", "3333333333333333", "query ok", 6),
                            *([("db", "4444444444444444", "query failed", 3)] if sec % 60 == 0 else [])], sec * S)
    assert out == []
    for sec in range(600, 660):
        out += det.observe([("db", "4444444444444444", "query failed", 3)] * 2, sec * S)
    bursts = [a for a in out if a.kind == "error_burst"]
    assert len(bursts) == 1 and bursts[0].app == "db" and bursts[0].count == 20


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 7), st.integers(0, 200)),
                max_size=200))
def test_any_stream_gives_well_formed_anomalies_each_once_per_cooldown(
        events: list[tuple[int, int, int, int]]) -> None:
    det = Detector(DetectSettings(window=10, warmup=5, cooldown=1000, min_count=2, min_errors=2,
                                  baseline_windows=1, max_patterns=3, max_apps=2))
    now = 0
    seen: list[Anomaly] = []
    for app, pat, sev, step in events:
        now += step * S // 10
        seen += det.observe([(f"a{app}", f"{pat:016x}", f"t{pat}", sev)], now)
    keys = [(a.kind, a.app, a.pattern_id) for a in seen]
    assert len(keys) == len(set(keys))  # the cooldown outlasts the stream
    for a in seen:
        assert a.kind in ("new_pattern", "spike", "stopped", "error_burst") and a.explanation
        assert a.window_start_ns <= a.window_end_ns and a.count >= 0 and a.baseline >= 0
    assert sum(det.counts.values()) == len(seen)
