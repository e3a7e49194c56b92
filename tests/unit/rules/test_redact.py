"""Redaction's batch search: the literal every match holds finds exactly the
messages the regex matches, whatever the case, the bytes or the neighbours."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.record import Columns, Record
from hostlog.rules.redact import MASK, compile_redactors, literal_of, luhn_ok
from hostlog.rules.select import BatchView

PATTERNS = [r"(?i)password=\S+", r"Bearer [A-Za-z0-9._~+/-]+=*", r"(?i)\bkey=(?P<secret>\w+)", r"tok\w*en",
            r"(?i)Ünïcode=\S+", "@builtin"]
PIECES = ["password=", "PassWord=x", "Bearer ", "abc", "key=", "KEY=v", " ", "token", "tokken", "Ünïcode=1",
          "ünïcode=2", "\u212aey=k", "=", "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE", "pwd:x", "\x00"]


@st.composite
def messages(draw: st.DrawFn) -> list[str | bytes]:
    out: list[str | bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        text = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=6)))
        out.append(text.encode("utf-8") + b"\xff" if draw(st.booleans()) and draw(st.booleans()) else text)
    return out


@settings(max_examples=150, deadline=None)
@given(messages(), st.sampled_from(PATTERNS))
def test_hits_are_the_messages_the_regex_matches(msgs: list[str | bytes], entry: str) -> None:
    view = BatchView(Columns.of([Record(ts=0, msg=m) for m in msgs]))
    for r in compile_redactors([entry]):
        got = r.hits(view, None)
        want = [i for i, m in enumerate(msgs)
                if r.pattern.search(m if isinstance(m, str) else m.decode("utf-8", "surrogateescape"))]
        assert got == want, (entry, r.name)
        # and a superset when not exact, which sub() then settles
        assert set(want) <= set(r.hits(view, None, exact=False))


def test_literals() -> None:
    assert literal_of(re.compile(r"(?i)password=\S+")) == ("password=", True)
    assert literal_of(re.compile(r"Bearer [A-Za-z]+")) == ("Bearer ", False)
    assert literal_of(re.compile(r"(?:a|b)cd")) == (None, False)  # "cd" is too short
    assert literal_of(re.compile(r"(?i)Ünï=\S")) == (None, False)  # case folding beyond ASCII


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005") and not luhn_ok("4111111111111112")


@pytest.mark.parametrize("value", ["password=abc", b"password=\xffabc"])
def test_sub_value_keeps_the_type(value: str | bytes) -> None:
    [r] = compile_redactors([r"password=\S+"])
    out = r.sub_value(value)
    assert type(out) is type(value)
    assert (out if isinstance(out, str) else out.decode("utf-8", "surrogateescape")) == MASK
