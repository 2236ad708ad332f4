"""An HTTP client for the streamfit API: what the CLI's status, models and control commands call.

It talks to the Serve app over HTTP only, so the same commands work against a remote cluster
(``--url``). The admin token comes from ``STREAMFIT_ADMIN_TOKEN`` (or the file ``STREAMFIT_ADMIN_TOKEN_FILE``
names), else from the file ``streamfit run``/``demo`` generated it into (``streamfit.tokens.admin_token_path``),
so the CLI works against a local demo out of the box; reads send ``STREAMFIT_READ_TOKEN`` if set, else the
admin token (admin includes read). Answers are parsed once into the typed status models of ``streamfit.status``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from streamfit.status import MonitorReport, RefitResult, Rollout, TrafficStatus
from streamfit.tokens import admin_token_path, read_admin_token_file, token_from_env

M = TypeVar("M", bound=BaseModel)
DEFAULT_URL = "http://127.0.0.1:8000"
TOKEN_ENV = "STREAMFIT_ADMIN_TOKEN"


class ControlError(RuntimeError):
    """The API refused a request or could not be reached; the message says why."""


def _parse(model: type[M], body: Any) -> M:
    """The answer as ``model``; an answer of another shape (another streamfit version?) is a ControlError."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise ControlError(f"unexpected answer from the API: {err}") from None


class ControlClient:
    """Calls the streamfit HTTP API."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else (token_from_env("admin") or read_admin_token_file())
        self.read_token = token_from_env("read") or self.token
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, admin: bool = False, **kwargs: Any) -> Any:
        headers = {}
        token = self.token if admin else self.read_token
        if admin and not token:
            raise ControlError(f"this command needs the admin token: set {TOKEN_ENV} (or {TOKEN_ENV}_FILE); "
                               f"a local streamfit run/demo writes it to {admin_token_path()}")
        if token:
            headers["Authorization"] = f"Bearer {token}"
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

    def traffic(self) -> TrafficStatus:
        """GET /traffic."""
        return _parse(TrafficStatus, self._request("GET", "/traffic"))

    def monitor(self) -> MonitorReport:
        """GET /monitor."""
        return _parse(MonitorReport, self._request("GET", "/monitor"))

    def models(self) -> dict[str, Any]:
        """GET /models."""
        return self._request("GET", "/models")

    def retrain(self, reason: str = "manual") -> RefitResult:
        """POST /retrain (admin)."""
        return _parse(RefitResult, self._request("POST", "/retrain", admin=True, json={"reason": reason}))

    def set_traffic(self, blue: int | None = None, green: int | None = None,
                    shadow_share: float | None = None) -> TrafficStatus:
        """PUT /traffic (admin): the new serving state."""
        body = {k: v for k, v in (("blue", blue), ("green", green), ("shadow_share", shadow_share)) if v is not None}
        return _parse(TrafficStatus, self._request("PUT", "/traffic", admin=True, json=body))

    def rollout(self, version: int | None = None, steps: list[int] | None = None, bake_s: float | None = None,
                mode: str | None = None, reason: str = "") -> Rollout:
        """POST /rollout (admin)."""
        body = {k: v for k, v in (("version", version), ("steps", steps), ("bake_s", bake_s), ("mode", mode))
                if v is not None}
        body["reason"] = reason
        return _parse(Rollout, self._request("POST", "/rollout", admin=True, json=body))

    def promote(self) -> Rollout:
        """POST /rollout/promote (admin)."""
        return _parse(Rollout, self._request("POST", "/rollout/promote", admin=True))

    def abort(self, reason: str = "") -> Rollout:
        """POST /rollout/abort (admin)."""
        return _parse(Rollout, self._request("POST", "/rollout/abort", admin=True, json={"reason": reason}))

    def rollback(self, reason: str = "") -> TrafficStatus:
        """POST /rollback (admin): the new serving state."""
        return _parse(TrafficStatus, self._request("POST", "/rollback", admin=True, json={"reason": reason}))
