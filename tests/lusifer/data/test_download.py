"""Downloading MovieLens 100K, against a local HTTP server (never the network)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lusifer.core.errors import DataError
from lusifer.data import ensure_movielens_100k


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx honours proxy variables; a CI proxy must not intercept requests to 127.0.0.1.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serve = functools.partial(server.serve_forever, poll_interval=0.02)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buffer.getvalue()


ARCHIVE = _zip({"ml-100k/u.data": "1\t1\t5\t874965758\n", "ml-100k/README": "tiny\n"})
SHA256 = hashlib.sha256(ARCHIVE).hexdigest()


def test_download_extracts_into_cache(tmp_path: Path, served: tuple[Path, str]) -> None:
    root, base = served
    (root / "ml-100k.zip").write_bytes(ARCHIVE)
    cache = tmp_path / "cache"
    found = ensure_movielens_100k(cache, url=f"{base}/ml-100k.zip", expected_sha256=SHA256)
    assert found == cache / "ml-100k"
    assert (found / "u.data").read_text() == "1\t1\t5\t874965758\n"
    # The scratch directory and the zip are gone; only the data set remains.
    assert [p.name for p in cache.iterdir()] == ["ml-100k"]
    # A second call finds the data and does not download again (the zip is gone now).
    (root / "ml-100k.zip").unlink()
    assert ensure_movielens_100k(cache, url=f"{base}/ml-100k.zip", expected_sha256=SHA256) == found


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, served: tuple[Path, str]) -> None:
    root, base = served
    (root / "ml-100k.zip").write_bytes(ARCHIVE)
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DataError) as info:
        ensure_movielens_100k(cache, url=f"{base}/ml-100k.zip", expected_sha256="0" * 64)
    assert "\n" not in str(info.value)
    assert f"has sha256 {SHA256}, expected {'0' * 64}" in str(info.value)
    assert list(cache.iterdir()) == []


def test_cache_dir_created_for_a_failed_download_is_removed(
    tmp_path: Path, served: tuple[Path, str]
) -> None:
    root, base = served
    (root / "ml-100k.zip").write_bytes(ARCHIVE)
    cache = tmp_path / "new" / "cache"
    with pytest.raises(DataError):
        ensure_movielens_100k(cache, url=f"{base}/ml-100k.zip", expected_sha256="0" * 64)
    assert not cache.exists()


def test_http_404(tmp_path: Path, served: tuple[Path, str]) -> None:
    _, base = served
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DataError) as info:
        ensure_movielens_100k(cache, url=f"{base}/missing.zip", expected_sha256=SHA256)
    assert "failed with HTTP 404" in str(info.value)
    assert "\n" not in str(info.value)
    assert list(cache.iterdir()) == []


def test_connection_refused(tmp_path: Path) -> None:
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError) as info:
        ensure_movielens_100k(tmp_path, url=f"http://127.0.0.1:{port}/x.zip", timeout=5)
    assert "ConnectError" in str(info.value)
    assert "\n" not in str(info.value)


def test_not_a_zip(tmp_path: Path, served: tuple[Path, str]) -> None:
    root, base = served
    (root / "ml-100k.zip").write_bytes(b"not a zip")
    digest = hashlib.sha256(b"not a zip").hexdigest()
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DataError, match="not a valid zip archive"):
        ensure_movielens_100k(cache, url=f"{base}/ml-100k.zip", expected_sha256=digest)
    assert list(cache.iterdir()) == []


def test_zip_without_u_data(tmp_path: Path, served: tuple[Path, str]) -> None:
    root, base = served
    archive = _zip({"ml-100k/README": "no ratings\n"})
    (root / "ml-100k.zip").write_bytes(archive)
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DataError, match=r"holds no u\.data"):
        ensure_movielens_100k(
            cache, url=f"{base}/ml-100k.zip", expected_sha256=hashlib.sha256(archive).hexdigest()
        )
    assert list(cache.iterdir()) == []
