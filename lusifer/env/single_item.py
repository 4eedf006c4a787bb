"""Single-item mode: one recommended item per step, as a ``Discrete(n_items)`` action.

Discrete-only algorithms (DQN, QR-DQN, and sb3-contrib's MaskablePPO on a flat action) cannot
read a ``MultiDiscrete`` slate, even of size 1. ``SingleItemEnv`` wraps a ``SimulatedUserEnv``
whose slate size is 1 and maps an item index to the one-item slate. Its ``action_masks()`` is
the item mask as a bool array of ``n_items`` (what sb3-contrib reads); ``info["action_mask"]``
stays int8, what ``Discrete.sample(mask=...)`` takes. Algorithms that read no mask (DQN) may
choose a masked item: it is not shown to the user and costs ``invalid_penalty``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from numpy.typing import NDArray

from lusifer.core.errors import ConfigurationError
from lusifer.env.env import Action, Obs, SimulatedUserEnv


class SingleItemEnv(gym.ActionWrapper[Obs, np.int64, Action]):
    """A ``SimulatedUserEnv`` of slate size 1 with a ``Discrete(n_items)`` action space."""

    def __init__(self, env: SimulatedUserEnv) -> None:
        slate_size = env.sim.config.slate_size
        if slate_size != 1:
            raise ConfigurationError(
                f"single-item mode recommends one item per step, but slate_size is {slate_size}: "
                "set slate_size=1 in the EnvConfig"
            )
        super().__init__(env)
        self.n_items = env.sim.catalog.n_items
        self.action_space = spaces.Discrete(self.n_items)
        self.user_env = env

    def action(self, action: np.int64) -> Action:
        """The one-item slate of an item index."""
        index = np.asarray(action, dtype=np.int64).reshape(-1)
        if index.shape != (1,) or not 0 <= int(index[0]) < self.n_items:
            raise ValueError(
                f"an action is one item index in 0..{self.n_items - 1}, got {action!r}"
            )
        return index

    def action_masks(self) -> NDArray[np.bool_]:
        """The items the next step may recommend (bool, ``n_items``), as sb3-contrib reads it."""
        return self.user_env.action_mask().astype(np.bool_)

    # gymnasium's stubs declare Env.spec an attribute; Wrapper.spec is a property too.
    @property
    def spec(self) -> EnvSpec | None:  # type: ignore[override]
        """The wrapped environment's spec, not a deep copy as gymnasium's wrappers make.

        ``gymnasium.make`` needs a spec, and live arguments (an engine, a model client) cannot
        be deep-copied.
        """
        return self.env.spec

    def render(self) -> Any:
        """The wrapped environment's ANSI text."""
        return self.user_env.render()
