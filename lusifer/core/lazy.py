"""Names of a package that are imported on first use (PEP 562), to keep start-up cheap.

Every ``lusifer`` command and Celery worker imports the packages it uses; a name whose module
pulls in a heavy library (pandas, gymnasium, the openai SDK) is exported through
``lazy_exports`` so that only a process that reaches for it pays for the import.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name of ``modules`` is imported from the
    module it maps to when it is first asked for, then kept on the package."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        # Kept as a plain attribute: later look-ups no longer reach __getattr__.
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
