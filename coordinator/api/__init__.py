"""The Python API: ``Lusifer`` (pandas DataFrames in and out) and stored runs as DataFrames.

Reached as ``from lusifer import Lusifer, results``: the kernel's package imports this module
lazily, on first use, so workers that import ``lusifer.core`` never load the coordinator.
"""

from coordinator.api.export import export_results
from coordinator.api.library import Lusifer
from coordinator.api.stored import Results, results

__all__ = ["Lusifer", "Results", "export_results", "results"]
