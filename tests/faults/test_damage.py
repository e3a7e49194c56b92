"""Damage on disk: what one damaged frame costs, torn tails, random bit flips.

Each test runs its campaign (tests/faults/campaigns.py) in a child process
with a timeout, so a hang in a reader fails the test instead of stalling the
suite, and prints its figures. HOSTLOG_FAULTS_LONG=1 runs the long version.
"""

from __future__ import annotations

import json

from tests.faults.conftest import LONG
from tests.faults.helpers import run_campaign


def figure(name: str, fig: dict) -> None:
    print(f"\nFAULTS {name}: " + json.dumps({k: v for k, v in fig.items() if k != "results"}))


def test_one_damaged_frame_costs_at_most_the_frame_limit_whatever_the_batch(tmp_path):
    # one batch 50x the record limit: the writer must split it into frames
    fig = run_campaign("frame_limit", tmp_path, timeout=300 if LONG else 60,
                       batch=5000, frame_records=100, frame_bytes=1 << 20, msg_size=40,
                       victims=40 if LONG else 8, seed=20)
    figure("frame_limit records", fig)
    assert fig["max_frame_records"] <= 100
    assert fig["segments"] > 2 and fig["faults"] >= 8
    for r in fig["results"]:
        assert r["missing_is_the_frame"], r  # exactly the damaged frame, nothing else
        assert 0 < r["lost"] <= 100, r
        assert r["reported"] and str(r["offset"]) in r["reported"][0], r
    assert fig["worst_lost"] <= 100


def test_one_damaged_frame_costs_at_most_the_frame_bytes_limit(tmp_path):
    # ~1 KiB messages, frame_bytes 16 KiB: frames end on bytes, not records
    fig = run_campaign("frame_limit", tmp_path, timeout=300 if LONG else 60,
                       batch=600, frame_records=4096, frame_bytes=16 * 1024, msg_size=1000,
                       victims=30 if LONG else 6, seed=21)
    figure("frame_limit bytes", fig)
    assert fig["max_frame_text"] <= 16 * 1024
    for r in fig["results"]:
        assert r["missing_is_the_frame"] and 0 < r["lost"] <= 17, r
        assert r["reported"], r


def test_a_torn_tail_at_every_offset_is_cut_exactly(tmp_path):
    # every byte offset across the active segment's last two frames (every
    # 3rd in the short version, and always the frame boundaries)
    fig = run_campaign("torn_tail", tmp_path, timeout=600 if LONG else 90,
                       frames=12 if LONG else 6, stride=1 if LONG else 3,
                       deadline_s=550 if LONG else 80)
    figure("torn_tail", fig)
    assert fig["cuts"] >= fig["bytes_range"] // 3


def test_random_bit_flips_are_detected_and_cost_only_their_frame(tmp_path):
    flips = 50_000 if LONG else 3000
    fig = run_campaign("bit_flips", tmp_path, timeout=3000 if LONG else 120,
                       flips=flips, recover_every=10, seed=2020, targeted=20,
                       deadline_s=2900 if LONG else 110)
    figure("bit_flips", fig)
    assert fig["faults"] == flips
    assert fig["wrong_records"] == 0  # checked record by record in the campaign
    # every undamaged frame still reads back, record for record
    assert fig["undamaged_frames_checked"] > 0 and fig["undamaged_frames_unreadable"] == 0
    # every damaged frame is reported by the reader (query) and by verify,
    # except the active segment's last frame with a broken header, which
    # cannot be told from a frame still being written (recovery cuts it)
    undetected = fig["frames_damaged"] - fig["frames_detected_by_reader"]
    assert undetected == fig["tail_frame_header_taken_as_torn"]
    assert fig["frames_detected_by_verify"] == fig["frames_detected_by_reader"]
    assert fig["max_records_lost_to_one_frame"] <= 80  # the largest batch, one frame
    # recovery never loses what came before the damage, nor anything readable
    assert not fig.get("recovery_lost_before_damage")
    assert not fig.get("recovery_lost_readable")
    # a damaged footer costs nothing, and recovery says so
    assert fig["footers_damaged"] > 0
    assert fig["footers_reported_by_recovery"] == fig["footers_damaged"]
    # a damaged segment header costs the segment, and is reported
    assert fig["segment_headers_damaged"] > 0
    assert fig["segment_headers_reported"] == fig["segment_headers_damaged"]
