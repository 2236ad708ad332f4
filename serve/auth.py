"""Scoped bearer tokens of the HTTP API: which scope a request needs, whether its token grants it.

Three scopes, each including the ones before it: ``read`` ⊂ ``ingest`` ⊂ ``admin``. A scope with a
token configured (``streamfit.tokens``) needs it or a higher scope's; one without is open only when
``auth.open_scopes`` lists it, else it is off (503). No token is 401, a wrong token or one of a lower
scope 403; the answer names the scope needed. Tokens are compared in constant time, every one of them
on every request. What passes gets an actor name for the audit log (``"admin token"``, never the
value; ``"anonymous"`` on an open scope); failures are counted by scope and reason.

Example:
    >>> from fastapi import Depends, FastAPI
    >>> from fastapi.testclient import TestClient
    >>> auth = Authorizer({"admin": "s3cret"}, open_scopes=["read"])
    >>> app = FastAPI()
    >>> @app.post("/admin")
    ... async def admin(actor: str = Depends(auth.guard("admin"))) -> dict:
    ...     return {"actor": actor}
    >>> c = TestClient(app)
    >>> [c.post("/admin", headers=h).status_code for h in ({}, {"Authorization": "Bearer nope"})]
    [401, 403]
    >>> c.post("/admin", headers={"Authorization": "Bearer s3cret"}).json()
    {'actor': 'admin token'}
    >>> auth.failures()
    {'admin': {'missing': 1, 'wrong': 1}}
"""

from __future__ import annotations

import hmac
from collections import Counter
from typing import Awaitable, Callable, Iterable, Mapping

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streamfit.config import SCOPES, AuthConfig
from streamfit.tokens import scope_tokens, token_env

# auto_error=False: a missing token is our 401 naming the scope, not FastAPI's generic answer.
bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="STREAMFIT_READ_TOKEN, STREAMFIT_INGEST_TOKEN or STREAMFIT_ADMIN_TOKEN (each scope "
                                "includes the ones below it), sent as `Authorization: Bearer <token>`")
ANONYMOUS = "anonymous"


def _needs(scope: str) -> str:
    """How a scope is granted, for error messages: its variable and the higher ones."""
    return " or ".join(token_env(s) for s in SCOPES[SCOPES.index(scope):])


class Authorizer:
    """The scope rules of one API: tokens per scope, the open scopes, and counted failures."""

    def __init__(self, tokens: Mapping[str, str | None], open_scopes: Iterable[str] = (), predict_scope: str = "none",
                 on_failure: Callable[[str, str], None] | None = None) -> None:
        self.tokens = {s: t.encode() for s, t in tokens.items() if t}
        self.open_scopes = set(open_scopes)
        self.predict_scope = predict_scope
        self.on_failure = on_failure
        self._failures: Counter[tuple[str, str]] = Counter()

    @classmethod
    def from_config(cls, auth: AuthConfig, environ: Mapping[str, str] | None = None,
                    on_failure: Callable[[str, str], None] | None = None) -> "Authorizer":
        """The rules of ``auth`` with the tokens of the environment (or their files)."""
        return cls(scope_tokens(environ), auth.open_scopes, auth.predict_scope, on_failure)

    def is_open(self, scope: str) -> bool:
        """Served without a token: no token configured for it, and listed open."""
        return scope not in self.tokens and scope in self.open_scopes

    def _match(self, given: str) -> str | None:
        """The highest scope whose token is ``given``; every token is compared, in constant time."""
        found = None
        for scope in SCOPES:
            if scope in self.tokens and hmac.compare_digest(given.encode(), self.tokens[scope]):
                found = scope
        return found

    def _fail(self, scope: str, reason: str, status: int, detail: str) -> HTTPException:
        self._failures[scope, reason] += 1
        if self.on_failure is not None:
            self.on_failure(scope, reason)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return HTTPException(status_code=status, detail=detail, headers=headers)

    def check(self, scope: str, credentials: HTTPAuthorizationCredentials | None) -> str:
        """The actor name of a request needing ``scope``; raises the 401/403/503 it gets otherwise."""
        given = credentials.credentials.strip() if credentials is not None else ""
        match = self._match(given) if given else None
        if self.is_open(scope):
            return f"{match} token" if match else ANONYMOUS
        if not any(s in self.tokens for s in SCOPES[SCOPES.index(scope):]):
            raise HTTPException(status_code=503, detail=f"the {scope} scope is off: set {_needs(scope)} (or …_FILE), "
                                                        f"or list {scope} in auth.open_scopes")
        if not given:
            raise self._fail(scope, "missing", 401, f"this needs the {scope} scope: send Authorization: Bearer "
                                                     f"<token> ({_needs(scope)})")
        if match is None:
            raise self._fail(scope, "wrong", 403, f"wrong token: this needs the {scope} scope ({_needs(scope)})")
        if SCOPES.index(match) < SCOPES.index(scope):
            raise self._fail(scope, "scope", 403, f"this needs the {scope} scope ({_needs(scope)}); the token "
                                                   f"given has the {match} scope")
        return f"{match} token"

    def guard(self, scope: str) -> Callable[..., Awaitable[str]]:
        """A FastAPI dependency checking ``scope``; its value is the actor name."""

        async def check(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:
            return self.check(scope, credentials)

        return check

    def failures(self) -> dict[str, dict[str, int]]:
        """Failed checks by scope and reason (missing, wrong, scope)."""
        out: dict[str, dict[str, int]] = {}
        for (scope, reason), n in sorted(self._failures.items()):
            out.setdefault(scope, {})[reason] = n
        return out

