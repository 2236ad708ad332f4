"""The HTTP API's tokens: read from the environment or files, and the admin token ``run``/``demo`` generate.

Each scope has its own token, ``STREAMFIT_<SCOPE>_TOKEN`` or a file named by ``STREAMFIT_<SCOPE>_TOKEN_FILE``
(a mounted secret). When no admin token is set, ``streamfit run``/``demo`` generate one once into
``admin_token_path()`` (``$XDG_CONFIG_HOME/streamfit/admin-token``, else ``~/.config/streamfit/admin-token``;
mode 0600), reuse it on later runs, and print only where it is; the CLI reads that file when
``STREAMFIT_ADMIN_TOKEN`` is not set. A token's value is never printed or logged.

Example:
    >>> scope_tokens({"STREAMFIT_INGEST_TOKEN": " t0k3n\\n", "STREAMFIT_READ_TOKEN": ""})
    {'ingest': 't0k3n'}
    >>> token_env("admin")
    'STREAMFIT_ADMIN_TOKEN'
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Mapping, MutableMapping

from streamfit.config import SCOPES, AuthConfig
from streamfit.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def token_env(scope: str) -> str:
    """The environment variable holding a scope's token (``…_FILE`` names a file holding it)."""
    return f"STREAMFIT_{scope.upper()}_TOKEN"


def token_from_env(scope: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A scope's token from ``STREAMFIT_<SCOPE>_TOKEN`` or the file ``STREAMFIT_<SCOPE>_TOKEN_FILE`` names."""
    env = os.environ if environ is None else environ
    value = (env.get(token_env(scope)) or "").strip()
    if value:
        return value
    path = env.get(token_env(scope) + "_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as err:
        raise ConfigError(f"{token_env(scope)}_FILE: cannot read {path}: {err.strerror}") from None


def scope_tokens(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tokens configured for each scope (scopes without one left out)."""
    found = {s: token_from_env(s, environ) for s in SCOPES}
    return {s: t for s, t in found.items() if t}


def admin_token_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``run``/``demo`` keep the admin token they generated, and where the CLI looks for it."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "streamfit" / "admin-token"


def read_admin_token_file(environ: Mapping[str, str] | None = None) -> str | None:
    """The admin token ``run``/``demo`` wrote, if there is one."""
    try:
        return admin_token_path(environ).read_text().strip() or None
    except OSError:
        return None


def ensure_admin_token(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Make sure an admin token is set (in ``environ``, which local Ray's processes inherit): one from the
    environment is kept (None returned); else the token file's, generated into it first if there is none
    (readable by the user only). Returns the file's path, to be printed instead of the token."""
    env = os.environ if environ is None else environ
    if token_from_env("admin", env):
        return None
    path = admin_token_path(env)
    token = read_admin_token_file(env)
    if token is None:
        try:
            token = _generate(path, env)
        except OSError as err:
            raise ConfigError(f"{token_env('admin')}: none set, and a generated one cannot be written to {path} "
                              f"({err.strerror}); set {token_env('admin')} or {token_env('admin')}_FILE") from None
    if not token:
        raise ConfigError(f"{token_env('admin')}: {path} is empty; delete it (a new token is generated) or set one")
    os.chmod(path, 0o600)  # a file someone widened is narrowed back: it grants everything
    env[token_env("admin")] = token
    return path


def _generate(path: Path, env: Mapping[str, str]) -> str | None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:  # O_EXCL: two runs starting at once agree on the first one's token
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_admin_token_file(env)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def token_notice(path: Path) -> str:
    """The line ``run``/``demo`` print about a generated admin token: where it is, never what it is."""
    return (f"admin token: in {path} (readable only by you; the streamfit CLI reads it; "
            f"for curl: -H \"Authorization: Bearer $(cat {path})\")")


def check_open_scopes(auth: AuthConfig, host: str, address: str | None, allow: bool = False,
                      environ: Mapping[str, str] | None = None) -> None:
    """Refuse to serve an open ``ingest``/``admin`` scope (listed in ``auth.open_scopes``, no token set) on a
    cluster (``address``) or a non-loopback host, unless ``allow`` or ``auth.allow_open_on_network``."""
    on_network = address is not None or not (host in LOOPBACK or host.startswith("127."))
    if not on_network or allow or auth.allow_open_on_network:
        return
    tokens = scope_tokens(environ)
    exposed = [s for s in ("ingest", "admin") if s in auth.open_scopes and s not in tokens]
    if exposed:
        where = f"the Ray cluster at {address}" if address is not None else f"serving.host {host}"
        raise ConfigError(
            f"auth.open_scopes: {', '.join(exposed)} would be open to anyone who reaches {where}; set "
            f"{' / '.join(token_env(s) for s in exposed)} (or …_FILE), remove it from auth.open_scopes, or allow "
            "it with auth.allow_open_on_network: true (or --allow-open-scopes)")
