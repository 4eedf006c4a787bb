"""Train DQN (Stable-Baselines3) to recommend one item per step to LLM-simulated users.

    python -m examples.dqn_single_item --stub                     # the stub LLM
    python -m examples.dqn_single_item --local-model --steps 200  # SmolLM2 on this machine
    python -m examples.dqn_single_item --base-url URL --model NAME

Single-item mode: slate size 1 and a ``Discrete(n_items)`` action, which DQN needs. DQN reads
no mask: an item the user rated or saw already is not shown and costs ``invalid_penalty``
(counted as "masked items chosen" below). Needs the ``rl`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stable_baselines3 import DQN
from stable_baselines3.common.vec_env import VecEnv

from examples.rl_common import Training, run


def make_agent(env: VecEnv, args: argparse.Namespace) -> DQN:
    """DQN that starts learning after a short warm-up and explores over the first half."""
    return DQN(
        "MlpPolicy",
        env,
        learning_starts=min(100, args.steps // 4),
        buffer_size=10_000,
        batch_size=32,
        train_freq=4,
        target_update_interval=100,
        exploration_fraction=0.5,
        seed=args.seed,
        device="cpu",
    )


def main(argv: Sequence[str] | None = None) -> tuple[int, Training | None]:
    """Train and report; the exit code and what was recorded."""
    return run(argv, __doc__ or "", "DQN", make_agent, single_item=True, slate_size=1)


if __name__ == "__main__":
    sys.exit(main()[0])
