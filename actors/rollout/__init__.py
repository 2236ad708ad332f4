"""The rollout plane: the desired serving state, the blue-green rollout state machine, canary analysis.

Owns: ``ServingState`` (which version each slot holds, the weights, the rollout in progress),
the ``RolloutMachine`` that moves it (commands and ``step`` → transitions), what Router
replicas report, the canary analysis of each step (judged on the requests both versions answered,
with a one-sided confidence rule), the shadow stage and fast path, the persisted state, and the named
``RolloutControllerActor`` (a shell that ticks the machine) that Routers long-poll.

May import: the core package ``streamfit`` only (the monitor is reached as a named actor).

Exposes the names in ``__all__`` (imported lazily).
"""

from streamfit.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "canary_verdict": "analysis",
    "ControllerCore": "controller",
    "ReplicaTracker": "replicas",
    "Rollout": "serving_state",
    "RolloutControllerActor": "controller",
    "RolloutMachine": "machine",
    "ServingState": "serving_state",
    "StateStore": "state_store",
})
