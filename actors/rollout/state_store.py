"""The serving state as one JSON object beside the registry (written atomically, on object stores too).

Example:
    >>> import tempfile
    >>> from streamfit.actors.rollout.serving_state import ServingState
    >>> store, st = StateStore(tempfile.mkdtemp()), ServingState()
    >>> store.load() is None
    True
    >>> _ = st.stage(4); store.save(st); store.load().slots
    {'blue': 4, 'green': None}
"""

from __future__ import annotations

import json
from typing import Any

from streamfit.errors import RegistryError
from streamfit.storage import Storage
from streamfit.actors.rollout.serving_state import ServingState

STATE_FILE = "serving/state.json"


class StateStore:
    """Saves and loads ``ServingState`` through its ``snapshot()``/``restore()``."""

    def __init__(self, registry_uri: str) -> None:
        self.store = Storage(registry_uri, error=RegistryError, what="serving state")
        self.path = self.store.path(*STATE_FILE.split("/"))

    def load(self) -> ServingState | None:
        """The last saved state, or None."""
        if not self.store.exists(self.path):
            return None
        state = ServingState()
        state.restore(json.loads(self.store.get(self.path)))
        return state

    def save(self, state: ServingState) -> None:
        """Replace the saved state."""
        self.write(state.snapshot())

    def write(self, snap: dict[str, Any]) -> None:
        """Replace the saved state with a snapshot taken earlier."""
        self.store.put(self.path, json.dumps(snap).encode())
