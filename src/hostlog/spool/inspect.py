"""``hostlog spool verify`` and ``hostlog spool stats``."""

from __future__ import annotations

from dataclasses import dataclass, field

from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import Damage


@dataclass
class SpoolStats:
    segments: int = 0
    sealed: int = 0
    frames: int = 0
    records: int = 0
    bytes_on_disk: int = 0
    chunk_bytes: int = 0  # columnar chunks before LZ4 + AES-GCM
    payload_bytes: int = 0  # frames as stored
    first_seq: int | None = None
    last_seq: int | None = None
    ts_min: int | None = None
    ts_max: int | None = None
    damage: list[Damage] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (expected seq, found seq)

    @property
    def compression_ratio(self) -> float:
        return self.chunk_bytes / self.payload_bytes if self.payload_bytes else 0.0


def collect_stats(reader: SpoolReader, *, verify: bool = False) -> SpoolStats:
    """Walk every segment's index (and, with ``verify``, decrypt and decode
    every frame); damage and sequence gaps are collected, never raised."""
    stats = SpoolStats()
    expected: int | None = None
    paths = reader.segment_paths()
    for path in paths:
        seg = reader.open_segment(path)
        if seg is None:
            continue
        with seg:
            stats.segments += 1
            stats.bytes_on_disk += seg.size()
            index = seg.index()
            stats.sealed += index.sealed
            stats.damage.extend(index.damage)
            if not index.sealed and path != paths[-1]:
                # only the newest segment is ever unsealed: rotation seals
                # (footer, fsync) before it creates the next one
                stats.damage.append(Damage(path.name, index.end,
                                           "segment has no intact footer"))
            for entry in index.entries:
                if verify:
                    result = seg.read_frame(entry)
                    if isinstance(result, Damage):
                        stats.damage.append(result)
                        expected = entry.first_seq + entry.count  # reported once, not again as a gap
                        continue
                if expected is not None and entry.first_seq != expected:
                    stats.gaps.append((expected, entry.first_seq))
                expected = entry.first_seq + entry.count
                stats.frames += 1
                stats.records += entry.count
                stats.chunk_bytes += entry.chunk_len
                stats.payload_bytes += entry.size
                if stats.first_seq is None:
                    stats.first_seq = entry.first_seq
                stats.last_seq = entry.last_seq
                stats.ts_min = entry.ts_min if stats.ts_min is None else min(stats.ts_min, entry.ts_min)
                stats.ts_max = entry.ts_max if stats.ts_max is None else max(stats.ts_max, entry.ts_max)
    stats.damage.extend(d for d in reader.damage if d not in stats.damage)
    return stats
