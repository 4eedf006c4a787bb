"""`lusifer` starts without the heavy libraries: they are imported where they are used."""

from __future__ import annotations

from pathlib import Path

from tests.startup_imports import DEFERRED_BY_THE_CLI, lusifer_command, start


def test_help_loads_no_heavy_library(tmp_path: Path) -> None:
    started = start(lusifer_command("--help"), tmp_path)
    assert started.returncode == 0, started.stderr
    assert "resume" in started.stdout and "report" in started.stdout
    assert started.loaded(DEFERRED_BY_THE_CLI) == []


def test_runs_in_an_empty_work_dir_fails_in_one_line_without_heavy_libraries(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    started = start(lusifer_command("runs"), tmp_path, LUSIFER_WORK_DIR=str(work))
    assert started.returncode == 1
    assert started.stderr.count("\n") == 1 and "no local database" in started.stderr
    assert started.loaded(DEFERRED_BY_THE_CLI) == []


def test_run_refuses_bad_input_before_loading_heavy_libraries(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "ml-100k").mkdir(parents=True)
    (data / "ml-100k" / "u.data").write_text("1\t1\t5\t0\n")
    started = start(
        lusifer_command("run", "--data-dir", str(data), "--users", "one,two", "--dry-run"),
        tmp_path,
        LUSIFER_WORK_DIR=str(tmp_path / "work"),
    )
    assert started.returncode != 0
    assert "--users must be comma-separated integers" in started.stderr
    assert started.loaded(DEFERRED_BY_THE_CLI) == []


def test_the_python_api_still_brings_pandas(tmp_path: Path) -> None:
    # The other side of the coin: what needs a heavy library still gets it, on first use.
    started = start("import lusifer\nlusifer.Lusifer\n", tmp_path)
    assert started.returncode == 0, started.stderr
    assert "pandas" in started.packages
