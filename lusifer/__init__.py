"""Lusifer: LLM-simulated users for recommender systems.

``from lusifer import Lusifer`` gives the paper's DataFrame interface and ``lusifer.results``
a stored run as DataFrames. Both live in the coordinator (they plan and follow runs); they are
imported here on first use only, so the workers, which import the kernel's subpackages, never
load the coordinator and the kernel imports neither role at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coordinator.api import Lusifer, Results, results

__all__ = ["Lusifer", "Results", "results"]


def __getattr__(name: str) -> Any:
    """Import the Python API from the coordinator when it is first asked for."""
    if name in __all__:
        import coordinator.api

        return getattr(coordinator.api, name)
    raise AttributeError(f"module 'lusifer' has no attribute {name!r}")
