"""The syslog output's RFC 5424 format: what hostlog's own syslog parser reads
back from it is the record (host, app, pid, severity, facility, SD, fields,
message), and the identity travels in hostlog's SD element."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.collectors.syslog.parse import parse_message
from hostlog.forward.syslog_out import SD_ID, format_record, frame
from hostlog.record import Record

names = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='="] .'),
                min_size=1, max_size=20)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@st.composite
def records(draw) -> Record:
    fields = draw(st.dictionaries(names.map(lambda n: "f" + n), values, max_size=4))
    sd = draw(st.dictionaries(names, values, max_size=3))
    fields.update({f"sd.example@32473.{k}": v for k, v in sd.items()})
    if draw(st.booleans()):
        fields["msgid"] = draw(names)
    return Record(ts=draw(st.integers(1_000_000_000_000_000_000, 2_000_000_000_000_000_000)),
                  msg=draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)),
                  host=draw(st.sampled_from(["web-1", "h.example.com"])), source="syslog",
                  app=draw(st.sampled_from(["shop", "nginx"])), pid=draw(st.sampled_from([None, 1, 65535])),
                  severity=draw(st.integers(0, 7)), facility=draw(st.sampled_from([None, 0, 4, 23])),
                  fields=fields, origin="a" * 32, seq=draw(st.integers(1, 10**12)))


@settings(max_examples=300, deadline=None)
@given(records())
def test_hostlog_reads_back_what_it_wrote(r: Record) -> None:
    back = parse_message(format_record(r), received_ns=0)
    assert (back.host, back.app, back.pid, back.severity) == (r.host, r.app, r.pid, r.severity)
    assert back.facility == (r.facility if r.facility is not None else 1)
    assert back.ts // 1000 == r.ts // 1000  # microseconds, as RFC 5424 carries them
    assert back.msg == r.msg or (not r.msg and back.msg in ("", None))
    for key, value in r.fields.items():
        # a msgid MSGID cannot carry as it is ("-" is its NILVALUE) travels in our SD element
        header_msgid = key == "msgid" and value != "-" and len(value) <= 32
        want = key if key.startswith("sd.") or header_msgid else f"sd.{SD_ID}.{key}"
        assert back.fields[want] == value, (key, back.fields)
    assert back.fields[f"sd.{SD_ID}.origin"] == r.origin and back.fields[f"sd.{SD_ID}.seq"] == str(r.seq)


def test_octet_counting_and_nil_values() -> None:
    r = Record(ts=1_764_756_000_000_000_000, msg="", host="", app="", severity=9, facility=99,
               origin="o", seq=7)
    line = format_record(r)
    assert line == b'<14>1 2025-12-03T10:00:00.000000Z - - - - [hostlog@32473 origin="o" seq="7"]'
    assert frame([line, b"x"]) == b"%d %s1 x" % (len(line), line)
