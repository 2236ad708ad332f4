"""An HTTP client for the streamfit API: what the CLI's status, models and control commands call.

It talks to the Serve app over HTTP only, so the same commands work against a remote cluster
(``--url``); the admin token comes from ``STREAMFIT_ADMIN_TOKEN``.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TOKEN_ENV = "STREAMFIT_ADMIN_TOKEN"


class ControlError(RuntimeError):
    """The API refused a request or could not be reached; the message says why."""


class ControlClient:
    """Calls the streamfit HTTP API."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, admin: bool = False, **kwargs: Any) -> Any:
        headers = {}
        if admin:
            if not self.token:
                raise ControlError(f"this command needs the admin token: set {TOKEN_ENV}")
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            r = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=self.timeout_s, **kwargs)
        except httpx.HTTPError as err:
            raise ControlError(f"cannot reach {self.url}: {err}") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ControlError(f"{method} {path}: HTTP {r.status_code}: {detail}")
        return r.json()

    def traffic(self) -> dict[str, Any]:
        """GET /traffic."""
        return self._request("GET", "/traffic")

    def monitor(self) -> dict[str, Any]:
        """GET /monitor."""
        return self._request("GET", "/monitor")

    def models(self) -> dict[str, Any]:
        """GET /models."""
        return self._request("GET", "/models")

    def retrain(self, reason: str = "manual") -> dict[str, Any]:
        """POST /retrain (admin)."""
        return self._request("POST", "/retrain", admin=True, json={"reason": reason})

    def set_traffic(self, blue: int | None = None, green: int | None = None,
                    shadow_share: float | None = None) -> dict[str, Any]:
        """PUT /traffic (admin)."""
        body = {k: v for k, v in (("blue", blue), ("green", green), ("shadow_share", shadow_share)) if v is not None}
        return self._request("PUT", "/traffic", admin=True, json=body)

    def rollout(self, version: int | None = None, steps: list[int] | None = None, bake_s: float | None = None,
                mode: str | None = None, reason: str = "") -> dict[str, Any]:
        """POST /rollout (admin)."""
        body = {k: v for k, v in (("version", version), ("steps", steps), ("bake_s", bake_s), ("mode", mode))
                if v is not None}
        body["reason"] = reason
        return self._request("POST", "/rollout", admin=True, json=body)

    def promote(self) -> dict[str, Any]:
        """POST /rollout/promote (admin)."""
        return self._request("POST", "/rollout/promote", admin=True)

    def abort(self, reason: str = "") -> dict[str, Any]:
        """POST /rollout/abort (admin)."""
        return self._request("POST", "/rollout/abort", admin=True, json={"reason": reason})

    def rollback(self, reason: str = "") -> dict[str, Any]:
        """POST /rollback (admin)."""
        return self._request("POST", "/rollback", admin=True, json={"reason": reason})
