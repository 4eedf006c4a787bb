"""``SimulatedUserVectorEnv``: many simulated users stepped at once.

The steps of all sub-environments go to the executor as one batch: threads of this process
when no broker is configured, Celery workers when one is (``LUSIFER_BROKER_URL``). A vector
step therefore costs about one LLM latency (two on steps that also update profiles), not N.
Sub-environments that end are reset on the next step (``AutoresetMode.NEXT_STEP``): that step
ignores their action and returns the first observation of their new episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray
from sqlalchemy import Engine

from lusifer.core.settings import get_settings
from lusifer.data import Dataset
from lusifer.env.config import EnvConfig
from lusifer.env.env import SimulatedUserEnv
from lusifer.env.executors import StepExecutor
from lusifer.env.observation import ProfileEncoder
from lusifer.env.rewards import RewardFn
from lusifer.env.simulator import (
    DEFAULT_ENCODER,
    Simulator,
    default_database_url,
    executor_from_settings,
)
from lusifer.llm import ChatModel
from lusifer.store.engines import get_engine


class SimulatedUserVectorEnv(VectorEnv[NDArray[np.float32], NDArray[np.int64], NDArray[Any]]):
    """``num_envs`` independent ``SimulatedUserEnv`` episodes sharing one executor."""

    # A plain class attribute, as gymnasium declares it.
    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}  # noqa: RUF012

    def __init__(
        self,
        num_envs: int,
        dataset: Dataset,
        config: EnvConfig,
        *,
        engine: Engine | None = None,
        model: ChatModel | None = None,
        executor: StepExecutor | None = None,
        profile_encoder: ProfileEncoder | None = DEFAULT_ENCODER,
        reward_fn: RewardFn | None = None,
        users: Sequence[int] | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        settings = get_settings()
        engine = engine or get_engine(default_database_url(settings))
        if executor is None:
            executor = executor_from_settings(engine, model, config.llm, settings)
        self.sim = Simulator(
            dataset,
            config,
            engine=engine,
            model=model,
            executor=executor,
            profile_encoder=profile_encoder,
            reward_fn=reward_fn,
            users=users,
        )
        self.envs = [SimulatedUserEnv(simulator=self.sim) for _ in range(num_envs)]
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=np.bool_)

    @property
    def episode_ids(self) -> list[str | None]:
        """The database id of each sub-environment's current episode."""
        return [env.episode_id for env in self.envs]

    def action_masks(self) -> NDArray[np.int8]:
        """The action mask of each sub-environment, shape (num_envs, n_items)."""
        return np.stack([env.action_mask() for env in self.envs])

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Reset every sub-environment; ``options["user_ids"]`` names each one's user.

        An int seed seeds sub-environment i with ``seed + i``.
        """
        if seed is None or isinstance(seed, int):
            seeds: list[int | None] = [
                None if seed is None else seed + i for i in range(self.num_envs)
            ]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"{len(seeds)} seeds for {self.num_envs} sub-environments")
        user_ids = list((options or {}).get("user_ids") or [None] * self.num_envs)
        if len(user_ids) != self.num_envs:
            raise ValueError(f"{len(user_ids)} user ids for {self.num_envs} sub-environments")
        requests = [
            env.begin_reset(seed=s, options={"user_id": u})
            for env, s, u in zip(self.envs, seeds, user_ids, strict=True)
        ]
        results = self.sim.submit(requests)
        infos: dict[str, Any] = {}
        observations = []
        for n, env in enumerate(self.envs):
            obs, info = env.finish_reset(results[requests[n].id])
            observations.append(obs)
            infos = self._add_info(infos, info, n)
        self._autoreset[:] = False
        return np.stack(observations), infos

    def step(
        self, actions: NDArray[np.int64]
    ) -> tuple[
        NDArray[np.float32],
        NDArray[np.float64],
        NDArray[np.bool_],
        NDArray[np.bool_],
        dict[str, Any],
    ]:
        """Step every sub-environment at once (and reset those that ended last step)."""
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"{actions.shape[0]} actions for {self.num_envs} sub-environments")
        for n, env in enumerate(self.envs):
            # Every slate is checked before any sub-environment moves, so a bad one moves none.
            if not self._autoreset[n] and not env.action_space.contains(
                np.asarray(actions[n], dtype=np.int64)
            ):
                raise ValueError(f"action {n} is not a slate of item indices: {actions[n]!r}")
        requests = [
            env.begin_reset() if self._autoreset[n] else env.begin_step(actions[n])
            for n, env in enumerate(self.envs)
        ]
        results = self.sim.submit(requests)
        observations = []
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminations = np.zeros(self.num_envs, dtype=np.bool_)
        truncations = np.zeros(self.num_envs, dtype=np.bool_)
        infos: dict[str, Any] = {}
        for n, env in enumerate(self.envs):
            result = results[requests[n].id]
            if self._autoreset[n]:
                obs, info = env.finish_reset(result)
            else:
                obs, reward, terminated, truncated, info = env.finish_step(result)
                rewards[n], terminations[n], truncations[n] = reward, terminated, truncated
            observations.append(obs)
            infos = self._add_info(infos, info, n)
        self._autoreset = terminations | truncations
        return np.stack(observations), rewards, terminations, truncations, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Release the executor."""
        self.sim.close()
