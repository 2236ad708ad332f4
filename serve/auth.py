"""The admin token check of the control endpoints, as a FastAPI dependency on ``HTTPBearer``.

Example:
    >>> from fastapi import Depends, FastAPI
    >>> from fastapi.testclient import TestClient
    >>> app = FastAPI()
    >>> @app.post("/admin", dependencies=[Depends(admin_guard("s3cret"))])
    ... async def admin() -> dict:
    ...     return {"ok": True}
    >>> c = TestClient(app)
    >>> [c.post("/admin", headers=h).status_code for h in ({}, {"Authorization": "Bearer nope"},
    ...                                                    {"Authorization": "Bearer s3cret"})]
    [401, 403, 200]
"""

from __future__ import annotations

import hmac
from typing import Awaitable, Callable

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# auto_error=False: a missing token is our 401 with a hint, not FastAPI's generic answer.
bearer = HTTPBearer(auto_error=False, scheme_name="admin token",
                    description="STREAMFIT_ADMIN_TOKEN, sent as `Authorization: Bearer <token>`")


def admin_guard(token: str | None) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency: 401 without a bearer token, 403 with a wrong one (compared in constant time),
    503 when the deployment has no admin token."""

    async def check(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        if not token:
            raise HTTPException(status_code=503, detail="admin endpoints are off: set STREAMFIT_ADMIN_TOKEN")
        if credentials is None:
            raise HTTPException(status_code=401, detail="missing bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.strip().encode(), token.encode()):
            raise HTTPException(status_code=403, detail="wrong admin token")

    return check
