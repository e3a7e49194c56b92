"""The one declaration of the syslog grammars (collectors/syslog/grammar.py).

Every regex of the syslog parsers is built there; these tests hold the
declaration to the RFC's limits, the parsers to the declaration (the header
regex, the diagnostics and the batch regex read the same fields with the
same limits), the compiled splitter's limits to the same names, and the
package to a one-way import graph.
"""

from __future__ import annotations

import ast
import calendar
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.collectors.syslog import grammar
from hostlog.collectors.syslog import parse_batch as syslog_parse_batch
from hostlog.collectors.syslog.grammar import HEADER5424, LIMITS, RFC5424, SPLIT5424
from hostlog.collectors.syslog.parse import parse_message
from tests.conftest import need

RECEIVED_NS = calendar.timegm((2024, 6, 20, 12, 0, 0)) * 10**9
PACKAGE = Path(grammar.__file__).parent
PRINT = "".join(map(chr, range(33, 127)))
FIELDS = {f.name: f for f in HEADER5424}
# a valid value of each HEADER field, in order
GOOD = {"VERSION": "1", "TIMESTAMP": "2024-05-01T10:00:00.25Z", "HOSTNAME": "web-1",
        "APP-NAME": "nginx", "PROCID": "42", "MSGID": "req"}


def header(**values: str) -> str:
    return "<13>" + " ".join(values.get(name, GOOD[name]) for name in GOOD) + " - message"


def test_the_limits_are_rfc_5424s() -> None:
    # RFC 5424 section 6: HOSTNAME 1*255, APP-NAME 1*48, PROCID 1*128, MSGID 1*32,
    # SD-NAME 1*32, TIME-SECFRAC 1*6DIGIT; PRIVAL 0..191 (6.2.1)
    assert {k: LIMITS[k] for k in ("HOSTNAME", "APP-NAME", "PROCID", "MSGID", "SD-NAME",
                                   "TIME-SECFRAC", "PRIVAL")} == {
        "HOSTNAME": 255, "APP-NAME": 48, "PROCID": 128, "MSGID": 32, "SD-NAME": 32,
        "TIME-SECFRAC": 6, "PRIVAL": 191}
    assert [f.name for f in HEADER5424] == list(GOOD)
    for f in HEADER5424:
        if f.name in LIMITS:
            assert f.longest == LIMITS[f.name]


def test_the_compiled_splitter_has_the_same_limits() -> None:
    compiled = syslog_parse_batch._syslog5424
    need(compiled is not None, "hostlog.collectors.syslog._syslog5424 (the package built with a C compiler)")
    assert compiled.LIMITS == LIMITS


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([f for f in HEADER5424 if f.longest is not None and f.name != "VERSION"]),
       st.text(st.sampled_from(PRINT), min_size=1, max_size=300))
def test_a_field_takes_printusascii_up_to_its_limit(field, token: str) -> None:
    assert field.longest is not None
    assert (field.regex.fullmatch(token) is not None) == (len(token) <= field.longest)
    assert field.regex.fullmatch(token + " ") is None  # never the separating space


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({name: st.text(st.sampled_from(PRINT), min_size=1, max_size=f.longest)
                              for name, f in FIELDS.items()
                              if name in ("HOSTNAME", "APP-NAME", "PROCID", "MSGID")}))
def test_the_header_regex_groups_are_the_declared_fields_in_order(values: dict[str, str]) -> None:
    m = RFC5424.match(header(**values))
    assert m is not None
    assert m.groups()[1:] == tuple({**GOOD, **values}.values())
    assert m[1] == "13"


@pytest.mark.parametrize("name", ["HOSTNAME", "APP-NAME", "PROCID", "MSGID"])
def test_one_over_the_limit_is_named_by_the_diagnostics(name: str) -> None:
    longest = FIELDS[name].longest
    assert longest is not None
    exact = header(**{name: "x" * longest})
    rec = parse_message(exact.encode(), received_ns=RECEIVED_NS)
    assert "parse_error" not in rec.fields and rec.msg == "message"
    over = header(**{name: "x" * (longest + 1)})
    rec = parse_message(over.encode(), received_ns=RECEIVED_NS)
    at = over.index("x" * (longest + 1))
    assert rec.fields["parse_error"] == f"rfc5424: bad {name} at byte {at}"
    assert rec.msg == over  # the whole message kept


# (a VERSION the diagnostics could call bad is never read as RFC 5424: "<13>1x" is
# RFC 3164 content, grammar.VERSION_START)
@pytest.mark.parametrize("bad", ["2024-05-01T10:00:00", "2024-05-01T10:00:00.1234567Z",
                                 "2024-02-30T10:00:00Z", "1714557600"])
def test_the_diagnostics_name_the_timestamp(bad: str) -> None:
    name = "TIMESTAMP"
    raw = header(**{name: bad})
    rec = parse_message(raw.encode(), received_ns=RECEIVED_NS)
    assert rec.fields["parse_error"] == f"rfc5424: bad {name} at byte {raw.index(bad)}"


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from(PRINT + " \ufeff[]=\"\\"), max_size=120))
def test_the_batch_regex_takes_a_subset_of_the_header_regex(tail: str) -> None:
    line = "<13>1 " + tail
    m = SPLIT5424.match("\n" + line)
    if m is not None:
        h = RFC5424.match(line)
        assert h is not None
        pri, version, ts, host, app, procid, msgid = h.groups()
        assert (pri, version) == (m[1], "1")
        assert ts == m[2] + ("" if m[3] is None else "." + m[3]) + m[4]
        assert (host, app, procid, msgid) == (m[5], m[6], m[7], m[8])


def test_the_parsers_build_no_regex_of_their_own() -> None:
    # every pattern is grammar.py's: the modules that parse compile none
    for name in ("parse.py", "parse_batch.py", "clock.py", "framing.py"):
        tree = ast.parse((PACKAGE / name).read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr == "compile"]
        assert calls == [], name


def _imports(path: Path) -> set[str]:
    """The modules of this package that ``path`` imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = node.module
            if mod == "hostlog.collectors.syslog":
                out.update(a.name for a in node.names)
            elif mod.startswith("hostlog.collectors.syslog."):
                out.add(mod.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("hostlog.collectors.syslog."):
                    out.add(a.name.rsplit(".", 1)[1])
    return out


def test_the_package_imports_one_way() -> None:
    graph = {p.stem: _imports(p) - {p.stem} for p in PACKAGE.glob("*.py")}
    order: list[str] = []
    seen: set[str] = set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, f"import circle: {' -> '.join((*path, mod))}"
        if mod in seen:
            return
        for dep in sorted(graph.get(mod, ())):
            visit(dep, (*path, mod))
        seen.add(mod)
        order.append(mod)

    for mod in sorted(graph):
        visit(mod, ())
    assert graph["grammar"] == set()  # the grammar stands on nothing
    assert "parse_batch" not in graph["parse"]


def test_no_private_name_crosses_a_module_of_the_package() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "hostlog.collectors.syslog"):
                private = [a.name for a in node.names
                           if a.name.startswith("_") and a.name != "_syslog5424"]
                assert private == [], f"{path.name} imports {private} from {node.module}"


def test_the_pri_and_sd_name_patterns() -> None:
    # exported by name: what the C comments cite
    assert re.fullmatch(grammar.PRI, "<191>") and not re.fullmatch(grammar.PRI, "<00>")
    assert re.fullmatch(grammar.SD_NAME, "x" * 32) and not re.fullmatch(grammar.SD_NAME, "x" * 33)
    assert not re.fullmatch(grammar.SD_NAME, "a=b")
