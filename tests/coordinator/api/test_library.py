"""What a ``Lusifer`` object refuses before it starts or stores anything."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from coordinator.api import Lusifer
from coordinator.api.scores import score_frame
from lusifer.core.errors import ConfigurationError, DataError, ServiceError
from lusifer.core.settings import get_settings
from lusifer.evaluate.metrics import summarize

COLUMNS = {"user_id": "uid", "item_id": "movie", "rating": "stars", "timestamp": None}


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    items = pd.DataFrame({"movie": [1, 2, 3, 4], "title": ["A", "B", "C", "D"]})
    ratings = pd.DataFrame({"uid": [1, 1, 2], "movie": [1, 2, 1], "stars": [5, 4, 2]})
    return items, ratings


@pytest.fixture(autouse=True)
def _no_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("LUSIFER_")]:
        monkeypatch.delenv(name)
    work = tmp_path / "work"
    monkeypatch.setenv("LUSIFER_WORK_DIR", str(work))
    return work


def _lusifer(**kwargs: object) -> Lusifer:
    items, ratings = _frames()
    return Lusifer(
        None, items, ratings, columns=COLUMNS, base_url="http://127.0.0.1:9/v1", model="m", **kwargs
    )  # type: ignore[arg-type]


def test_bad_test_frames_fail_before_any_service_or_file(tmp_path: Path) -> None:
    lf = _lusifer()
    for bad, expected in [
        (pd.DataFrame({"uid": [7], "movie": [3]}), "user ids not in users_df"),
        (pd.DataFrame({"uid": [1], "movie": [9]}), "item ids not in items_df"),
        (pd.DataFrame({"uid": [1, 1], "movie": [3, 3]}), "appears twice"),
        (pd.DataFrame({"uid": ["a"], "movie": [3]}), "column 'uid': user id 'a'"),
        (pd.DataFrame({"uid": [1], "movie": [3], "stars": [0]}), "column 'stars': rating 0"),
        (pd.DataFrame({"uid": [1], "movie": [1]}), "already rated item 1"),
    ]:
        with pytest.raises(DataError) as info:
            lf.rate(bad)
        assert expected in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="items lacks column 'movie'"):
        lf.simulate_rating(1, pd.DataFrame({"item": [3]}))
    with pytest.raises(DataError, match=r"items \[9\] are not in items_df"):
        lf.simulate_rating(1, [9])
    with pytest.raises(DataError, match="users \\[5\\] have no rating"):
        lf.build_profiles([5])
    with pytest.raises(ConfigurationError, match="call rate"):
        lf.evaluate()
    assert not (tmp_path / "work").exists()  # no database, broker or worker was started


def test_configuration_mistakes_are_one_line() -> None:
    items, ratings = _frames()
    with pytest.raises(ConfigurationError, match="columns: rating_col"):
        Lusifer(None, items, ratings, columns={"rating_col": "stars"})
    with pytest.raises(ConfigurationError, match="base_url needs model="):
        Lusifer(None, items, ratings, columns=COLUMNS, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigurationError, match="profile_batch"):
        _lusifer(profile_batch=0)
    with pytest.raises(ConfigurationError, match="larger than the profile history"):
        _lusifer(profile_history=5, profile_batch=10)
    with pytest.raises(DataError, match="ratings_df is a list, not a pandas DataFrame"):
        Lusifer(None, items, [1, 2], columns=COLUMNS)  # type: ignore[arg-type]


def test_score_is_the_reports_summary_per_fold() -> None:
    rated = pd.DataFrame(
        {
            "fold": ["a", "a", "a", "b", "b"],
            "user_id": [2, 1, 1, 1, 1],
            "item_id": [1, 2, 1, 1, 2],
            "rating": [5, 3, 1, 4, 2],
            "simulated_rating": pd.array([4, 3, None, 4, 1], dtype="Int64"),
        }
    )
    scores = score_frame(rated).set_index("fold")
    expected = summarize([3, 5], [3, 4])  # fold a, in (user, item) order, unanswered left out
    assert scores.loc["a", "rmse"] == expected.rmse
    assert scores.loc["a", "coverage_pct"] == pytest.approx(200 / 3)
    assert scores.loc["b", "exact_match_pct"] == 50.0
    with pytest.raises(DataError, match="lacks column"):
        score_frame(rated.drop(columns="rating"))


def test_an_unreachable_llm_or_broker_is_one_line_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test = pd.DataFrame({"uid": [1], "movie": [3]})
    with pytest.raises(ServiceError, match="--base-url") as info:
        _lusifer().rate(test)  # nothing listens on port 9
    assert "\n" not in str(info.value)
    assert not (tmp_path / "work").exists()
    monkeypatch.setenv("LUSIFER_BROKER_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("LUSIFER_DATABASE_URL", f"sqlite:///{tmp_path / 'cluster.db'}")
    get_settings.cache_clear()
    with pytest.raises(ServiceError, match=r"broker .* is unreachable"):
        _lusifer().rate(test)
    assert not (tmp_path / "cluster.db").exists()
