"""``-o MODE``: one record as journalctl 252 prints one entry.

The layouts follow systemd's src/shared/logs-show.c and were checked byte for
byte against the real journalctl 252 output over the fixture in
shared/corpora/journald (tests/unit/query/test_output.py):

* ``short`` ``Nov 14 22:13:20 host ident[pid]: message``; ``short-precise`` adds
  ``.ffffff``; ``short-iso`` is ``2023-11-14T22:13:20+0000`` (252 prints the
  offset without a colon); ``short-iso-precise``; ``short-full``
  ``Tue 2023-11-14 22:13:20 UTC``; ``short-unix`` ``1700000000.123456``.
  The identifier is SYSLOG_IDENTIFIER, else _COMM, else ``unknown``; the pid is
  _PID, else SYSLOG_PID. Continuation lines of a multi-line message are
  indented to the message column (counted in bytes). Unless ``--all``: TABs
  become 8 spaces, ANSI colour sequences are removed, and a message that is
  still not printable UTF-8 is shown as ``[18B blob data]``. With ``--all`` the
  raw bytes are printed, each line up to its first NUL (journalctl uses
  ``%.*s``). The displayed time prefers _SOURCE_REALTIME_TIMESTAMP.
* ``json`` one object per line, every value a string; values that are not
  printable UTF-8 are arrays of byte numbers; a repeated field is an array;
  ``NAME=value`` of 4096 bytes or more is ``null`` unless ``--all``.
  ``json-pretty`` (TAB indentation, ``" : "``), ``json-sse`` (``data: …``),
  ``json-seq`` (RFC 7464: RS before, LF after each object).
* ``cat`` the raw MESSAGE bytes; ``verbose`` the full entry; ``export`` the
  Journal Export Format.

``__CURSOR``, ``__REALTIME_TIMESTAMP``, ``__MONOTONIC_TIMESTAMP`` and
``_BOOT_ID`` are printed by json/export whatever ``--output-fields`` says, as by
journalctl; ``--output-fields`` limits everything else in json, export, verbose
and cat. Not supported: ``short-monotonic``, ``short-delta``, ``with-unit``
(records from non-journal sources have no monotonic clock or unit).

Speed: the short layouts have a fast path for the common record (one
printable line, nothing raw in its journal view): :meth:`Formatter.fast_path`
for Records, and :meth:`Formatter.short_columns`, which prints straight from
a chunk's columns without building Records. Both give the same bytes as
:meth:`Formatter.format` (tests/unit/query/test_columns.py checks that).

Code: this module holds :class:`Formatter`, which puts together the layouts
of ``short.py`` (short family, timestamps and zones), ``json.py``
(json family) and ``entry.py`` (cat, verbose, export), with
``colors.py`` (priority colours) and ``common.py`` (what they
share).
"""

from __future__ import annotations

from hostlog.query.modes import MODES
from hostlog.query.output.common import format_bytes
from hostlog.query.output.entry import EntryLayouts
from hostlog.query.output.json import JsonLayouts
from hostlog.query.output.short import ShortLayouts
from hostlog.record import Record

__all__ = ["MODES", "Formatter", "format_bytes"]


class Formatter(ShortLayouts, JsonLayouts, EntryLayouts):
    """Formats records for one ``-o`` mode.

    ``utc``: times in UTC instead of local time (``--utc``). ``output_fields``:
    ``--output-fields``. ``all_fields``: ``--all``. ``color``: priority colours
    as on a terminal (err and worse red, warning yellow, notice bold, debug
    grey; the message only).
    """

    def __init__(self, mode: str, *, utc: bool = False, output_fields: list[str] | None = None,
                 all_fields: bool = False, color: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown output mode {mode!r}; one of: {', '.join(MODES)}")
        self.mode = mode
        self.utc = utc
        self.output_fields = frozenset(output_fields) if output_fields else None
        self._cat_fields = list(dict.fromkeys(output_fields)) if output_fields else ["MESSAGE"]
        self.all_fields = all_fields
        self.color = color
        self._stamps: dict[int, tuple[str | None, str]] = {}
        self._printable_cache: dict[str, bool] = {}
        self._who: dict[tuple[str, str], str] = {}
        self._second_stamps: dict[int, str] = {}
        # modes whose stamp shows the microseconds: not cached per second
        self._precise = mode in ("short-precise", "short-iso-precise", "short-unix")
        if mode.startswith("short"):
            self._format = self._short
        elif mode.startswith("json"):
            self._format = self._json
        else:
            self._format = {"cat": self._cat, "verbose": self._verbose,
                            "export": self._export}[mode]

    def fast_path(self):  # -> Callable[[Record], bytes | None] | None
        """A formatter for the common record that returns None for any other
        (for which :meth:`format` is then called), or None if this mode has
        none. The same bytes as :meth:`format`, with less work."""
        if self.mode.startswith("short") and not self.color and not self.all_fields:
            return self._short_plain
        return None

    def format(self, record: Record, *, highlight: tuple[int, int] | None = None) -> bytes:
        """The bytes journalctl would print for this record (may be empty).

        ``highlight``: a (start, end) byte span of the message to highlight
        (``-g``) when colours are on; honoured on the message's first line.
        """
        return self._format(record, highlight)
