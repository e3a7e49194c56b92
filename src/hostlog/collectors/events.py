"""What collectors count: named events, one declaration.

A collector counts with ``context.count(self.name, Counted.DROPPED, n)``;
the counts are kept by ``(collector name, event)`` in
``CollectorContext.counters``, never as strings to be parsed back. This
module says what each event means and which of them are records lost
(:data:`LOSSES`); the metrics (``agent/metrics.py``) turn them into
``hostlog_collector_events_total{collector,event}`` and
``hostlog_records_dropped_total{collector}``, and nothing else needs to
know their names.
"""

from __future__ import annotations

import enum

__all__ = ["LOSSES", "Counted"]


class Counted(enum.Enum):
    """An event a collector counts; the value is its name in metrics."""

    RECORDS = "records"  # records handed to the sink
    BYTES = "bytes"  # bytes read (files)
    DROPPED = "dropped"  # records not handed on: a full queue, the kernel's drops on a UDP socket
    RATE_LIMITED = "rate_limited"  # records the rate limit suppressed (and said so)
    READ_ERRORS = "read_errors"  # reads that failed (journald, files)
    UNREADABLE = "unreadable"  # journald entries that could not be read
    CURSOR_LOST = "cursor_lost"  # journald's checkpoint cursor not found: started over
    ROTATIONS = "rotations"  # files rotated away under the tailer
    TRUNCATIONS = "truncations"  # files truncated (copytruncate)
    FILES_OPENED = "files_opened"
    LOST_FILES = "lost_files"  # files gone before they were read to their end
    CONNECTIONS = "connections"  # client connections accepted (forward)
    AUTH_FAILED = "auth_failed"  # clients that failed the handshake (forward)
    INCOMPLETE = "incomplete"  # connections closed in the middle of a message (forward)
    ACKS = "acks"  # acknowledgements sent to clients (forward)
    SLOW_BLOCKS = "slow_blocks"  # syslog blocks the compiled splitter left to the Python framer
    SLOW_MESSAGES = "slow_messages"  # syslog messages a faster parse path left to a slower one


#: The events that are records lost, counted in hostlog_records_dropped_total.
LOSSES = frozenset({Counted.DROPPED, Counted.RATE_LIMITED})
