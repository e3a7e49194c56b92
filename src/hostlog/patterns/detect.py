"""Anomalies in a stream of mined records: what is new, what is suddenly
frequent, what stopped, where errors burst.

Sans-IO and clock-free: the caller hands over records (app, pattern id,
template, severity) with the time it received them, and calls :meth:`Detector.tick`
with the time now; both return the anomalies found, each once. Four kinds:

* ``new_pattern``: a template never seen before for its app, once the app has
  been watched for ``warmup`` (before that every template is new);
* ``spike``: a template's count in the current window reaches ``factor`` times
  its moving baseline (an exponentially weighted mean of its counts in past
  windows, over at least ``baseline_windows`` of them) and at least ``min_count``;
  said as soon as the count gets there, not at the window's end;
* ``stopped``: a template seen in every one of the last ``baseline_windows``
  windows (at least ``min_heartbeat`` a window on average) and then in none for
  ``silent_windows`` windows: a heartbeat that stopped;
* ``error_burst``: err-or-worse records (severity <= 3) of an app in the
  current window reach ``factor`` times their baseline (over at least
  ``baseline_windows``) and at least ``min_errors``.

No alert storm: one anomaly per (kind, app, pattern) per ``cooldown``. Memory
is bounded by the apps and patterns the miner keeps (``max_patterns`` per
app, the least recently seen pattern goes first) and ``max_apps``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["KINDS", "Anomaly", "DetectSettings", "Detector"]

KINDS: Final = ("new_pattern", "spike", "stopped", "error_burst")
_S: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class DetectSettings:
    window: float = 60.0  # seconds a count is over
    warmup: float = 600.0  # seconds an app is watched before a new template is an anomaly
    factor: float = 10.0  # how far above the baseline a count must go
    min_count: int = 20  # ... and at least this many in a window (spike)
    min_errors: int = 20  # ... err-or-worse records in a window (error burst)
    baseline_windows: int = 5  # closed windows before a baseline counts
    min_heartbeat: float = 1.0  # mean count a window for a template to be a heartbeat
    silent_windows: int = 2  # empty windows after which a heartbeat has stopped
    cooldown: float = 600.0  # seconds between two anomalies of one kind, app and pattern
    max_patterns: int = 1000  # per app
    max_apps: int = 1000

    def __post_init__(self) -> None:
        if not (self.window > 0 and self.warmup >= 0 and self.factor > 1 and self.min_count >= 1
                and self.min_errors >= 1 and self.baseline_windows >= 1 and self.min_heartbeat > 0
                and self.silent_windows >= 1 and self.cooldown >= 0 and self.max_patterns >= 1
                and self.max_apps >= 1):
            raise ValueError("detection settings out of range")


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One anomaly: what, where, the window and the figures, and why (``explanation``)."""

    kind: str
    app: str
    pattern_id: str  # "" for an error burst
    template: str
    window_start_ns: int
    window_end_ns: int
    count: int  # in the window
    baseline: float  # the moving mean a window
    explanation: str
    received_ns: int  # when the record that made it an anomaly was received (or the tick)


@dataclass(slots=True)
class _Series:
    """Counts a window of one template (or of an app's errors)."""

    template: str = ""
    count: int = 0  # in the current window
    mean: float = 0.0  # EWMA of past windows' counts
    windows: int = 0  # past windows counted
    seen_run: int = 0  # past windows in a row with a count
    silent: int = 0  # past windows in a row without
    alerted: bool = False  # a spike said in this window
    seen_mean: float = 0.0  # the mean after the last window with a count


@dataclass(slots=True)
class _App:
    first_ns: int
    patterns: OrderedDict[str, _Series] = field(default_factory=OrderedDict)
    errors: _Series = field(default_factory=_Series)


