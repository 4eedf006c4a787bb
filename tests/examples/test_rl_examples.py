"""The Stable-Baselines3 examples train against the stub LLM server over HTTP: PPO on slates,
MaskablePPO on slates with masks (never a masked item), DQN on single items; each records the
reward of every episode and saves its learning curve."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from examples import dqn_single_item, maskable_ppo_slates, ppo_slates
from examples.rl_common import Training

pytestmark = pytest.mark.rl

Main = Callable[[Sequence[str] | None], tuple[int, Training | None]]


@pytest.fixture(scope="module")
def data_dir() -> str:
    value = os.environ.get("LUSIFER_DATA_DIR")
    if not value:
        pytest.skip("LUSIFER_DATA_DIR is not set: point it at a directory holding ml-100k/")
    return value


def _train(main: Main, data_dir: str, work_dir: Path, *extra: str) -> Training:
    code, training = main(
        [
            "--stub",
            "--data-dir",
            data_dir,
            "--work-dir",
            str(work_dir),
            "--users",
            "4",
            "--steps",
            "200",
            "--episode-steps",
            "8",
            *extra,
        ]
    )
    assert code == 0 and training is not None
    # 200 steps of 4 users at 8 steps an episode: 25 episodes, every one recorded.
    assert training.steps >= 200 and training.updates > 0  # the agent learned from them
    assert len(training.episodes) >= 24
    assert all(e.length == 8 for e in training.episodes)
    assert training.plot is not None and training.plot.stat().st_size > 1000
    return training


def test_ppo_trains_on_slates(data_dir: str, tmp_path: Path) -> None:
    training = _train(ppo_slates.main, data_dir, tmp_path)
    # The stub rates 1..5, and a masked item costs 1: rewards per episode are in range.
    assert all(-8 * 3 <= e.reward <= 8 * 5 for e in training.episodes)


def test_maskable_ppo_never_chooses_a_masked_item(
    data_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    training = _train(maskable_ppo_slates.main, data_dir, tmp_path)
    assert training.masked_choices == 0
    # Per-slot masks cannot forbid repeats; they are counted, each one penalised.
    out = capsys.readouterr().out
    assert "MaskablePPO: " in out and "0 masked items chosen" in out and "episode 1:" in out


def test_dqn_trains_on_single_items(data_dir: str, tmp_path: Path) -> None:
    training = _train(dqn_single_item.main, data_dir, tmp_path)
    assert training.repeats == 0  # one item a step cannot repeat
    assert all(e.reward <= 8 * 5 for e in training.episodes)


def test_dqn_with_a_slate_is_one_clear_error(
    data_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, training = dqn_single_item.main(
        ["--stub", "--data-dir", data_dir, "--work-dir", str(tmp_path), "--slate-size", "3"]
    )
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert code == 1 and training is None
    assert "set slate_size=1" in out and "Traceback" not in out


def test_ctrl_c_is_one_line_and_exit_130(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: object, **__: object) -> Training:
        raise KeyboardInterrupt

    monkeypatch.setattr("examples.rl_common.train", interrupted)
    code, training = ppo_slates.main(["--stub", "--work-dir", str(tmp_path)])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 130 and training is None
    assert f"interrupted: every finished LLM call is kept in {tmp_path}" in out
    assert "Traceback" not in out
