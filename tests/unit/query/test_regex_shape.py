"""The shape of a pattern, as the scans use it: a literal every match contains,
the text of a plain pattern, whether matching inside joined messages is safe."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.query.regex_shape import context_free, longest_literal, plain_text

# Pieces a pattern is made of: plain words and constructs the literal run must stop at.
_WORDS = st.text(alphabet="abcxyz019 -:", min_size=1, max_size=6).map(re.escape)
_CONSTRUCTS = st.sampled_from([r"\d+", r"[a-f]*", r"(?:ab|cd)", r"x?", r".", r"\s", r"(q+)"])
_PATTERNS = st.lists(st.one_of(_WORDS, _CONSTRUCTS), min_size=1, max_size=6).map("".join)


@settings(max_examples=200, deadline=None)
@given(_PATTERNS, st.data())
def test_every_match_contains_the_longest_literal(source: str, data: st.DataObject) -> None:
    pattern = re.compile(source)
    literal = longest_literal(pattern)
    assert literal is not None
    text = data.draw(st.from_regex(pattern, fullmatch=True))
    assert literal in text


def test_the_longest_literal_is_the_longest_top_level_run() -> None:
    assert longest_literal(re.compile(r"ab\d+connection refused(x|y)z")) == "connection refused"
    assert longest_literal(re.compile(r"(connection refused)")) == ""  # inside a group: not top level
    assert longest_literal(re.compile(r"a*")) == ""


def test_plain_text_is_only_for_plain_patterns() -> None:
    assert plain_text(re.compile(r"disk full")) == "disk full"
    assert plain_text(re.compile(r"disk\.full")) == "disk.full"
    assert plain_text(re.compile(r"disk.full")) is None
    assert plain_text(re.compile(r"disk full", re.IGNORECASE)) is None


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abc", min_size=1, max_size=5))
def test_plain_text_gives_back_an_escaped_text(text: str) -> None:
    assert plain_text(re.compile(re.escape(text))) == text


def test_context_free_refuses_anchors_and_lookaround() -> None:
    assert context_free(re.compile(r"error \d+"))
    assert context_free(re.compile(r"\berror\b"))
    for source in (r"^error", r"error$", r"(?=x)y", r"(?!x)y", r"(?<=a)b", r"\Aerr", r"a(b|^c)"):
        assert not context_free(re.compile(source)), source
