"""An in-process model for unit tests: canned or computed answers, no HTTP."""

from __future__ import annotations

from collections.abc import Callable

from lusifer.llm.request import ChatRequest, ChatResult


class FakeChatModel:
    """An in-process chat model for unit tests: ``answer(request) -> text``."""

    def __init__(self, answer: Callable[[ChatRequest], str]) -> None:
        self._answer = answer
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatResult:
        """Answer with the function's text; tokens are characters / 4."""
        self.requests.append(request)
        text = self._answer(request)
        prompt_chars = sum(len(content) for _, content in request.messages)
        return ChatResult(
            text=text, prompt_tokens=prompt_chars // 4 + 1, completion_tokens=len(text) // 4 + 1
        )
