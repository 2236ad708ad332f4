"""Config of who may do what on the HTTP API: the scopes served without a token, and what plain scoring needs.

Tokens themselves never live in the config: they come from the environment or files (``streamfit.tokens``).
A scope with a token configured always needs it (or a higher scope's); a scope without one is open only
when ``open_scopes`` lists it, else nobody can use it (503).

Example:
    >>> AuthConfig().open_scopes, AuthConfig().predict_scope
    (['read'], 'none')
    >>> AuthConfig(open_scopes=["ingest", "read"]).open_scopes
    ['read', 'ingest']
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from streamfit.config.base import Strict as _Strict

SCOPES = ("read", "ingest", "admin")  # each includes the ones before it: admin ⊇ ingest ⊇ read
Scope = Literal["read", "ingest", "admin"]


class AuthConfig(_Strict):
    """Scopes of the HTTP API: ``read`` (status, models, traffic, monitor, features), ``ingest`` (``/ingest``,
    scoring with ``ingest`` or event ids), ``admin`` (traffic, rollout, rollback, retrain, slot pinning)."""

    open_scopes: list[Scope] = Field(
        default_factory=lambda: ["read"], description="scopes served without a token while none is configured "
        "for them (read: nothing it answers changes state, and a browser's status page sends no token)")
    predict_scope: Literal["none", "read"] = Field(
        "none", description="what plain POST /predict (no event ids, no ingest, no pin) needs: none (open, like "
        "most model servers behind their network or gateway) or the read scope")
    allow_open_on_network: bool = Field(
        False, description="streamfit run may serve an open ingest or admin scope on a cluster (--address) or a "
        "non-loopback serving.host (also: --allow-open-scopes)")

    @field_validator("open_scopes")
    @classmethod
    def _ordered(cls, scopes: list[str]) -> list[str]:
        return [s for s in SCOPES if s in scopes]
