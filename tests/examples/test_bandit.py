"""The bandit example: it runs end to end against the stub server, and LinUCB learns what a
simulated user likes when the user's taste is plain."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from examples.bandit import LinUCB, Popularity, Uniform, liked_counts, main, rollout
from lusifer.core.config import LLMConfig
from lusifer.data import Dataset, load_movielens_100k
from lusifer.env import EnvConfig, LocalExecutor, SimulatedUserVectorEnv
from lusifer.llm import ChatRequest, FakeChatModel
from lusifer.store.engines import create_tables, get_engine
from lusifer.stub import StubConfig, StubServer

_ITEM = re.compile(r'<item id="(\d+)">([^\n]*)</item>')


def _loves_comedy(request: ChatRequest) -> str:
    """A user who rates comedies 5 and everything else 1."""
    props = (request.json_schema or {}).get("properties", {})
    if "profile" in props:
        return json.dumps({"profile": "Loves comedies, nothing else.", "change": "none"})
    text = request.messages[-1][1]
    genres = {item: info for item, info in _ITEM.findall(text)}
    return json.dumps({k: 5 if "Comedy" in genres.get(k, "") else 1 for k in props})


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    import os

    value = os.environ.get("LUSIFER_DATA_DIR")
    if not value:
        pytest.skip("LUSIFER_DATA_DIR is not set: point it at a directory holding ml-100k/")
    return load_movielens_100k(Path(value) / "ml-100k", folds=("u1",))


def _vector(movielens: Dataset, engine: Engine) -> SimulatedUserVectorEnv:
    config = EnvConfig(
        llm=LLMConfig(base_url="http://fake.invalid/v1", model="fake"),
        fold="u1",
        slate_size=3,
        max_steps=50,
        update_every=10,
        profile_history=10,
        profile_batch=10,
        overview_chars=0,
    )
    model = FakeChatModel(_loves_comedy)
    return SimulatedUserVectorEnv(
        4, movielens, config, engine=engine, executor=LocalExecutor(engine, model)
    )


def test_linucb_learns_a_plain_taste(movielens: Dataset, tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'bandit.db'}")
    create_tables(engine)
    vec = _vector(movielens, engine)
    catalog = vec.sim.catalog
    liked = liked_counts(movielens, "u1", catalog.item_ids)
    linucb = LinUCB(catalog.features, liked, vec.sim.observations.layout)
    learned, _ = rollout(vec, linucb, 15, seed=0, learn=True)
    popular, _ = rollout(vec, Popularity(liked), 15, seed=0, learn=False)
    uniform, _ = rollout(vec, Uniform(0), 15, seed=0, learn=False)
    vec.close()
    # Ratings are 5 for comedies, 1 otherwise: LinUCB ends up recommending comedies.
    assert np.mean(learned[-5:]) > 4.0
    assert np.mean(learned[-5:]) > np.mean(popular[-5:]) + 1.0
    assert np.mean(learned[-5:]) > np.mean(uniform[-5:]) + 1.0


def test_the_example_runs_against_the_stub(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], movielens: Dataset
) -> None:
    import os

    data_dir = os.environ["LUSIFER_DATA_DIR"]
    with StubServer(StubConfig()) as stub:
        code = main(
            [
                "--base-url",
                stub.base_url,
                "--model",
                "stub-model",
                "--data-dir",
                data_dir,
                "--work-dir",
                str(tmp_path),
                "--users",
                "2",
                "--train-steps",
                "4",
                "--eval-steps",
                "2",
                "--block",
                "2",
                "--threads",
                "4",
            ]
        )
    out = capsys.readouterr().out
    assert code == 0
    assert "Learning curve" in out and "popularity" in out and "Evaluation" in out
    assert "after step 0 (built)" in out


def test_an_llm_that_refuses_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], movielens: Dataset
) -> None:
    import os

    # The stub asks for a key the example does not send: a permanent error (401).
    with StubServer(StubConfig(api_key="secret")) as stub:
        code = main(
            [
                *("--base-url", stub.base_url, "--model", "stub-model"),
                *("--data-dir", os.environ["LUSIFER_DATA_DIR"], "--work-dir", str(tmp_path)),
                *("--users", "2", "--train-steps", "1", "--eval-steps", "1"),
            ]
        )
    out = " ".join(capsys.readouterr().out.split())
    assert code == 1
    assert out.startswith("error: ") and "Traceback" not in out


def test_ctrl_c_is_one_line_and_exit_130(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("examples.bandit._train_and_report", interrupted)
    code = main(["--local-model", "--work-dir", str(tmp_path)])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 130
    assert f"interrupted: every finished LLM call is kept in {tmp_path}" in out
    assert "Traceback" not in out
