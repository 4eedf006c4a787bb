"""`lusifer run --dry-run`: what a run would cost, from its real prompts, without calling the LLM.

Every job of the plan is run through the method's own functions against ``EstimatingModel``,
which answers like an obedient model (a profile of ``PROFILE_CHARS`` characters, one rating per
item asked) and counts tokens the way most tokenizers come out on English text: one token per
four characters (no tokenizer is needed, and the stub bills the same way). So the prompts are
rendered for real, profiles included; only the answers' lengths are assumed. Re-asks, which
depend on the model's mistakes, are left out. Nothing is written and no service is started.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from coordinator.plan import Plan
from lusifer.core.config import RunConfig
from lusifer.core.errors import OutputValidationError
from lusifer.data import Dataset, item_info, user_info
from lusifer.llm import ChatRequest, ChatResult
from lusifer.method.dialogues import ItemToRate, RatedItem, build_profile, rate_items
from lusifer.method.prompts import PromptSet
from lusifer.store.call_cache import call_cost
from lusifer.store.job_ids import ProfileInputs, RatingInputs
from lusifer.store.tables import JobKind

# Assumed answer sizes: a profile of a short paragraph and a one-sentence change.
PROFILE_CHARS = 400
CHANGE_CHARS = 100


def approx_tokens(text: str) -> int:
    """Tokens of a text at four characters a token (rounded up)."""
    return math.ceil(len(text) / 4)


class EstimatingModel:
    """A chat model that answers with text of the expected size and counts the tokens."""

    def __init__(self) -> None:
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def complete(self, request: ChatRequest) -> ChatResult:
        """Answer a profile or rating request with a valid answer of the expected length."""
        if request.schema_name == "ratings" and request.json_schema is not None:
            keys = list(request.json_schema.get("properties", {}))
            text = json.dumps({key: 3 for key in keys})
        else:
            text = json.dumps({"profile": "p" * PROFILE_CHARS, "change": "c" * CHANGE_CHARS})
        prompt = approx_tokens("".join(content for _, content in request.messages))
        completion = approx_tokens(text)
        self.calls += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        return ChatResult(text=text, prompt_tokens=prompt, completion_tokens=completion)


@dataclass
class Estimate:
    """Jobs, calls and tokens of one fold (or of the whole run)."""

    jobs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Estimate) -> None:
        """Add another estimate into this one."""
        for kind, n in other.jobs.items():
            self.jobs[kind] += n
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


def estimate_plan(
    plan: Plan, config: RunConfig, dataset: Dataset, prompts: PromptSet
) -> dict[str, Estimate]:
    """The estimate of every fold of a plan, rendering each job's prompts."""
    items = {i: item_info(item, config.overview_chars) for i, item in dataset.items.items()}
    users = {u: user_info(user) for u, user in dataset.users.items()}
    llm = config.llm
    per_fold: dict[str, Estimate] = defaultdict(Estimate)
    # A user's estimated profile, for the rating prompts that carry it.
    profiles: dict[tuple[str, int], str] = {}
    # A plan makes a user's profile job before the rating jobs that carry its profile.
    for job in plan.jobs():
        model = EstimatingModel()
        fold, user = job["fold"], job["user_id"]
        if job["kind"] == JobKind.PROFILE:
            inputs = ProfileInputs.model_validate_json(job["inputs_json"])
            batches = [[RatedItem(i, items[i], r) for i, r in batch] for batch in inputs.batches]
            steps = build_profile(model, prompts, llm, user_info=users[user], batches=batches)
            profiles[(fold, user)] = steps[-1].profile if steps else ""
        else:
            rating = RatingInputs.model_validate_json(job["inputs_json"])
            # The estimator answers validly; an invalid answer would only end the job early.
            with suppress(OutputValidationError):
                rate_items(
                    model,
                    prompts,
                    llm,
                    user_info=users[user],
                    profile=profiles.get((fold, user), ""),
                    recent=[RatedItem(i, items[i], r) for i, r in rating.recent],
                    items=[ItemToRate(i, items[i]) for i in rating.items],
                    max_reask=0,
                )
        estimate = per_fold[fold]
        estimate.jobs[job["kind"]] += 1
        estimate.calls += model.calls
        estimate.prompt_tokens += model.prompt_tokens
        estimate.completion_tokens += model.completion_tokens
    return {fold: per_fold[fold] for fold in config.folds if fold in per_fold}


def total_of(per_fold: dict[str, Estimate]) -> Estimate:
    """The sum of the folds' estimates."""
    total = Estimate()
    for estimate in per_fold.values():
        total.add(estimate)
    return total


def print_estimate(
    console: Console, run_id: str, config: RunConfig, per_fold: dict[str, Estimate]
) -> None:
    """A table per fold and a one-line total, saying what was assumed."""
    table = Table(
        title=f"Dry run {run_id} — nothing was called or written",
        title_justify="left",
        header_style="bold",
    )
    for name in ("fold", "profile jobs", "rating jobs", "LLM calls", "prompt tok", "compl. tok"):
        table.add_column(name, justify="left" if name == "fold" else "right")
    table.add_column("cost $", justify="right")
    # A Batch API run pays the discounted price.
    factor = 1.0 - config.batch.discount if config.batch is not None else 1.0
    total = total_of(per_fold)
    rows = [*per_fold.items(), *([("total", total)] if len(per_fold) > 1 else [])]
    for fold, e in rows:
        cost = factor * call_cost(config.llm, e.prompt_tokens, e.completion_tokens)
        table.add_row(
            fold,
            f"{e.jobs[JobKind.PROFILE]:,}",
            f"{e.jobs[JobKind.RATING]:,}",
            f"{e.calls:,}",
            f"{e.prompt_tokens:,}",
            f"{e.completion_tokens:,}",
            f"{cost:.4f}",
        )
    console.print(table)
    cost = factor * call_cost(config.llm, total.prompt_tokens, total.completion_tokens)
    console.print(
        f"estimate: {total.calls} calls, {total.prompt_tokens} prompt tokens, "
        f"{total.completion_tokens} completion tokens, ${cost:.4f} at "
        f"${config.llm.price_prompt_per_mtok}/{config.llm.price_completion_per_mtok} per 1M "
        f"tokens{' less the batch discount' if config.batch is not None else ''} "
        "(4 characters a token, no re-asks)",
        highlight=False,
        soft_wrap=True,
    )
