"""The configuration of a simulated-user environment: what an episode is and how it is scored.

It is stored with the environment (``EnvSpec``) as JSON, so workers step episodes with exactly
the prompts, model and sizes the environment was created with. It holds no secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lusifer.core.config import LLMConfig
from lusifer.core.errors import ConfigurationError

RewardName = Literal["mean_rating", "count_ge_4", "sum_centered"]
REWARD_NAMES: tuple[RewardName, ...] = ("mean_rating", "count_ge_4", "sum_centered")


class EnvConfig(BaseModel):
    """What an episode is: the user's data, the slate, the profile updates, reward and end."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: LLMConfig
    fold: str = Field(default="u1", description="Training split the users' histories come from")
    run_id: str | None = Field(
        default=None,
        description="Take initial profiles from this finished run's ProfileStep rows "
        "(same fold); None, or a user the run lacks: build the profile on demand",
    )
    slate_size: int = Field(default=5, ge=1, description="Items recommended per step")
    max_steps: int = Field(default=20, ge=1, description="Steps before truncation")
    update_every: int = Field(
        default=1, ge=1, description="Update the profile from the new ratings every N steps"
    )
    reward: RewardName = "mean_rating"
    invalid_penalty: float = Field(
        default=1.0, ge=0.0, description="Subtracted from the reward per masked item in a slate"
    )
    leave_below: float | None = Field(
        default=None,
        ge=1.0,
        le=5.0,
        description="The user leaves (terminated) when the mean rating of a slate stays "
        "below this for leave_patience steps in a row; None: never leaves",
    )
    leave_patience: int = Field(default=2, ge=1)
    obs_window: int = Field(default=10, ge=1, description="Recent ratings in the observation")
    profile_history: int = Field(default=40, ge=1, description="Last N training ratings")
    profile_batch: int = Field(default=10, ge=1, description="Ratings per profile build step")
    recent_k: int = Field(default=10, ge=0, description="Recent rated items in rating prompts")
    overview_chars: int = Field(default=600, ge=0, description="0 leaves overviews out")
    max_reask: int = Field(default=2, ge=0)
    prompt_set: str = "lusifer"
    prompts_dir: Path | None = None

    @model_validator(mode="after")
    def _sizes_make_sense(self) -> EnvConfig:
        if self.profile_batch > self.profile_history:
            raise ValueError(
                f"profile batch {self.profile_batch} is larger than the profile history "
                f"{self.profile_history}: use a batch no larger than the history"
            )
        return self

    def history_needed(self) -> int:
        """How much of a user's training history the workers need (profile and prompts)."""
        return max(self.profile_history, self.recent_k)


def parse_env_config(data: object) -> EnvConfig:
    """Validate an environment configuration, turning pydantic's report into one clear line."""
    try:
        return EnvConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "configuration"
        raise ConfigurationError(
            f"invalid environment configuration at {where}: {first['msg']}"
        ) from None
