"""Bad input, table-driven, through the real `lusifer` command as a user runs it.

Each kind of bad input must end with a non-zero exit, exactly one line on stderr that names
the problem and the fix, no traceback, and nothing written: no database file where there was
none, no work directory. The datasets are tiny and made here; only the broker and database rows
use cluster settings (a real Redis, a PostgreSQL address)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from prompts import __file__ as prompts_init
from tests.integration.services import Stub, stub_server
from tests.tiny_data import GENRE_FLAGS, write_tiny_movielens

LUSIFER = str(Path(sys.executable).parent / "lusifer")
STUB_KEY = "sk-good-key-for-the-stub"


def _closed_port() -> int:
    # A port nobody listens on: bound, then released.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_csv(root: Path) -> tuple[Path, Path]:
    ratings, items = root / "ratings.csv", root / "items.csv"
    rows = [f"{u},{i},{1 + (u + i) % 5},{i}" for u in (1, 2, 3) for i in range(1, 7)]
    ratings.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
    items.write_text("item_id,title\n" + "".join(f"{i},Film {i}\n" for i in range(1, 7)))
    return ratings, items


@dataclass
class Env:
    """What a case may use: its directory, the datasets, the stub and the services."""

    root: Path
    ml: Path
    ratings_csv: Path
    items_csv: Path
    stub: Stub
    extra_env: dict[str, str] = field(default_factory=dict)

    def llm(self, base_url: str | None = None, model: str = "stub-model") -> list[str]:
        return ["--base-url", base_url or self.stub.base_url, "--model", model]

    def ml_run(self, *args: str) -> list[str]:
        return ["run", "--data-dir", str(self.ml), "--folds", "u1", *self.llm(), *args]

    def csv_run(self, *args: str) -> list[str]:
        csv_args = ["--ratings-csv", str(self.ratings_csv), "--items-csv", str(self.items_csv)]
        return ["run", *csv_args, "--n-folds", "2", *self.llm(), *args]


@dataclass(frozen=True)
class Case:
    """One kind of bad input: how to make it, and the words its message must hold."""

    kind: str
    make: Callable[[Env], list[str]]
    phrases: tuple[str, ...]


def _missing_dir(env: Env) -> list[str]:
    shutil.rmtree(env.ml)
    return env.ml_run()


def _dir_is_a_file(env: Env) -> list[str]:
    shutil.rmtree(env.ml)
    env.ml.write_text("not a directory\n")
    return env.ml_run()


def _unreadable_file(env: Env) -> list[str]:
    # Root reads any file whatever its mode, so unreadable is a directory where a file must be.
    (env.ml / "u1.base").unlink()
    (env.ml / "u1.base").mkdir()
    return env.ml_run()


def _missing_item_file(env: Env) -> list[str]:
    (env.ml / "u.item").unlink()
    return env.ml_run()


def _malformed_line(env: Env) -> list[str]:
    with (env.ml / "u1.base").open("a") as out:
        out.write("2\t9\tfive\n")
    return env.ml_run()


def _duplicate_rating(env: Env) -> list[str]:
    with (env.ml / "u1.base").open("a") as out:
        out.write("1\t3\t4\t880000099\n")
    return env.ml_run()


def _item_without_text(env: Env) -> list[str]:
    lines = (env.ml / "u.item").read_text().splitlines()
    lines[4] = f"5|   |||http://x|{GENRE_FLAGS}"
    (env.ml / "u.item").write_text("\n".join(lines) + "\n")
    return env.ml_run()


def _not_utf8(env: Env) -> list[str]:
    env.items_csv.write_bytes(
        b"item_id,title\n" + b"".join(b"%d,Caf\xe9 %d\n" % (i, i) for i in range(1, 7))
    )
    return env.csv_run()


def _wrong_columns(env: Env) -> list[str]:
    text = env.ratings_csv.read_text().splitlines()
    text[0] = "uid,movie,stars,when"
    env.ratings_csv.write_text("\n".join(text) + "\n")
    return env.csv_run()


def _bad_template(env: Env) -> list[str]:
    own = env.root / "my-prompts"
    shutil.copytree(Path(prompts_init).parent / "lusifer", own / "mine")
    rating_user = own / "mine" / "rating_user.j2"
    rating_user.write_text(rating_user.read_text() + "\nYour mood: {{ mood }}\n")
    return env.ml_run("--prompts-dir", str(own), "--prompt-set", "mine")


def _broker_env(env: Env, broker: str) -> None:
    env.extra_env.update(
        LUSIFER_BROKER_URL=broker, LUSIFER_DATABASE_URL=f"sqlite:///{env.root / 'fresh.db'}"
    )


def _unreachable_broker(env: Env) -> list[str]:
    _broker_env(env, f"redis://:s3cret-pass@127.0.0.1:{_closed_port()}/0")
    return env.ml_run()


def _misconfigured_broker(env: Env) -> list[str]:
    _broker_env(env, "redis://127.0.0.1:6379/12?ssl_ca_certs=/etc/ca.pem")
    return env.ml_run()


def _unreachable_database(env: Env) -> list[str]:
    env.extra_env.update(
        LUSIFER_BROKER_URL="redis://127.0.0.1:6379/12",
        LUSIFER_DATABASE_URL=f"postgresql+psycopg://postgres:s3cret-pass@127.0.0.1:{_closed_port()}/x",
    )
    return env.ml_run()


def _misconfigured_database(env: Env) -> list[str]:
    env.extra_env.update(
        LUSIFER_BROKER_URL="redis://127.0.0.1:6379/12",
        LUSIFER_DATABASE_URL="mysql://lusifer:s3cret-pass@127.0.0.1/lusifer",
    )
    return env.ml_run()


def _unreachable_llm(env: Env) -> list[str]:
    args = env.ml_run()
    args[args.index("--base-url") + 1] = f"http://127.0.0.1:{_closed_port()}/v1"
    return args


def _invalid_key(env: Env) -> list[str]:
    env.extra_env["LUSIFER_LLM_API_KEY"] = "sk-wrong-key"
    return env.ml_run()


def _unknown_model(env: Env) -> list[str]:
    args = env.ml_run()
    args[args.index("--model") + 1] = "gpt-nope"
    return args


def _base_url(url: str) -> Callable[[Env], list[str]]:
    def make(env: Env) -> list[str]:
        args = env.ml_run()
        args[args.index("--base-url") + 1] = url
        return args

    return make


def _huge_user_id(env: Env) -> list[str]:
    ratings = env.root / "big-ids.csv"
    ratings.write_text("user_id,item_id,rating,timestamp\n4294967296,1,3,1\n", encoding="utf-8")
    return ["run", "--ratings-csv", str(ratings), "--items-csv", str(env.items_csv), *env.llm()]


def _work_dir(env: Env, path: str) -> list[str]:
    # Local mode (no database URL): its work directory cannot be made.
    env.extra_env["LUSIFER_WORK_DIR"] = path
    env.extra_env["LUSIFER_DATABASE_URL"] = ""
    return env.ml_run()


def _sandbox_escape(env: Env) -> list[str]:
    prompts = env.root / "own-prompts"
    shutil.copytree(Path(prompts_init).parent / "lusifer", prompts / "evil")
    escape = "{{ cycler.__init__.__globals__.os.system('touch pwned') }}"
    (prompts / "evil" / "reask.j2").write_text(escape, encoding="utf-8")
    return env.ml_run("--prompts-dir", str(prompts), "--prompt-set", "evil")


CASES = [
    Case("missing-dataset-dir", _missing_dir, ("does not exist", "--data-dir")),
    Case("dataset-dir-is-a-file", _dir_is_a_file, ("not a MovieLens 100K directory", "--data-dir")),
    Case(
        "unreadable-ratings-file",
        _unreadable_file,
        ("cannot read", "u1.base", "make it a file you may read"),
    ),
    Case("missing-u.item", _missing_item_file, ("u.item not found", "--data-dir")),
    Case("malformed-line", _malformed_line, ("u1.base line 17", "expected 4", "restore")),
    Case("duplicate-rating", _duplicate_rating, ("rates item 3 twice", "restore")),
    Case("item-without-text", _item_without_text, ("u.item line 5", "no title", "restore")),
    Case("not-utf8-csv", _not_utf8, ("not valid utf-8", "encoding")),
    Case("wrong-csv-columns", _wrong_columns, ("lacks column(s)", "--columns")),
    Case("unknown-user", lambda e: e.ml_run("--users", "99"), ("unknown user ids", "u.user")),
    Case("users-not-ints", lambda e: e.ml_run("--users", "1,x"), ("--users", "integers")),
    Case("unknown-fold", lambda e: e.ml_run("--folds", "u9"), ("unknown fold u9", "choose")),
    Case(
        "user-without-history",
        lambda e: e.ml_run("--users", "3"),
        ("no user with both training and test ratings", "--users"),
    ),
    Case(
        "history-smaller-than-batch",
        lambda e: e.ml_run("--profile-history", "5", "--profile-batch", "10"),
        ("larger than the profile history", "use a batch no larger"),
    ),
    Case("chunk-zero", lambda e: e.ml_run("--chunk-size", "0"), ("chunk_size", "fix --chunk-size")),
    Case(
        "unknown-prompt-set",
        lambda e: e.ml_run("--prompt-set", "nope"),
        ("unknown prompt set 'nope'", "choose one of", "lusifer"),
    ),
    Case("template-undefined-variable", _bad_template, ("undefined variable", "mood", "use only")),
    Case(
        "unreachable-broker",
        _unreachable_broker,
        ("broker", "unreachable", "LUSIFER_BROKER_URL"),
    ),
    Case(
        "tls-options-on-plain-broker",
        _misconfigured_broker,
        ("not rediss://", "LUSIFER_BROKER_URL"),
    ),
    Case(
        "unreachable-database",
        _unreachable_database,
        ("database", "unreachable", "LUSIFER_DATABASE_URL"),
    ),
    Case(
        "misconfigured-database-url",
        _misconfigured_database,
        ("cannot use database URL", "LUSIFER_DATABASE_URL"),
    ),
    Case("unreachable-llm", _unreachable_llm, ("cannot connect to the LLM", "--base-url")),
    Case("invalid-api-key", _invalid_key, ("401", "LUSIFER_LLM_API_KEY")),
    Case("unknown-model", _unknown_model, ("'gpt-nope' is not served", "--model")),
    Case(
        "credentials-in-base-url",
        _base_url("http://user:s3cret-pass@127.0.0.1:9/v1"),
        ("carries credentials", "LUSIFER_LLM_API_KEY", "--base-url"),
    ),
    Case("base-url-not-a-url", _base_url("http://[::1"), ("is not a URL", "--base-url")),
    Case("base-url-not-http", _base_url("ftp://example.org/v1"), ("not an http(s) URL",)),
    Case("user-id-past-32-bits", _huge_user_id, ("4294967296", "32-bit")),
    Case("template-escapes-sandbox", _sandbox_escape, ("reask.j2", "reaches outside")),
    Case(
        "work-dir-not-writable",
        lambda e: _work_dir(e, "/proc/lusifer-nope"),
        ("/proc/lusifer-nope", "LUSIFER_WORK_DIR"),
    ),
    Case(
        "timeout-not-positive",
        lambda e: e.ml_run("--llm-timeout", "0"),
        ("timeout_s", "fix --llm-timeout"),
    ),
]


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    with stub_server(api_key=STUB_KEY) as server:
        yield server


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input_fails_with_one_clear_line(case: Case, stub: Stub, tmp_path: Path) -> None:
    ratings_csv, items_csv = _write_csv(tmp_path)
    env = Env(tmp_path, write_tiny_movielens(tmp_path), ratings_csv, items_csv, stub)
    database = tmp_path / "fresh.db"
    env.extra_env.update(LUSIFER_DATABASE_URL=f"sqlite:///{database}", LUSIFER_LLM_API_KEY=STUB_KEY)
    args = case.make(env)
    work = tmp_path / "cwd"
    work.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}

    result = subprocess.run(
        [LUSIFER, *args, "--run-id", "bad-input"],
        cwd=work,
        env={**base, "COLUMNS": "400", **env.extra_env},
        capture_output=True,
        text=True,
        timeout=120,
    )

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    print(f"{case.kind}: {lines[0]}")  # the table of messages, with pytest -rP
    for phrase in case.phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    assert "s3cret-pass" not in output and STUB_KEY not in output
    # Nothing half-written: no database file, no local-mode work directory.
    assert not database.exists(), lines[0]
    assert list(work.iterdir()) == []


def test_the_table_covers_at_least_fifteen_kinds() -> None:
    assert len({case.kind for case in CASES}) >= 15


@pytest.mark.parametrize("run_id", ["x[/]y", "[link=http://evil.example]z[/link]", "[bold]b"])
def test_markup_in_a_run_id_is_printed_as_it_is(run_id: str, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LUSIFER_", "OPENAI_"))}
    database = tmp_path / "runs.db"
    env = {**base, "COLUMNS": "400", "LUSIFER_DATABASE_URL": f"sqlite:///{database}"}
    subprocess.run([LUSIFER, "init-db"], env=env, capture_output=True, check=True, timeout=60)
    result = subprocess.run(
        [LUSIFER, "status", run_id],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert run_id in lines[0]
    assert "\x1b]8;" not in result.stderr  # no terminal hyperlink
    started = subprocess.run(
        [LUSIFER, "run", "--run-id", run_id],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1 and "Traceback" not in started.stderr
    assert started.stderr.count("\n") == 1 and "may hold letters, digits" in started.stderr
    assert run_id in started.stderr
