"""Simulated users as a training environment for recommenders (Gymnasium).

**Episode.** One user of the configured fold, drawn by the reset seed or named with
``options={"user_id": u}``. The episode starts from the user's phase-1 profile: the final
profile of the finished run ``EnvConfig.run_id`` when it has one for the user, else a profile
built on demand with the same prompts from the user's last ``profile_history`` training ratings.

**Action.** A slate: ``slate_size`` item indices (``MultiDiscrete``; index -> dataset id in
``env.item_ids``). **Masking rule:** items the user rated in training, items already shown in
this episode and repeats within a slate are masked. ``info["action_mask"]`` (int8, 1 =
allowed; also ``env.action_mask()``) says which items the next slate may hold; it plugs into
``env.action_space.sample(mask=(mask,) * slate_size)``. A masked item in a slate is not shown to
the user (no LLM call for it) and costs ``invalid_penalty`` reward. When fewer than
``slate_size`` items remain allowed the episode is truncated. ``env.action_masks()`` is the
same mask as sb3-contrib reads it for ``MultiDiscrete``: bool, the item mask tiled once per slot.
**Repeats within a slate:** per-slot masks cannot forbid them (each slot is masked, and sampled,
on its own), so the environment treats a repeat as a masked item: only its first occurrence is
shown, each repeat costs ``invalid_penalty`` and is marked in ``info["repeated"]``.

**Single item.** ``SingleItemEnv`` (slate size 1) has a ``Discrete(n_items)`` action for DQN and
other discrete-only algorithms; its ``action_masks()`` is the bool item mask.

**Libraries.** ``gymnasium.make("lusifer/MovieLens100K-v0", ...)`` and
``"lusifer/MovieLens100K-SingleItem-v0"`` (``lusifer.env.registration``);
``lusifer.env.sb3_vec.SB3VecEnv`` is Stable-Baselines3's ``VecEnv`` over the vector
environment (the ``rl`` extra).

**Step.** The user rates the slate through the LLM with the batch runs' own prompts,
validation, re-asking, call cache and token accounting (``lusifer.method.dialogues``), seeing its
profile and its last ``recent_k`` ratings, the episode's included. Every ``update_every`` steps
the profile is updated from the ratings of those steps, with the LLM's one-sentence explanation
of what changed. Every profile of the episode is stored (``EnvProfileUpdate``) and returned in
``info["profile_history"]``; the current one is ``info["profile"]``.

**Reward** (``EnvConfig.reward``, or any ``reward_fn(ratings) -> float``; see
``lusifer.env.rewards``): ``mean_rating`` (0 when nothing was rated), ``count_ge_4``,
``sum_centered`` (sum of rating - 3); minus ``invalid_penalty`` per masked item.

**End.** Truncated after ``max_steps`` steps. Terminated when the user leaves: when
``leave_below`` is set and ``leave_patience`` slates in a row have a mean rating below it (or no
rated item). A rule rather than asking the LLM: it costs no call, is reproducible, and a small
model's yes/no would be noise.

**Observation.** A float32 vector in [-1, 1]: the last ``obs_window`` ratings (item features
and rating), the profile through a pluggable encoder (default: a 64-dim hashing bag of words),
and the episode's progress; see ``lusifer.env.observation``.

**Info.** ``user_id``, ``step``, ``profile``, ``explanation`` (of the latest profile),
``profile_updated``, ``profile_history`` (dicts: step, source, profile, explanation, call_key,
item_ids), ``action_mask``; after a step also ``slate``, ``ratings`` (aligned with the slate, 0:
not rated), ``valid`` (False: masked or repeated), ``repeated``, ``missing`` (items the LLM left
unrated), ``reasks``, ``left``. The episode's database id is ``env.episode_id`` (kept out of
``info``: it is random).

**Scale.** ``SimulatedUserVectorEnv`` steps N users at once: in threads, or as Celery jobs
(``lusifer.env_step``, ids only) when a broker is configured; results are read from the database.
"""

from lusifer.env.catalog import Catalog
from lusifer.env.config import REWARD_NAMES, EnvConfig, RewardName
from lusifer.env.env import SimulatedUserEnv
from lusifer.env.executors import CeleryExecutor, LocalExecutor, StepExecutor
from lusifer.env.observation import HashingEncoder, ObservationLayout, ProfileEncoder
from lusifer.env.registration import MOVIELENS, MOVIELENS_SINGLE_ITEM, register_envs
from lusifer.env.rewards import REWARDS, RewardFn
from lusifer.env.simulator import Simulator
from lusifer.env.single_item import SingleItemEnv
from lusifer.env.store import ProfileVersion, profile_history
from lusifer.env.vector import SimulatedUserVectorEnv

register_envs()

__all__ = [
    "MOVIELENS",
    "MOVIELENS_SINGLE_ITEM",
    "REWARDS",
    "REWARD_NAMES",
    "Catalog",
    "CeleryExecutor",
    "EnvConfig",
    "HashingEncoder",
    "LocalExecutor",
    "ObservationLayout",
    "ProfileEncoder",
    "ProfileVersion",
    "RewardFn",
    "RewardName",
    "SimulatedUserEnv",
    "SimulatedUserVectorEnv",
    "Simulator",
    "SingleItemEnv",
    "StepExecutor",
    "profile_history",
]
