"""Invocation distance: how soon each agent will call the LLM next (smaller is sooner).

`DistanceTable` holds the current estimate per agent (epochs, time-to-live, validation);
`estimators` turn simulation state into distances. Pure Python, no SGLang: used by the
simulation-side client and by the server.
"""

from scalesim.distance.table import (
    MAX_AGENTS,
    MAX_AGENT_ID_LENGTH,
    UNITS,
    DistanceError,
    DistanceTable,
    validate_distances,
)

__all__ = [
    "MAX_AGENTS",
    "MAX_AGENT_ID_LENGTH",
    "UNITS",
    "DistanceError",
    "DistanceTable",
    "validate_distances",
]
