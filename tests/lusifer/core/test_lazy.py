"""Lazy package exports: the name is the module's own object, imported on first use."""

from __future__ import annotations

import json
import sys
import types

import pytest

from lusifer.core.lazy import lazy_exports


def test_a_lazy_name_is_the_defining_modules_object_and_is_kept() -> None:
    import lusifer.data
    import lusifer.data.generic

    assert lusifer.data.load_csv_dataset is lusifer.data.generic.load_csv_dataset
    # Kept on the package: the next look-up is a plain attribute.
    assert "load_csv_dataset" in vars(lusifer.data)


def test_an_unknown_name_raises_attribute_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    package = types.ModuleType("lazy_probe")
    monkeypatch.setitem(sys.modules, "lazy_probe", package)
    getattr_ = lazy_exports("lazy_probe", {"dumps": "json"})
    assert getattr_("dumps") is json.dumps
    assert package.dumps is json.dumps
    with pytest.raises(AttributeError, match="module 'lazy_probe' has no attribute 'loads'"):
        getattr_("loads")
