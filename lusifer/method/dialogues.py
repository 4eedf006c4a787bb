"""The method as plain functions: build or update a profile, rate a chunk of items.

They take a ``ChatModel`` (recorded and cached by the caller), a prompt set and the LLM
configuration; they know nothing of Celery or the database, so the batch runs and the
Gymnasium environment share them.

Each is written once, as a *dialogue*: a generator that yields the requests it needs answered
and is sent their results. ``drive`` answers one with a blocking model and ``drive_async``
with an asyncio one (the worker's event loop), so the method has a single definition whatever
does the I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from lusifer.core.config import LLMConfig
from lusifer.core.errors import OutputValidationError
from lusifer.llm import ChatModel, ChatRequest, ChatResult
from lusifer.method.prompts import PromptSet
from lusifer.method.schemas import (
    PROFILE_SCHEMA,
    PROFILE_SCHEMA_WITH_LENGTHS,
    ProfileAnswer,
    parse_profile,
    parse_ratings,
    rating_schema,
)

T = TypeVar("T")

# Yields the requests to answer, is sent each one's result, returns what it was for.
Dialogue = Generator[ChatRequest, ChatResult, T]


def profile_reasks(max_reask: int) -> int:
    """Re-asks of a profile step under a run's ``max_reask``: at least one.

    A profile answer is prose-tolerant and a lost profile loses a whole user (or, in the
    environment, an episode's update), so a profile gets one more ask even where ratings get
    none. The batch runs and the environment both ask through here.
    """
    return max(1, max_reask)


def drive(dialogue: Dialogue[T], llm: ChatModel) -> T:
    """Run a dialogue to its end, answering each request with a blocking model."""
    try:
        request = next(dialogue)
        while True:
            request = dialogue.send(llm.complete(request))
    except StopIteration as end:
        return end.value  # type: ignore[no-any-return]


async def drive_async(
    dialogue: Dialogue[T], complete: Callable[[ChatRequest], Awaitable[ChatResult]]
) -> T:
    """Run a dialogue to its end, answering each request with an awaitable ``complete``."""
    try:
        request = next(dialogue)
        while True:
            request = dialogue.send(await complete(request))
    except StopIteration as end:
        return end.value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RatedItem:
    """An item with its text and the rating the user gave it."""

    item_id: int
    info: str
    rating: int


@dataclass(frozen=True)
class ItemToRate:
    """An item with its text, to be rated."""

    item_id: int
    info: str


@dataclass(frozen=True)
class ProfileStepResult:
    """One step of profile building."""

    step: int
    item_ids: tuple[int, ...]
    profile: str
    explanation: str
    call_key: str
    reasks: int = 0  # format re-asks this step needed


@dataclass
class RatingOutcome:
    """The valid ratings of a chunk, and what could not be had."""

    ratings: dict[int, int]
    missing: list[int]
    raw_texts: list[str] = field(default_factory=list)
    reasks: int = 0
    problems: list[str] = field(default_factory=list)


def _rated(items: Sequence[RatedItem]) -> list[dict[str, object]]:
    return [{"item_id": r.item_id, "info": r.info, "rating": r.rating} for r in items]


def profile_step(
    llm: ChatModel,
    prompts: PromptSet,
    config: LLMConfig,
    *,
    user_info: str,
    batch: Sequence[RatedItem],
    profile: str | None,
    max_reask: int = 1,
) -> tuple[ProfileAnswer, str]:
    """Write a first profile (``profile is None``) or update one; return it and the call key."""
    answer, key, _reasks = counted_profile_step(
        llm,
        prompts,
        config,
        user_info=user_info,
        batch=batch,
        profile=profile,
        max_reask=max_reask,
    )
    return answer, key


def counted_profile_step(
    llm: ChatModel,
    prompts: PromptSet,
    config: LLMConfig,
    *,
    user_info: str,
    batch: Sequence[RatedItem],
    profile: str | None,
    max_reask: int = 1,
) -> tuple[ProfileAnswer, str, int]:
    """``profile_step`` that also says how many format re-asks it took."""
    return drive(
        profile_step_dialogue(
            prompts, config, user_info=user_info, batch=batch, profile=profile, max_reask=max_reask
        ),
        llm,
    )


def profile_step_dialogue(
    prompts: PromptSet,
    config: LLMConfig,
    *,
    user_info: str,
    batch: Sequence[RatedItem],
    profile: str | None,
    max_reask: int = 1,
) -> Dialogue[tuple[ProfileAnswer, str, int]]:
    """One profile step as a dialogue: the answer, its call key and the re-asks it took."""
    if profile is None:
        user = prompts.render("profile_first", user_info=user_info, ratings=_rated(batch))
    else:
        user = prompts.render(
            "profile_update", user_info=user_info, profile=profile, ratings=_rated(batch)
        )
    messages: tuple[tuple[str, str], ...] = (
        ("system", prompts.render("profile_system")),
        ("user", user),
    )
    request = ChatRequest(
        model=config.model,
        messages=messages,
        temperature=config.temperature,
        max_tokens=config.profile_max_tokens,
        schema_name="profile",
        json_schema=(
            PROFILE_SCHEMA_WITH_LENGTHS
            if config.structured_output == "json_object"
            else PROFILE_SCHEMA
        ),
        structured_output=config.structured_output,
    )
    for reasks in range(max_reask + 1):
        result = yield request
        try:
            return parse_profile(result.text), request.cache_key(), reasks
        except OutputValidationError:
            if reasks == max_reask:
                raise
            # Re-ask in the same conversation, for the format alone.
            request = request.model_copy(
                update={
                    "messages": (
                        *request.messages,
                        ("assistant", result.text),
                        ("user", 'Answer only with a JSON object {"profile": ..., "change": ...}.'),
                    )
                }
            )
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover


def build_profile(
    llm: ChatModel,
    prompts: PromptSet,
    config: LLMConfig,
    *,
    user_info: str,
    batches: Sequence[Sequence[RatedItem]],
    on_step: Callable[[ProfileStepResult], None] | None = None,
    max_reask: int = 1,
) -> list[ProfileStepResult]:
    """Build a profile from chronological batches: the first writes it, each next updates it."""
    dialogue = build_profile_dialogue(
        prompts, config, user_info=user_info, batches=batches, on_step=on_step, max_reask=max_reask
    )
    return drive(dialogue, llm)


def build_profile_dialogue(
    prompts: PromptSet,
    config: LLMConfig,
    *,
    user_info: str,
    batches: Sequence[Sequence[RatedItem]],
    on_step: Callable[[ProfileStepResult], None] | None = None,
    max_reask: int = 1,
) -> Dialogue[list[ProfileStepResult]]:
    """``build_profile`` as a dialogue."""
    steps: list[ProfileStepResult] = []
    profile: str | None = None
    for index, batch in enumerate(batches):
        reasks = 0
        try:
            answer, key, reasks = yield from profile_step_dialogue(
                prompts,
                config,
                user_info=user_info,
                batch=batch,
                profile=profile,
                max_reask=max_reask,
            )
        except OutputValidationError as err:
            if profile is None:
                raise  # no profile at all: the job fails with the raw answer
            # A bad update loses one batch, not the user: the previous profile stands and
            # the step records why.
            answer = ProfileAnswer(profile=profile, change=f"(no valid update: {err})")
            key = ""
        profile = answer.profile
        step = ProfileStepResult(
            step=index,
            item_ids=tuple(r.item_id for r in batch),
            profile=answer.profile,
            explanation=answer.change,
            call_key=key,
            reasks=reasks,
        )
        steps.append(step)
        if on_step is not None:
            on_step(step)
    return steps


# Characters of an item id that ``rating_tokens_per_item`` pays for. An answer entry such as
# ``"1682": 4, `` costs about 10 tokens where the tokenizer splits digits one by one (SmolLM2,
# Llama): the per-item budget covers ids of up to this many characters, and a longer id gets
# a token more per character, so a chunk of long ids is not cut short into a re-ask.
_ID_CHARS_COVERED = 4


def rating_max_tokens(config: LLMConfig, item_ids: Sequence[int]) -> int:
    """The answer budget of a rating call for ``item_ids``: every entry, plus the braces."""
    extra = sum(max(0, len(str(i)) - _ID_CHARS_COVERED) for i in item_ids)
    return config.rating_tokens_per_item * len(item_ids) + extra + 16


def _to_rate(items: Sequence[ItemToRate]) -> list[dict[str, object]]:
    return [{"item_id": i.item_id, "info": i.info} for i in items]


def rate_items(
    llm: ChatModel,
    prompts: PromptSet,
    config: LLMConfig,
    *,
    user_info: str,
    profile: str,
    recent: Sequence[RatedItem],
    items: Sequence[ItemToRate],
    max_reask: int,
) -> RatingOutcome:
    """Have the simulated user rate ``items``; re-ask for what is missing or invalid.

    A re-ask is a fresh request: the same system message (so a server's prefix cache still
    holds it), then the missing items alone followed by what was wrong. Carrying the whole
    conversation instead would send every item of the chunk and the rejected answer again.
    """
    dialogue = rating_dialogue(
        prompts,
        config,
        user_info=user_info,
        profile=profile,
        recent=recent,
        items=items,
        max_reask=max_reask,
    )
    return drive(dialogue, llm)


def rating_dialogue(
    prompts: PromptSet,
    config: LLMConfig,
    *,
    user_info: str,
    profile: str,
    recent: Sequence[RatedItem],
    items: Sequence[ItemToRate],
    max_reask: int,
) -> Dialogue[RatingOutcome]:
    """``rate_items`` as a dialogue."""
    system = prompts.render(
        "rating_system", user_info=user_info, profile=profile, recent=_rated(recent)
    )
    by_id = {i.item_id: i for i in items}
    outcome = RatingOutcome(ratings={}, missing=list(by_id))
    for turn in range(max_reask + 1):
        asked = [by_id[i] for i in outcome.missing]
        user = prompts.render("rating_user", items=_to_rate(asked))
        if turn:
            note = prompts.render("reask", missing=outcome.missing, problems=outcome.problems)
            user = f"{user}\n\n{note}"
        request = ChatRequest(
            model=config.model,
            messages=(("system", system), ("user", user)),
            temperature=config.temperature,
            max_tokens=rating_max_tokens(config, outcome.missing),
            schema_name="ratings",
            json_schema=rating_schema(outcome.missing),
            structured_output=config.structured_output,
            # Two re-asks can read alike (same items, same problems): the attempt keeps each
            # a call of its own, so the cache never hands back the answer just rejected.
            sample_index=turn,
        )
        result = yield request
        outcome.raw_texts.append(result.text)
        valid, problems = parse_ratings(result.text, outcome.missing)
        outcome.ratings.update(valid)
        outcome.missing = [i for i in outcome.missing if i not in outcome.ratings]
        outcome.problems = problems
        if not outcome.missing:
            break
        if turn < max_reask:
            outcome.reasks += 1
    return outcome
