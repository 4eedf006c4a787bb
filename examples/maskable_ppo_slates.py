"""Train MaskablePPO (sb3-contrib) on slates with action masks against LLM-simulated users.

    python -m examples.maskable_ppo_slates --stub                     # the stub LLM
    python -m examples.maskable_ppo_slates --local-model --steps 200  # SmolLM2 on this machine
    python -m examples.maskable_ppo_slates --base-url URL --model NAME

The environment's ``action_masks()`` is sb3-contrib's format for a ``MultiDiscrete`` slate:
the item mask (items not rated in training and not shown yet) tiled once per slot. Slots are
masked independently, so a slate may still repeat an item; the repeat is not shown and costs
``invalid_penalty`` (counted as "repeats" below). Items forbidden by the mask are never chosen.
Needs the ``rl`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sb3_contrib import MaskablePPO
from stable_baselines3.common.vec_env import VecEnv

from examples.rl_common import Training, run


def make_agent(env: VecEnv, args: argparse.Namespace) -> MaskablePPO:
    """MaskablePPO with rollouts short enough that a few hundred steps make several updates."""
    return MaskablePPO(
        "MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=4, seed=args.seed, device="cpu"
    )


def main(argv: Sequence[str] | None = None) -> tuple[int, Training | None]:
    """Train and report; the exit code and what was recorded."""
    return run(argv, __doc__ or "", "MaskablePPO", make_agent)


if __name__ == "__main__":
    sys.exit(main()[0])
