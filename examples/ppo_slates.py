"""Train PPO (Stable-Baselines3) to recommend slates to LLM-simulated MovieLens users.

    python -m examples.ppo_slates --stub                     # the stub LLM (a quick check)
    python -m examples.ppo_slates --local-model --steps 200  # SmolLM2 on this machine
    python -m examples.ppo_slates --base-url URL --model NAME

An action is a slate of ``--slate-size`` items (``MultiDiscrete``). Plain PPO reads no mask: a
slate holding an item the user already rated or saw is penalised (``invalid_penalty``) and that
item is not shown; MaskablePPO (``maskable_ppo_slates.py``) avoids them. Prints the reward per
episode and saves the learning curve as a PNG. Needs the ``rl`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

from examples.rl_common import Training, run


def make_agent(env: VecEnv, args: argparse.Namespace) -> PPO:
    """PPO with rollouts short enough that a few hundred steps make several updates."""
    return PPO(
        "MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=4, seed=args.seed, device="cpu"
    )


def main(argv: Sequence[str] | None = None) -> tuple[int, Training | None]:
    """Train and report; the exit code and what was recorded."""
    return run(argv, __doc__ or "", "PPO", make_agent)


if __name__ == "__main__":
    sys.exit(main()[0])
