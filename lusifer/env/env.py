"""``SimulatedUserEnv``: one simulated user per episode, recommending a slate per step."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from numpy.typing import NDArray
from sqlalchemy import Engine

from lusifer.core.errors import DataError
from lusifer.data import Dataset
from lusifer.env.config import EnvConfig
from lusifer.env.executors import StepExecutor
from lusifer.env.observation import ProfileEncoder
from lusifer.env.rewards import RewardFn, slate_reward, update_low_streak
from lusifer.env.simulator import DEFAULT_ENCODER, Simulator
from lusifer.env.store import (
    NewRequest,
    ProfileVersion,
    RequestResult,
    reset_request,
    step_request,
)
from lusifer.llm import ChatModel
from lusifer.store.tables import JobState

Obs = NDArray[np.float32]
Action = NDArray[np.int64]


@dataclass
class _Episode:
    """The environment's side of an episode; the database holds the user's side."""

    id: str
    user_id: int
    blocked: NDArray[np.bool_]  # rated in training or shown in this episode
    recent: list[tuple[int, int]]  # (item index, rating), oldest first
    profiles: list[ProfileVersion] = field(default_factory=list)
    step: int = 0
    low_streak: int = 0
    done: bool = False
    pending: str | None = None
    slate: NDArray[np.int64] | None = None
    valid: NDArray[np.bool_] | None = None
    repeated: NDArray[np.bool_] | None = None


class SimulatedUserEnv(gym.Env[Obs, Action]):
    """A recommender's environment whose user is an LLM acting out a MovieLens user.

    See ``lusifer.env`` for the episode, the action mask, rewards, leaving and the observation.
    """

    # A plain class attribute, as gymnasium declares it.
    # render_fps: gymnasium's checker asks for one; a text frame per step has no natural rate.
    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        dataset: Dataset | None = None,
        config: EnvConfig | None = None,
        *,
        engine: Engine | None = None,
        model: ChatModel | None = None,
        executor: StepExecutor | None = None,
        profile_encoder: ProfileEncoder | None = DEFAULT_ENCODER,
        reward_fn: RewardFn | None = None,
        users: Sequence[int] | None = None,
        simulator: Simulator | None = None,
        render_mode: str | None = None,
    ) -> None:
        if simulator is None:
            if dataset is None or config is None:
                raise TypeError("SimulatedUserEnv needs a dataset and a config (or a simulator)")
            simulator = Simulator(
                dataset,
                config,
                engine=engine,
                model=model,
                executor=executor,
                profile_encoder=profile_encoder,
                reward_fn=reward_fn,
                users=users,
            )
            self._owns_simulator = True
        else:
            self._owns_simulator = False
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.sim = simulator
        cfg = simulator.config
        n_items = simulator.catalog.n_items
        self.action_space = spaces.MultiDiscrete(np.full(cfg.slate_size, n_items, dtype=np.int64))
        self.observation_space = spaces.Box(
            -1.0, 1.0, shape=(simulator.observations.layout.size,), dtype=np.float32
        )
        self._episode: _Episode | None = None

    # --- the public API --------------------------------------------------------------------

    @property
    def episode_id(self) -> str | None:
        """Id of the current episode in the database (kept out of ``info``: it is random)."""
        return self._episode.id if self._episode else None

    @property
    def item_ids(self) -> tuple[int, ...]:
        """Dataset item id of each action index."""
        return self.sim.catalog.item_ids

    @property
    def item_features(self) -> NDArray[np.float32]:
        """Feature vector of each item (year, genres), by action index."""
        return self.sim.catalog.features.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Obs, dict[str, Any]]:
        """Start an episode with the user ``options["user_id"]``, or one drawn by the seed."""
        new = self.begin_reset(seed=seed, options=options)
        return self.finish_reset(self.sim.submit([new])[new.id])

    def step(self, action: Action) -> tuple[Obs, SupportsFloat, bool, bool, dict[str, Any]]:
        """Show the slate to the user; the LLM rates it (and maybe updates the profile)."""
        new = self.begin_step(action)
        return self.finish_step(self.sim.submit([new])[new.id])

    def action_mask(self) -> NDArray[np.int8]:
        """1 for the items the next slate may hold, 0 for masked ones (int8, for sample())."""
        if self._episode is None:
            raise ResetNeeded("call reset() before asking for the action mask")
        return (~self._episode.blocked).astype(np.int8)

    def action_masks(self) -> NDArray[np.bool_]:
        """sb3-contrib's mask of a slate: the item mask tiled once per slot (bool, flat).

        Slots are masked independently, so a slate may repeat an item: the repeat is not shown
        and costs ``invalid_penalty`` like a masked item (``info["repeated"]`` marks it).
        """
        return np.tile(self.action_mask().astype(np.bool_), self.sim.config.slate_size)

    def render(self) -> str | None:
        """ANSI text: the user, the current profile and the last slate's ratings."""
        if self.render_mode != "ansi" or self._episode is None:
            return None
        ep = self._episode
        catalog = self.sim.catalog
        lines = [f"user {ep.user_id}, step {ep.step}", f"profile: {ep.profiles[-1].profile}"]
        for index, rating in ep.recent[-self.sim.config.slate_size :]:
            lines.append(f"  item {catalog.item_ids[index]}: {rating}")
        return "\n".join(lines)

    def close(self) -> None:
        """Release the executor (when this environment owns it)."""
        if self._owns_simulator:
            self.sim.close()

    # --- the two halves of reset and step, which the vector environment batches ---------------

    def begin_reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> NewRequest:
        """Choose the user; return the new episode's reset request (for ``Simulator.submit``)."""
        super().reset(seed=seed)
        user_id = (options or {}).get("user_id")
        if user_id is None:
            user_id = self.sim.users[int(self.np_random.integers(len(self.sim.users)))]
        user_id = int(user_id)
        catalog = self.sim.catalog
        if user_id not in catalog.histories:
            raise DataError(
                f"user {user_id} has no training ratings in fold {self.sim.config.fold}; "
                "choose a user with a history"
            )
        history = catalog.histories[user_id]
        episode_id = f"{self.sim.spec_id}-{secrets.token_hex(8)}"
        new = reset_request(
            episode_id, self.sim.spec_id, user_id, history[-self.sim.config.history_needed() :]
        )
        self._episode = _Episode(
            id=episode_id,
            user_id=user_id,
            blocked=catalog.rated_mask(user_id),
            recent=[(catalog.index_of[i], r) for i, r in history[-self.sim.config.obs_window :]],
            pending=new.id,
        )
        return new

    def finish_reset(self, result: RequestResult) -> tuple[Obs, dict[str, Any]]:
        """Take the initial profile; return the first observation and info."""
        ep = self._pending()
        self._check(ep, result)
        assert result.profile is not None
        ep.profiles = [result.profile]
        return self._observe(ep), self._info(ep, updated=True)

    def begin_step(self, action: Action) -> NewRequest:
        """Check the slate and mask what must be masked; return the step's request."""
        ep = self._episode
        if ep is None or ep.done:
            raise ResetNeeded("the episode is over (or never started): call reset()")
        slate = np.asarray(action, dtype=np.int64).reshape(-1)
        if slate.shape != (self.sim.config.slate_size,) or not self.action_space.contains(slate):
            raise ValueError(
                f"a slate is {self.sim.config.slate_size} item indices in "
                f"0..{self.sim.catalog.n_items - 1}, got {action!r}"
            )
        valid = np.zeros(len(slate), dtype=np.bool_)
        repeated = np.zeros(len(slate), dtype=np.bool_)
        for n, index in enumerate(slate):
            # Masked, or already earlier in this slate: not shown, penalised.
            valid[n] = not ep.blocked[index]
            repeated[n] = bool(np.any(slate[:n] == index))
            ep.blocked[index] = True
        item_ids = [self.sim.catalog.item_ids[i] for i in slate[valid]]
        ep.slate, ep.valid, ep.repeated = slate, valid, repeated
        new = step_request(ep.id, ep.step + 1, item_ids)
        ep.pending = new.id
        return new

    def finish_step(self, result: RequestResult) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        """Take the ratings; compute reward, termination and the next observation."""
        ep = self._pending()
        assert ep.slate is not None and ep.valid is not None and ep.repeated is not None
        self._check(ep, result)
        cfg, catalog = self.sim.config, self.sim.catalog
        ratings = np.zeros(len(ep.slate), dtype=np.int64)
        for n, index in enumerate(ep.slate):
            if ep.valid[n]:
                ratings[n] = result.ratings.get(catalog.item_ids[index], 0)
        given = [int(r) for r in ratings if r > 0]
        reward = slate_reward(
            self.sim.reward_fn, given, int((~ep.valid).sum()), cfg.invalid_penalty
        )
        ep.recent += [(int(i), int(r)) for i, r in zip(ep.slate, ratings, strict=True) if r > 0]
        ep.recent = ep.recent[-cfg.obs_window :]
        ep.step += 1
        ep.low_streak = update_low_streak(ep.low_streak, given, cfg.leave_below)
        terminated = cfg.leave_below is not None and ep.low_streak >= cfg.leave_patience
        exhausted = int((~ep.blocked).sum()) < cfg.slate_size
        truncated = not terminated and (ep.step >= cfg.max_steps or exhausted)
        ep.done = terminated or truncated
        if result.profile is not None:
            ep.profiles.append(result.profile)
        info = self._info(ep, updated=result.profile is not None)
        info.update(
            slate=ep.slate.copy(),
            ratings=ratings,
            valid=ep.valid.copy(),
            repeated=ep.repeated.copy(),
            missing=len(result.missing),
            reasks=result.reasks,
            left=terminated,
        )
        return self._observe(ep), reward, terminated, truncated, info

    # --- helpers -------------------------------------------------------------------------

    def _pending(self) -> _Episode:
        if self._episode is None or self._episode.pending is None:
            raise ResetNeeded("no reset or step is in progress")
        return self._episode

    @staticmethod
    def _check(ep: _Episode, result: RequestResult) -> None:
        rid, ep.pending = ep.pending, None
        if result.state != JobState.DONE:
            ep.done = True  # a failed step ends the episode: its row cannot be asked again
            result.raise_if_failed(str(rid))

    def _observe(self, ep: _Episode) -> Obs:
        return self.sim.observations.build(
            ep.recent, ep.profiles[-1].profile, ep.step, self.sim.config.max_steps
        )

    def _info(self, ep: _Episode, *, updated: bool) -> dict[str, Any]:
        latest = ep.profiles[-1]
        return {
            "user_id": ep.user_id,
            "step": ep.step,
            "profile": latest.profile,
            "explanation": latest.explanation,
            "profile_updated": updated,
            "profile_history": [p.as_info() for p in ep.profiles],
            "action_mask": (~ep.blocked).astype(np.int8),
        }