class Detector:
    """See the module's docstring. Not thread-safe."""

    def __init__(self, settings: DetectSettings | None = None) -> None:
        self.settings = s = settings or DetectSettings()
        self._window_ns = int(s.window * _S)
        self._alpha = 2.0 / (s.baseline_windows + 1)
        self._apps: OrderedDict[str, _App] = OrderedDict()
        self._window_start: int | None = None
        self._last_alert: dict[tuple[str, str, str], int] = {}
        self.counts = dict.fromkeys(KINDS, 0)

    # -- input ----------------------------------------------------------------------
    def observe(self, rows: Iterable[tuple[str, str, str, int]], now_ns: int) -> list[Anomaly]:
        """Records ``(app, pattern id, template, severity)`` received at ``now_ns``."""
        out = self.tick(now_ns)
        s = self.settings
        start = self._window_start
        assert start is not None
        warm_ns = int(s.warmup * _S)
        for app, pid, template, severity in rows:
            state = self._app(app, now_ns)
            series = state.patterns.get(pid)
            if series is None:
                series = state.patterns[pid] = _Series(template)
                if len(state.patterns) > s.max_patterns:
                    state.patterns.popitem(last=False)
                if now_ns - state.first_ns >= warm_ns:
                    self._say(out, "new_pattern", app, pid, template, series, now_ns,
                              f"a template never seen for {app} before, after "
                              f"{(now_ns - state.first_ns) / _S:.0f} s of watching it")
            else:
                state.patterns.move_to_end(pid)
                series.template = template
            series.count += 1
            if (not series.alerted and series.windows >= s.baseline_windows
                    and series.count >= s.min_count and series.count >= s.factor * max(series.mean, 1.0)):
                series.alerted = True
                self._say(out, "spike", app, pid, template, series, now_ns,
                          f"{series.count} in the window, {series.count / max(series.mean, 1e-9):.1f} "
                          f"times the usual {series.mean:.1f}")
            if severity <= 3:
                errors = state.errors
                errors.count += 1
                if (not errors.alerted and errors.windows >= s.baseline_windows
                        and errors.count >= s.min_errors
                        and errors.count >= s.factor * max(errors.mean, 1.0)):
                    errors.alerted = True
                    self._say(out, "error_burst", app, "", "", errors, now_ns,
                              f"{errors.count} err-or-worse records of {app} in the window, "
                              f"usually {errors.mean:.1f}")
        return out

    def tick(self, now_ns: int) -> list[Anomaly]:
        """Close the windows that ended by ``now_ns``; the heartbeats that stopped."""
        out: list[Anomaly] = []
        if self._window_start is None:
            self._window_start = now_ns
            return out
        while now_ns >= self._window_start + self._window_ns:
            self._close(out, self._window_start + self._window_ns)
            self._window_start += self._window_ns
            if now_ns >= self._window_start + 100 * self._window_ns:  # a long gap: jump over it
                self._window_start = now_ns - (now_ns - self._window_start) % self._window_ns
        return out

    # -- inside -----------------------------------------------------------------------
    def _app(self, app: str, now_ns: int) -> _App:
        state = self._apps.get(app)
        if state is None:
            state = self._apps[app] = _App(now_ns)
            if len(self._apps) > self.settings.max_apps:
                self._apps.popitem(last=False)
        else:
            self._apps.move_to_end(app)
        return state

    def _close(self, out: list[Anomaly], end_ns: int) -> None:
        s, alpha = self.settings, self._alpha
        for app, state in self._apps.items():
            for pid, series in state.patterns.items():
                if series.count:
                    series.seen_run += 1
                    series.silent = 0
                else:
                    if (series.seen_run >= s.baseline_windows and series.seen_mean >= s.min_heartbeat
                            and series.silent + 1 == s.silent_windows):
                        self._say(out, "stopped", app, pid, series.template, series, end_ns,
                                  f"seen in each of {series.seen_run} windows (about "
                                  f"{series.seen_mean:.1f} a window), then in none for {s.silent_windows}",
                                  window_end=end_ns, baseline=series.seen_mean)
                    series.silent += 1
                    if series.silent >= s.silent_windows:
                        series.seen_run = 0
                if series.count:
                    self._fold(series, alpha)
                    series.seen_mean = series.mean
                else:
                    self._fold(series, alpha)
            self._fold(state.errors, alpha)

    @staticmethod
    def _fold(series: _Series, alpha: float) -> None:
        series.mean = series.count if not series.windows else (
            alpha * series.count + (1 - alpha) * series.mean)
        series.windows += 1
        series.count = 0
        series.alerted = False

    def _say(self, out: list[Anomaly], kind: str, app: str, pid: str, template: str, series: _Series,
             now_ns: int, explanation: str, window_end: int | None = None,
             baseline: float | None = None) -> None:
        key = (kind, app, pid)
        last = self._last_alert.get(key)
        if last is not None and now_ns - last < self.settings.cooldown * _S:
            return
        self._last_alert[key] = now_ns
        if len(self._last_alert) > 4 * self.settings.max_apps * self.settings.max_patterns:
            self._last_alert.clear()  # (a bound: cool-downs forgotten, never memory)
        start = self._window_start or now_ns
        end = window_end if window_end is not None else start + self._window_ns
        if window_end is not None:
            start = end - self.settings.silent_windows * self._window_ns
        self.counts[kind] += 1
        mean = series.mean if baseline is None else baseline
        out.append(Anomaly(kind, app, pid, template, start, end, series.count, round(mean, 3),
                           explanation, now_ns))
