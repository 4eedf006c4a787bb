"""The LLM behind one small interface: requests, results, failures, the OpenAI-compatible
client (blocking and asyncio) and an in-process fake."""

from __future__ import annotations

from lusifer.llm.async_client import AsyncChatModel, AsyncOpenAICompatibleModel
from lusifer.llm.client import OpenAICompatibleModel, OpenAIEndpoint
from lusifer.llm.failures import (
    chat_result_of_http,
    classify_openai_error,
    classify_status,
    settle_failure,
    transient_retries,
    transient_retry_policy,
    transport_error,
)
from lusifer.llm.fake import FakeChatModel
from lusifer.llm.request import (
    ChatModel,
    ChatRequest,
    ChatResult,
    key_of,
    limiter_tokens,
    request_body,
    result_of,
    result_of_json,
)

__all__ = [
    "AsyncChatModel",
    "AsyncOpenAICompatibleModel",
    "ChatModel",
    "ChatRequest",
    "ChatResult",
    "FakeChatModel",
    "OpenAICompatibleModel",
    "OpenAIEndpoint",
    "chat_result_of_http",
    "classify_openai_error",
    "classify_status",
    "key_of",
    "limiter_tokens",
    "request_body",
    "result_of",
    "result_of_json",
    "settle_failure",
    "transient_retries",
    "transient_retry_policy",
    "transport_error",
]
