"""Priority colours of the ``-o`` layouts (hostlog.query.output), as
journalctl 252 prints them on a terminal."""

from __future__ import annotations

# systemd terminal-util.h (v252) colours, applied by get_log_colors().
ANSI_HIGHLIGHT_RED = b"\x1b[0;1;31m"
ANSI_HIGHLIGHT_YELLOW = b"\x1b[0;1;38;5;185m"
ANSI_HIGHLIGHT = b"\x1b[0;1;39m"
ANSI_GREY = b"\x1b[0;38;5;245m"
ANSI_GREEN = b"\x1b[0;32m"
ANSI_BLUE = b"\x1b[0;34m"
ANSI_UNDERLINE = b"\x1b[0;4m"
ANSI_NORMAL = b"\x1b[0m"


def log_colors(priority: int) -> tuple[bytes, bytes, bytes]:
    """get_log_colors(): (on, off, highlight) for a syslog priority."""
    if priority <= 3:  # err and worse
        return ANSI_HIGHLIGHT_RED, ANSI_NORMAL, ANSI_HIGHLIGHT
    if priority <= 4:  # warning
        return ANSI_HIGHLIGHT_YELLOW, ANSI_NORMAL, ANSI_HIGHLIGHT
    if priority <= 5:  # notice
        return ANSI_HIGHLIGHT, ANSI_NORMAL, ANSI_HIGHLIGHT_RED
    if priority >= 7:  # debug
        return ANSI_GREY, ANSI_NORMAL, ANSI_HIGHLIGHT_RED
    return b"", b"", ANSI_HIGHLIGHT_RED


def _priority(value: bytes | None) -> int:
    # logs-show.c: exactly one digit 0-7, otherwise LOG_INFO.
    if value is not None and len(value) == 1 and 48 <= value[0] <= 55:
        return value[0] - 48
    return 6
