"""``Lusifer``: the paper's DataFrame interface, on the command line's engine.

Every method plans jobs into the database and runs them through the workers and the call
cache, exactly as `lusifer run` does (see ``coordinator.api.engine``), then reads the results
back as DataFrames.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from sqlalchemy import Engine

from coordinator.aggregate import aggregate_run
from coordinator.api import dynamic
from coordinator.api.engine import input_run_id, run_plan
from coordinator.api.movielens import movielens_frames
from coordinator.api.options import check_method, frame_columns, llm_config, run_config
from coordinator.api.scores import fold_results_frame, score_frame
from coordinator.api.stored import Results, profiles_frame, read_results
from coordinator.cli.common import settings_or_fail
from coordinator.database_url import database_url_of
from coordinator.datasets import resolve_dataset_config
from coordinator.plan import Plan, plan_run
from coordinator.services import Services, run_services
from lusifer.core.errors import ConfigurationError, DataError
from lusifer.data import Dataset, load_movielens_100k
from lusifer.data.frames import FrameColumns
from lusifer.data.from_frames import fold_dataset, load_frames, pairs_to_simulate
from lusifer.method.prompts import load_prompt_set
from lusifer.store.engines import get_engine


class Lusifer:
    """Simulated users from pandas DataFrames (paper §2.4): profiles, ratings, RL steps.

    ``columns`` maps our fields (user_id, item_id, rating, timestamp, title, year, genres,
    overview, age, gender, occupation, user_info, item_info) to your column names. Without
    ``base_url`` the local model of local mode answers. Use it as a context manager to keep
    the services (embedded broker and workers) running across calls.
    """

    def __init__(
        self,
        users_df: pd.DataFrame | None,
        items_df: pd.DataFrame,
        ratings_df: pd.DataFrame,
        *,
        columns: Mapping[str, str | None] | FrameColumns | None = None,
        model: str | None = None,
        base_url: str | None = None,
        temperature: float = 0.0,
        structured_output: str | None = None,
        timeout_s: float = 120.0,
        price_prompt: float = 0.0,
        price_completion: float = 0.0,
        fold: str = "api",
        round_ratings: bool = False,
        workers: int = 1,
        threads: int | None = None,
        console: Console | None = None,
        **method: Any,
    ) -> None:
        self.settings = settings_or_fail()
        self.columns = frame_columns(columns)
        self.data = load_frames(
            ratings_df, items_df, users_df, self.columns, round_ratings=round_ratings
        )
        llm = llm_config(
            self.settings,
            base_url=base_url,
            model=model,
            temperature=temperature,
            structured_output=structured_output,
            timeout_s=timeout_s,
            price_prompt=price_prompt,
            price_completion=price_completion,
        )
        self.config = run_config(llm, check_method(method), fold)
        self.prompts = load_prompt_set(self.config.prompt_set, self.config.prompts_dir)
        self.fold = fold
        self.workers, self.threads = workers, threads
        self.console = console or Console()
        self.test_df: pd.DataFrame | None = None  # set by from_movielens: the fold's test set
        self.last_run_id: str | None = None
        self.profiles_run_id: str | None = None
        self._episodes: dict[int, dynamic.Episode] = {}
        self._stack: ExitStack | None = None
        self._services: Services | None = None

    # --- services ----------------------------------------------------------------------

    def start(self) -> Lusifer:
        """Start the services once for the calls that follow (until ``close``); in a
        notebook this spares each call the start of the embedded broker and workers."""
        if self._services is None:
            stack = ExitStack()
            self._services = stack.enter_context(
                run_services(self.settings, self.config, workers=self.workers, threads=self.threads)
            )
            self._stack = stack
        return self

    def __enter__(self) -> Lusifer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the services a ``with`` block started."""
        stack, self._stack, self._services = self._stack, None, None
        if stack is not None:
            stack.close()

    def _engine(self) -> Engine:
        # Reads need the database only, found as `lusifer report` finds it.
        if self._services is not None:
            return self._services.engine
        return get_engine(database_url_of(self.settings))

    @contextmanager
    def _running(self) -> Iterator[Services]:
        if self._services is not None:
            yield self._services
            return
        with run_services(
            self.settings, self.config, workers=self.workers, threads=self.threads
        ) as services:
            yield services

    # --- the paper's methods ----------------------------------------------------------------

    def build_profiles(self, user_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Phase 1 for the users (default: every user with ratings): one row per user with
        ``profile`` and ``profile_history`` (every intermediate profile and explanation)."""
        history_users = np.unique(self.data.history[:, 0])
        chosen = history_users if user_ids is None else np.asarray(list(user_ids), np.int64)
        unknown = sorted(set(chosen.tolist()) - set(history_users.tolist()))
        if unknown:
            raise DataError(
                f"users {unknown[:10]} have no rating in ratings_df: a profile is built from "
                "a user's history; pass users with ratings"
            )
        if chosen.size == 0:
            raise DataError("no user to profile: pass at least one user id")
        # Planned like a rating run whose test set is each user's last rating; only the
        # profile jobs are kept, so the planner and the workers are the batch runs' own.
        last = {
            int(u): row for u, row in zip(self.data.history[:, 0], self.data.history, strict=True)
        }
        placeholder = np.array([last[int(u)] for u in chosen], dtype=np.int64)
        run_id = input_run_id("profiles", self._identity(), repr(sorted(chosen.tolist())))
        dataset = fold_dataset(self.data, placeholder, fold=self.fold)
        plan = plan_run(run_id, self.config, dataset, self.prompts).only_profiles()
        found = self._execute(plan, dataset)
        self.profiles_run_id = run_id
        self._episodes.clear()  # new profiles: episodes start again from them
        return profiles_frame(found)

    def rate(self, test_df: pd.DataFrame) -> pd.DataFrame:
        """Phase 2: ``test_df`` with ``simulated_rating`` (nullable), ``reason`` (why a
        rating is missing) and ``job_id`` (the job whose LLM calls made it) added."""
        test = pairs_to_simulate(self.data, test_df)
        digest = pd.util.hash_pandas_object(pd.DataFrame(test), index=False).to_numpy()
        run_id = input_run_id("rate", self._identity(), digest.tobytes().hex())
        dataset = fold_dataset(self.data, test, fold=self.fold)
        plan = plan_run(run_id, self.config, dataset, self.prompts)
        found = self._execute(plan, dataset)
        keyed = found.ratings.set_index(["user_id", "item_id"])
        pairs = pd.MultiIndex.from_arrays([test[:, 0], test[:, 1]])
        out = test_df.copy()
        out["simulated_rating"] = keyed["simulated_rating"].reindex(pairs).to_numpy()
        out["simulated_rating"] = out["simulated_rating"].astype("Int64")
        out["reason"] = keyed["reason"].reindex(pairs).to_numpy()
        out["job_id"] = keyed["job_id"].reindex(pairs).to_numpy()
        out.attrs["run_id"] = run_id
        return out

    def simulate_rating(self, user_id: int, items: object) -> pd.DataFrame:
        """The RL loop: the user rates ``items`` (ids or a DataFrame), then their profile is
        updated from those ratings. Returns item_id, simulated_rating; see ``profile()``."""
        ids = dynamic.item_ids_of(items, self.data, self.columns.item_id)
        config = dynamic.env_config(self.config, self.fold, self.profiles_run_id)
        with self._running() as services:
            sim = dynamic.simulator_for(services, self.data, config, int(user_id))
            try:
                episode, ratings = dynamic.rate_step(
                    sim, self._episodes.get(int(user_id)), int(user_id), ids
                )
            finally:
                sim.close()
        self._episodes[int(user_id)] = episode
        rated = [ratings.get(i) for i in ids]
        frame = pd.DataFrame({"item_id": ids, "simulated_rating": pd.array(rated, dtype="Int64")})
        frame.attrs["profile"] = episode.profiles[-1].profile
        return frame

    def profile(self, user_id: int) -> str:
        """The user's current profile in this object's RL loop (after ``simulate_rating``)."""
        episode = self._episodes.get(int(user_id))
        if episode is None:
            raise DataError(f"user {user_id} has not rated anything yet: call simulate_rating")
        return episode.profiles[-1].profile

    def profile_history(self, user_id: int) -> pd.DataFrame:
        """Every profile of the user's RL loop: step, source, profile, explanation, item_ids."""
        episode = self._episodes.get(int(user_id))
        if episode is None:
            raise DataError(f"user {user_id} has not rated anything yet: call simulate_rating")
        return pd.DataFrame([p.as_info() for p in episode.profiles])

    def evaluate(self, run_id: str | None = None) -> pd.DataFrame:
        """Per-fold metrics of a ``rate`` run (default: the last), as `lusifer report` prints."""
        run = run_id or self.last_run_id
        if run is None:
            raise ConfigurationError("nothing rated yet: call rate(test_df) first")
        engine = self._engine()
        found = read_results(engine, run)
        if (found.ratings["true_rating"] == 0).any():
            raise DataError(
                f"run {run} was rated without real ratings (test_df had no "
                f"{self.columns.rating!r} column): nothing to compare with"
            )
        folds = tuple(found.config.get("folds", (self.fold,)))
        return fold_results_frame(aggregate_run(engine, run, folds))

    def score(self, rated: pd.DataFrame) -> pd.DataFrame:
        """The report's metrics of a DataFrame with real and simulated ratings (e.g. ``rate``'s)."""
        return score_frame(rated, self.columns.rating)

    def results(self, run_id: str | None = None) -> Results:
        """DataFrames of a stored run (default: the last ``rate`` run)."""
        run = run_id or self.last_run_id
        if run is None:
            raise ConfigurationError("nothing rated yet: pass a run id or call rate() first")
        return read_results(self._engine(), run)

    @classmethod
    def from_movielens(
        cls, path: str | Path | None = None, *, fold: str = "u1", **kwargs: Any
    ) -> Lusifer:
        """MovieLens 100K (a directory, LUSIFER_DATA_DIR, or downloaded): the fold's training
        ratings as history; its test ratings wait in ``.test_df``."""
        settings = settings_or_fail()
        spec = resolve_dataset_config(Path(path) if path else None, None, settings)
        assert spec.data_dir is not None
        dataset = load_movielens_100k(spec.data_dir, spec.overviews_csv, folds=[fold])
        users_df, items_df, ratings_df, test_df = movielens_frames(dataset, fold)
        fields = ("year", "genres", "overview", "age", "gender", "occupation")
        lusifer = cls(
            users_df,
            items_df,
            ratings_df,
            columns={field: field for field in fields},
            fold=fold,
            **kwargs,
        )
        lusifer.test_df = test_df
        return lusifer

    # --- helpers -------------------------------------------------------------------------

    def _identity(self) -> str:
        parts = (self.config.model_dump_json(), self.prompts.content_hash, self.data.fingerprint)
        return "\0".join(parts)

    def _execute(self, plan: Plan, dataset: Dataset) -> Results:
        with self._running() as services:
            outcome = run_plan(services, self.settings, plan, dataset, self.console)
            if outcome == "stored":
                self.console.print(f"run {plan.run['id']} found finished: read back, no LLM call")
            found = read_results(services.engine, str(plan.run["id"]))
        if plan.expected_ratings:
            self.last_run_id = str(plan.run["id"])
        return found
