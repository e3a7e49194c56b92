"""Log patterns: the header of a line, token masks, and an online template miner.

Pure (no I/O, no clock but the current year for year-less timestamps):

* ``split_header(line)`` finds a line's own timestamp, level and component
  and where its message starts (``hostlog.patterns.header``);
* ``mask(message)`` replaces values (numbers, IPs, paths, UUIDs ...) by typed
  placeholders (``hostlog.patterns.masks``);
* ``Miner`` files each message of an app under a pattern with a stable id,
  and saves and restores its state as bytes (``hostlog.patterns.drain``).

docs/patterns.md describes them and how accurate the miner is.
"""

from hostlog.patterns.drain import WILDCARD, Match, Miner, PatternStateError, Settings, pattern_id
from hostlog.patterns.header import LEVELS, NO_HEADER, Header, split_header
from hostlog.patterns.masks import MASKS_VERSION, PLACEHOLDERS, mask

__all__ = [
    "LEVELS", "MASKS_VERSION", "NO_HEADER", "PLACEHOLDERS", "WILDCARD", "Header", "Match", "Miner",
    "PatternStateError", "Settings", "mask", "pattern_id", "split_header",
]
