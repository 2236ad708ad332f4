"""What each Router replica (or slot replica) last reported: held versions, verification, request figures.

Example:
    >>> t = ReplicaTracker(ttl_s=5.0)
    >>> t.report("r1", {"held": {"blue": 3}}, now=100.0)
    >>> t.all_hold("blue", 3, now=101.0), t.all_hold("blue", 3, now=106.0)  # silent replicas drop out
    (True, False)
"""

from __future__ import annotations

from typing import Any

from streamfit.names import SLOTS
from streamfit.request_stats import add, empty_stats


class ReplicaTracker:
    """What each Router replica reported holding (and its request figures), and when."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self.reports: dict[str, tuple[float, dict[str, Any]]] = {}

    def report(self, replica_id: str, report: dict[str, Any], now: float) -> None:
        """Record a replica's report: ``held`` versions, ``verified`` flags, per-slot ``stats``."""
        self.reports[replica_id] = (now, report)

    def alive(self, now: float) -> dict[str, dict[str, Any]]:
        """Reports of replicas heard from within the TTL."""
        return {r: rep for r, (t, rep) in self.reports.items() if now - t <= self.ttl_s}

    def all_hold(self, slot: str, version: int, now: float) -> bool:
        """Some live replica serves ``slot`` and every one that does holds ``version`` in it
        (Router replicas in the default mode; the slot's own replicas with isolated slots)."""
        serving = [rep for rep in self.alive(now).values() if slot in rep["held"]]
        return bool(serving) and all(rep["held"][slot] == version for rep in serving)

    def load_failure(self, slot: str, version: int, now: float) -> str | None:
        """Why some live replica could not load ``version`` into ``slot`` (None if none failed)."""
        for rid, rep in self.alive(now).items():
            failed = rep.get("load_failures", {}).get(slot)
            if failed and failed.get("version") == version:
                return f"replica {rid}: {failed['error']}"
        return None

    def verification(self, slot: str, version: int, now: float) -> tuple[bool, str]:
        """(all replicas verified the version, the first failure message)."""
        for rid, rep in self.alive(now).items():
            v = rep.get("verified", {}).get(slot)
            if v is not None and v is not True and rep["held"].get(slot) == version:
                return False, f"replica {rid}: {v}"
        return True, ""

    def stats(self, now: float) -> dict[str, dict[str, Any]]:
        """Per-slot figures summed over live replicas (keyed slot -> figures)."""
        total = {s: empty_stats() for s in SLOTS}
        for rep in self.alive(now).values():
            for s in SLOTS:
                if s in rep.get("stats", {}):
                    total[s] = add(total[s], rep["stats"][s])
        return total

    def view(self, now: float) -> dict[str, Any]:
        """The replicas part of the controller's status: held versions, per-slot figures, shadow comparisons."""
        alive = self.alive(now)
        shadow = {"compared": 0, "agreed": 0, "judged": 0, "judge_errors": 0}  # judged: rows scored for pairing
        for rep in alive.values():
            for k in shadow:
                shadow[k] += rep.get("shadow", {}).get(k, 0)
        # The revision each replica has applied: a client can wait until every one routes by the latest weights.
        revisions = {r: int(rep["revision"]) for r, rep in alive.items() if "revision" in rep}
        return {"replicas": {r: rep["held"] for r, rep in alive.items()}, "replica_revisions": revisions,
                "slot_stats": self.stats(now), "shadow": shadow}
