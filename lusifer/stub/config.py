"""Run-time configuration of the stub server: latency, fault injection, models and key."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr

FaultKind = Literal[
    "429",
    "500",
    "503",
    "timeout",
    "reset",
    "truncated",
    "prose",
    "wrong_keys",
    "out_of_range",
    "missing_keys",
    "non_integer",
    # Hostile answers, only when asked for (not in the default mix): a correct answer with a
    # NUL character in its text, one whose usage block reports 10**15 tokens, and a 429 whose
    # Retry-After asks for three years.
    "nul_byte",
    "huge_usage",
    "retry_after_huge",
]
HOSTILE_FAULT_KINDS: tuple[FaultKind, ...] = ("nul_byte", "huge_usage", "retry_after_huge")
FAULT_KINDS: tuple[FaultKind, ...] = tuple(
    kind for kind in get_args(FaultKind) if kind not in HOSTILE_FAULT_KINDS
)


class StubConfig(BaseModel):
    """What the stub serves and how badly it behaves; every field can change at run time."""

    # Unknown fields are an error so a typo in a test's fault config does not pass silently;
    # frozen because request threads share it: changes go through ``updated`` and a swap.
    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_s: float = Field(default=0.0, ge=0.0)
    # Extra latency drawn uniformly from [0, latency_jitter_s]: latency_s stays a lower bound.
    latency_jitter_s: float = Field(default=0.0, ge=0.0)
    fault_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    faults: list[FaultKind] = Field(default_factory=lambda: list(FAULT_KINDS))
    fault_seed: int = 0
    # When set, every n-th chat request gets the next fault kind in turn; fault_rate is ignored.
    fault_every_n: int | None = Field(default=None, ge=1)
    timeout_sleep_s: float = Field(default=30.0, ge=0.0)
    # Seconds from a batch's creation until it completes (its lines are answered at once).
    batch_delay_s: float = Field(default=0.0, ge=0.0)
    models: list[str] = Field(default_factory=lambda: ["stub-model"], min_length=1)
    # A secret so that a repr or a config dump never shows the key.
    api_key: SecretStr | None = None

    def updated(self, **fields: Any) -> StubConfig:
        """A validated copy with some fields replaced."""
        return StubConfig.model_validate({**self.model_dump(), **fields})

    def public(self) -> dict[str, Any]:
        """The config as JSON-ready data, with the key reduced to whether one is set."""
        data = self.model_dump(mode="json", exclude={"api_key"})
        data["api_key_set"] = self.api_key is not None
        return data
