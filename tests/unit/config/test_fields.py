"""Tests for hostlog.config.fields: the field types the sections share (sizes,
durations, absolute paths), as a file meets them."""

from __future__ import annotations

from tests.support.config import only_problem


def test_bad_size() -> None:
    key, message = only_problem('[spool]\nmax_bytes = "10 gigs"\n')
    assert key == "spool.max_bytes"
    assert "invalid size '10 gigs'" in message and "KiB, MiB, GiB" in message


def test_size_below_minimum() -> None:
    key, message = only_problem('[spool]\nsegment_bytes = "1KiB"\n')
    assert key == "spool.segment_bytes"
    assert "at least 64KiB" in message


def test_bad_duration() -> None:
    key, message = only_problem(
        '[[app]]\nname = "a"\ncommand = ["true"]\nbackoff_initial = "5m"\n'
    )
    assert key == "app[0].backoff_initial"
    assert "'min' for minutes" in message
    key, message = only_problem('[spool]\nfsync_interval = "soon"\n')
    assert key == "spool.fsync_interval"
    assert "ms, s, min, h, d" in message


def test_relative_paths_are_refused() -> None:
    key, message = only_problem('[spool]\nkey_file = "spool.key"\n')
    assert key == "spool.key_file"
    assert "must be an absolute path" in message
    key, message = only_problem('[[source]]\ntype = "file"\npaths = ["logs/*.log"]\n')
    assert key == "source[0].paths[0]"
    assert "absolute" in message
