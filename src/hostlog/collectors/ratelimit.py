"""Token buckets for a source and for each sending host. Pure: time is passed in.

Like journald's RateLimitIntervalSec/RateLimitBurst, what is over the limit is
dropped, counted, and later said in one record ("Suppressed N messages"),
never silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_HOSTS = 10_000  # buckets kept; a flood of spoofed sources must not grow memory without end


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # bucket size
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, n: int, now: float) -> int:
        """Take up to ``n`` tokens; returns how many were granted."""
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        granted = min(n, int(self.tokens))
        self.tokens -= granted
        return granted


@dataclass
class RateLimiter:
    """Admits messages per source and per host; counts what it suppresses."""

    source: TokenBucket | None = None
    per_host: tuple[float, float] | None = None  # (rate, burst) of each host's bucket
    hosts: dict[str, TokenBucket] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)  # host -> count since last report

    def admit(self, host: str, n: int, now: float) -> int:
        """How many of ``n`` messages from ``host`` may pass now (the first ones)."""
        allowed = n
        if self.per_host is not None:
            bucket = self.hosts.get(host)
            if bucket is None:
                if len(self.hosts) >= MAX_HOSTS:
                    self.hosts.clear()  # forget idle hosts; they start with a full bucket
                bucket = self.hosts[host] = TokenBucket(*self.per_host)
            allowed = bucket.take(allowed, now)
        if self.source is not None:
            allowed = self.source.take(allowed, now)
        if allowed < n:
            self.suppressed[host] = self.suppressed.get(host, 0) + n - allowed
        return allowed

    def report(self) -> dict[str, int]:
        """What was suppressed since the last report, per host; resets the counts."""
        out, self.suppressed = self.suppressed, {}
        return out
