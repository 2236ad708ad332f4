"""When the monitor asks the trainer for a refit: the drift alarm policy, with its cooldown.

A drift alarm stays raised until the live version changes, and the monitor samples every few
seconds: without a cooldown every sample would ask for another refit. ``RefitAlarm`` answers
"ask now?" for a clock the caller passes, and keeps the requests it made (the monitor's report).

Example:
    >>> from streamfit.config import MonitorConfig
    >>> alarm = RefitAlarm(MonitorConfig(alarm_cooldown_s=30))
    >>> alarm.due(1000.0, "x1 PSI 3.10 > 0.25"), alarm.due(1010.0, "x1 PSI 3.20 > 0.25")
    ('drift alarm: x1 PSI 3.10 > 0.25', None)
    >>> alarm.due(1031.0, None), alarm.due(1031.0, "x1 PSI 3.20 > 0.25")
    (None, 'drift alarm: x1 PSI 3.20 > 0.25')
"""

from __future__ import annotations

import copy
from typing import Any

from streamfit.config import MonitorConfig


class RefitAlarm:
    """Ask for a refit while a drift alarm is raised, if configured, at most once per cooldown."""

    def __init__(self, cfg: MonitorConfig) -> None:
        self.enabled = cfg.alarm_triggers_refit
        self.cooldown_s = cfg.alarm_cooldown_s
        self.last_request: float | None = None
        self.requests: list[dict[str, Any]] = []

    def snapshot(self) -> dict[str, Any]:
        """When the last request was made (the cooldown runs from it) and the requests made."""
        return {"last_request": self.last_request, "requests": copy.deepcopy(self.requests)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the cooldown's start and the requests with ``snap``'s."""
        last = snap["last_request"]
        self.last_request = None if last is None else float(last)
        self.requests = copy.deepcopy(list(snap["requests"]))

    def due(self, now: float, alarm: str | None) -> str | None:
        """The reason to send with a refit request at ``now`` (its cooldown starts), or None."""
        if not alarm or not self.enabled:
            return None
        if self.last_request is not None and now - self.last_request <= self.cooldown_s:
            return None
        self.last_request = now
        return f"drift alarm: {alarm}"

    def answered(self, now: float, alarm: str, version: int | None) -> None:
        """The trainer answered the request made at ``now`` with ``version`` (None: no new version)."""
        self.requests.append({"t": now, "alarm": alarm, "version": version})
