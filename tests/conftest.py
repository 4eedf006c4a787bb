"""Fixtures shared by every test: the real data directory and fresh settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lusifer.core.settings import get_settings


@pytest.fixture
def data_dir() -> Path:
    """The directory holding ml-100k/ and tmdb/ (LUSIFER_DATA_DIR); skip when unset."""
    value = os.environ.get("LUSIFER_DATA_DIR")
    if not value:
        pytest.skip("LUSIFER_DATA_DIR is not set: point it at a directory holding ml-100k/")
    path = Path(value)
    if not (path / "ml-100k" / "u.data").is_file():
        pytest.fail(f"LUSIFER_DATA_DIR={value} holds no ml-100k/u.data")
    return path


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
