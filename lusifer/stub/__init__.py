"""An OpenAI-compatible stub LLM server with latency and fault injection, for tests and
benchmarks. Run it with ``python -m lusifer.stub`` or in-process with ``StubServer``."""

from lusifer.stub.answers import rating
from lusifer.stub.config import FAULT_KINDS, FaultKind, StubConfig
from lusifer.stub.server import StubServer

__all__ = ["FAULT_KINDS", "FaultKind", "StubConfig", "StubServer", "rating"]
