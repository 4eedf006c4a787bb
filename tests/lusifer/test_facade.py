"""`from lusifer import Lusifer` reaches the coordinator's API lazily; workers never load it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_kernel_imports_no_coordinator_module() -> None:
    code = (
        "import sys, lusifer, lusifer.core.settings, lusifer.data, lusifer.env;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('coordinator', 'workers')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_facade_names_the_api() -> None:
    import coordinator.api
    import lusifer

    assert lusifer.Lusifer is coordinator.api.Lusifer
    assert lusifer.results is coordinator.api.results
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = lusifer.nothing  # type: ignore[attr-defined]
