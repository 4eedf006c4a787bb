"""Stable-Baselines3's ``VecEnv`` over ``SimulatedUserVectorEnv``: N users per LLM latency.

SB3 cannot train on a gymnasium ``VectorEnv``, and its ``DummyVecEnv`` steps sub-environments
one after another (N LLM latencies per step). ``SB3VecEnv`` sends the steps of all users to the
vector environment's executor as one batch (threads, or Celery workers when a broker is
configured) and follows SB3's conventions: ``reset()`` returns observations only (infos in
``reset_infos``), ``step_wait()`` returns ``dones`` and a list of info dicts, and a user whose
episode ended is reset within the same step: ``infos[i]["terminal_observation"]`` holds the last
observation and ``infos[i]["TimeLimit.truncated"]`` says whether the episode was cut short.
Those resets go to the executor as a second batch, so a step in which episodes end costs two
latencies (the reset builds the new user's profile unless ``EnvConfig.run_id`` has it).

``env_method("action_masks")`` gives sb3-contrib's masks: the flat tiled per-slot mask of a
slate, or the item mask in single-item mode. Needs the ``rl`` extra (stable-baselines3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from lusifer.env.env import SimulatedUserEnv
from lusifer.env.single_item import SingleItemEnv
from lusifer.env.vector import SimulatedUserVectorEnv

try:
    from stable_baselines3.common.env_util import is_wrapped
    from stable_baselines3.common.vec_env import VecEnv
    from stable_baselines3.common.vec_env.base_vec_env import (
        VecEnvIndices,
        VecEnvObs,
        VecEnvStepReturn,
    )
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        f"lusifer.env.sb3_vec needs Stable-Baselines3 ({err}): pip install 'lusifer[rl]'"
    ) from None


class SB3VecEnv(VecEnv):
    """The users of a ``SimulatedUserVectorEnv`` as an SB3 ``VecEnv`` (slates or single items)."""

    def __init__(self, vector: SimulatedUserVectorEnv, *, single_item: bool = False) -> None:
        self.vector = vector
        self.single_item = single_item
        self.users: list[SimulatedUserEnv] = list(vector.envs)
        # What SB3 sees of each user: get_attr and env_method reach these.
        self.views: list[gym.Env[Any, Any]] = (
            [SingleItemEnv(env) for env in self.users] if single_item else list(self.users)
        )
        self._actions: NDArray[Any] | None = None
        self._obs_shape: tuple[int, ...] = tuple(vector.single_observation_space.shape or ())
        super().__init__(
            vector.num_envs, vector.single_observation_space, self.views[0].action_space
        )

    # --- SB3's VecEnv API --------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Start an episode for every user (seeds and options set by ``seed``/``set_options``)."""
        requests = [
            env.begin_reset(seed=self._seeds[n], options=self._options[n] or None)
            for n, env in enumerate(self.users)
        ]
        results = self.vector.sim.submit(requests)
        observations = []
        for n, env in enumerate(self.users):
            obs, self.reset_infos[n] = env.finish_reset(results[requests[n].id])
            observations.append(obs)
        self._reset_seeds()
        self._reset_options()
        return np.stack(observations)

    def step_async(self, actions: NDArray[Any]) -> None:
        """Keep the actions for ``step_wait``."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every user in one batch; reset those whose episode ended in a second one."""
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(): call step(actions)")
        slates = self._slates(self._actions)
        self._actions = None
        requests = [env.begin_step(slate) for env, slate in zip(self.users, slates, strict=True)]
        results = self.vector.sim.submit(requests)
        observations = np.zeros((self.num_envs, *self._obs_shape), dtype=np.float32)
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=np.bool_)
        infos: list[dict[str, Any]] = []
        for n, env in enumerate(self.users):
            obs, reward, terminated, truncated, info = env.finish_step(results[requests[n].id])
            info["TimeLimit.truncated"] = truncated and not terminated
            observations[n], rewards[n], dones[n] = obs, reward, terminated or truncated
            infos.append(info)
        ended = [int(n) for n in np.flatnonzero(dones)]
        if ended:
            resets = [self.users[n].begin_reset() for n in ended]
            reset_results = self.vector.sim.submit(resets)
            for n, request in zip(ended, resets, strict=True):
                infos[n]["terminal_observation"] = observations[n].copy()
                observations[n], self.reset_infos[n] = self.users[n].finish_reset(
                    reset_results[request.id]
                )
        return observations, rewards, dones, infos

    def close(self) -> None:
        """Release the executor."""
        self.vector.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of each user's environment (through the single-item wrapper)."""
        return [self.views[n].get_wrapper_attr(attr_name) for n in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of each user's environment."""
        for n in self._indices(indices):
            setattr(self.views[n], attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call a method of each user's environment (``action_masks`` for sb3-contrib)."""
        return [
            self.views[n].get_wrapper_attr(method_name)(*method_args, **method_kwargs)
            for n in self._indices(indices)
        ]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Whether each user's environment is wrapped by ``wrapper_class``."""
        return [is_wrapped(self.views[n], wrapper_class) for n in self._indices(indices)]

    # --- helpers -------------------------------------------------------------------------

    def action_masks(self) -> NDArray[np.bool_]:
        """sb3-contrib's mask of every user, shape (num_envs, mask length)."""
        return np.stack(self.env_method("action_masks"))

    def _indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def _slates(self, actions: NDArray[Any]) -> Sequence[NDArray[np.int64]]:
        """Each user's slate, checked before any user moves (a bad action moves none)."""
        if len(actions) != self.num_envs:
            raise ValueError(f"{len(actions)} actions for {self.num_envs} users")
        slates = []
        for n, action in enumerate(actions):
            view = self.views[n]
            slate = view.action(action) if isinstance(view, SingleItemEnv) else action
            slate = np.asarray(slate, dtype=np.int64).reshape(-1)
            if not self.users[n].action_space.contains(slate):
                raise ValueError(f"action {n} is not a slate of item indices: {action!r}")
            slates.append(slate)
        return slates


def make_sb3_vec_env(
    num_envs: int, *, single_item: bool = False, **vector_kwargs: Any
) -> SB3VecEnv:
    """An ``SB3VecEnv`` over a new ``SimulatedUserVectorEnv(num_envs, **vector_kwargs)``."""
    return SB3VecEnv(SimulatedUserVectorEnv(num_envs, **vector_kwargs), single_item=single_item)
