"""Tests for hostlog.config.units: sizes and durations, parsed and rendered."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostlog.config import format_duration, format_size, parse_duration, parse_size
from tests.support.config import GiB, KiB, MiB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100B", 100),
        ("100", 100),
        (100, 100),
        ("512KiB", 512 * KiB),
        ("64MiB", 64 * MiB),
        ("10GiB", 10 * GiB),
        ("1TiB", 1024**4),
        ("10 GiB", 10 * GiB),
        ("64mib", 64 * MiB),
        ("1.5GiB", 3 * GiB // 2),
        ("10KB", 10_000),
        ("2GB", 2 * 10**9),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "10Gi", "10 G", "-1", -1, "1.5", "1e3KiB", True, 1.5, "10GiB5"])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)  # type: ignore[arg-type]


def test_parse_size_refuses_ambiguous_unit() -> None:
    with pytest.raises(ValueError, match="ambiguous; write MiB"):
        parse_size("64M")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50ms", 0.05),
        ("30s", 30),
        ("5min", 300),
        ("2h", 7200),
        ("30d", 30 * 86400),
        ("1w", 7 * 86400),
        ("250us", 0.00025),
        ("30", 30),
        (30, 30),
        (0.5, 0.5),
        ("1h30min", 5400),
        ("1h 30min 10s", 5410),
        ("1.5h", 5400),
        ("2 hours", 7200),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5m", "1h30", "soon", "-1s", -1, "1x", True, float("nan"), "1h-5min"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)  # type: ignore[arg-type]


SIZE_FACTORS = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "KB": 1000,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
}


@given(
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from(sorted(SIZE_FACTORS)),
    st.sampled_from(["", " "]),
    st.booleans(),
)
def test_size_round_trip(n: int, unit: str, space: str, lower: bool) -> None:
    text = f"{n}{space}{unit.lower() if lower else unit}"
    assert parse_size(text) == n * SIZE_FACTORS[unit]


@given(st.integers(min_value=0, max_value=2**62))
def test_format_size_round_trip(n: int) -> None:
    assert parse_size(format_size(n)) == n
    assert parse_size(n) == n == parse_size(str(n))


# (numerator, denominator) of each unit in seconds, written out independently of the module.
DURATION_FACTORS = {
    "us": (1, 10**6),
    "ms": (1, 1000),
    "s": (1, 1),
    "min": (60, 1),
    "h": (3600, 1),
    "d": (86400, 1),
    "w": (604800, 1),
}


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(sorted(DURATION_FACTORS)))
def test_duration_round_trip(n: int, unit: str) -> None:
    num, den = DURATION_FACTORS[unit]
    assert parse_duration(f"{n}{unit}") == n * num / den


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(DURATION_FACTORS))),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["", " "]),
)
def test_compound_duration_adds_up(parts: list[tuple[int, str]], sep: str) -> None:
    text = sep.join(f"{n}{unit}" for n, unit in parts)
    expected = sum(Fraction(n * DURATION_FACTORS[u][0], DURATION_FACTORS[u][1]) for n, u in parts)
    assert parse_duration(text) == float(expected)


@given(st.integers(min_value=1, max_value=10**7), st.sampled_from(["ms", "s", "min", "h", "d"]))
def test_format_duration_round_trip(n: int, unit: str) -> None:
    seconds = parse_duration(f"{n}{unit}")
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.text(max_size=20))
def test_parsers_fail_only_with_value_error(text: str) -> None:
    for parse in (parse_size, parse_duration):
        try:
            result = parse(text)
        except ValueError:
            continue
        assert result >= 0
