"""The followers' CPU budget: the share of one CPU that serving them may
take, by how busy the rest of the agent is (:class:`Budget`)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Budget"]

#: the share of one CPU the followers may take: while the rest of the agent
#: is busy, and while it is not
SHARE_MIN = 0.02
SHARE_MAX = 0.5
#: the followers may save up this many seconds of their share (and spend
#: it at once): their share now times this (so a busy ingest cuts it at once)
BURST_S = 0.5
#: CPUs the rest of the agent uses (per second) up to which the followers
#: get SHARE_MAX, and from which SHARE_MIN
BUSY_LOW = 0.2
BUSY_HIGH = 0.6
#: records/s the spool grows by up to which the followers get SHARE_MAX,
#: and from which SHARE_MIN
RATE_LOW = 20_000
RATE_HIGH = 100_000
#: how often the budget looks at its clocks
REFILL_S = 0.1
#: what one record delivered costs the followers before anything is measured
COST_GUESS_S = 20e-6


class Budget:
    """The CPU time the followers may take, as tokens (seconds).

    Tokens come at ``share`` seconds per second, up to ``share * burst``
    (seconds of the share saved up; a share that falls cuts them); the work
    of the followers is charged (:meth:`charge`, CPU time of the thread that
    did it). ``share`` follows how busy ingest is, by two measures, the
    smaller share winning:

    * the rate the spool grows at (:meth:`note_head`, from the hub's looks):
      ``share_max`` up to RATE_LOW records/s, ``share_min`` from RATE_HIGH;
    * the process's CPU time less what the followers were charged, per
      second (``busy``): ``share_max`` up to BUSY_LOW CPUs, ``share_min``
      from BUSY_HIGH.

    In between, in proportion. The agent's Python code runs one thread at
    a time (the GIL), and serving followers costs the event loop time and
    the kernel copies besides what is charged: under a heavy ingest what
    the followers take is taken from it, so they then get little; an agent
    with little to do gives them much. ``cost`` is what one record
    delivered costs them, measured (the hub turns tokens into records with it).
    """

    def __init__(self, share_min: float | None = None, share_max: float | None = None,
                 burst: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.process_time) -> None:
        self.share_min = SHARE_MIN if share_min is None else share_min
        self.share_max = SHARE_MAX if share_max is None else share_max
        self.burst = burst = BURST_S if burst is None else burst
        self._clock, self._cpu_clock = clock, cpu
        self.tokens = burst * self.share_max
        self.share = self.share_max
        self.busy = 0.0  # CPUs the rest of the agent used, per second, at the last refill
        self.cost = COST_GUESS_S
        self.spent = 0.0  # charged in all (seconds)
        self._t = clock()
        self._cpu = cpu()
        self._charged = 0.0  # since the last refill
        self._win_s = 0.0
        self._win_records = 0
        self.rate = 0.0  # positions per second the spool grew by, at the last refill
        self._head: int | None = None  # the newest position noted, and where the last refill was
        self._head_at_refill: int | None = None

    def refill(self) -> None:
        now = self._clock()
        elapsed = now - self._t
        if elapsed < REFILL_S:
            return
        cpu = self._cpu_clock()
        self.busy = busy = max(0.0, cpu - self._cpu - self._charged) / elapsed
        if self._head is not None and self._head_at_refill is not None:
            self.rate = max(0, self._head - self._head_at_refill) / elapsed
        self._head_at_refill = self._head
        share = min(self._scaled(busy, BUSY_LOW, BUSY_HIGH), self._scaled(self.rate, RATE_LOW, RATE_HIGH))
        # over budget, tokens come at the new share; from the start of the window
        self.share = share
        self.tokens = min(self.burst * share, self.tokens + share * elapsed)
        self._t, self._cpu, self._charged = now, cpu, 0.0

    def _scaled(self, load: float, low: float, high: float) -> float:
        if load <= low:
            return self.share_max
        if load >= high:
            return self.share_min
        return self.share_max - (self.share_max - self.share_min) * (load - low) / (high - low)

    def note_head(self, head: int) -> None:
        """The spool's newest position, as a look saw it."""
        self._head = head

    def charge(self, seconds: float, records: int = 0) -> None:
        """``seconds`` of CPU spent for the followers, ``records`` delivered by it."""
        seconds = max(0.0, seconds)
        self.tokens -= seconds
        self._charged += seconds
        self.spent += seconds
        self._win_s += seconds
        self._win_records += records
        if self._win_records >= 2000:
            self.cost = 0.5 * self.cost + 0.5 * (self._win_s / self._win_records)
            self._win_s, self._win_records = 0.0, 0

    def records_allowed(self) -> int:
        """Records the followers may be given now (0: over budget)."""
        self.refill()
        if self.tokens <= 0:
            return 0
        return max(1, int(self.tokens / max(self.cost, 1e-7)))
