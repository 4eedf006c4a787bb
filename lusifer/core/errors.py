"""The one error tree of Lusifer.

Every expected failure is a ``LusiferError`` whose message is one line naming the problem and
the fix; the command line prints that line and exits non-zero, never a traceback.

- ``ConfigurationError``  invalid settings or run configuration (fix the flag / variable).
- ``DataError``           missing or malformed dataset files, unknown ids (fix the input).
- ``LLMError``            anything from the language model endpoint:
  - ``TransientLLMError``   timeouts, 429, 5xx, connection errors: retried with backoff.
  - ``PermanentLLMError``   401, unknown model, bad request: the run stops fast.
  - ``OutputValidationError`` an answer that stays invalid after re-asking: the job fails
                              with the raw text stored, the run goes on.
- ``ServiceError``        broker or database unreachable.
- ``BudgetExhausted``     the run's recorded spend reached its ``--max-cost``: the job is
                          handed back, the run stays resumable.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """How a ``lusifer`` command ends; README's reliability section lists the same table."""

    OK = 0  # every job of the run is done
    ERROR = 1  # bad input or configuration, or a service that failed: the line says which
    USAGE = 2  # an unknown flag or a missing argument (typer's own)
    JOBS_FAILED = 3  # the run ended, but some jobs failed: the table shows the coverage
    STOPPED = 4  # a permanent error (bad key, unknown model) stopped the run
    COST_CAP = 5  # the run's spend reached --max-cost; `resume --max-cost HIGHER` goes on
    STALLED = 6  # no job could progress (no worker, or none of this version)
    INTERRUPTED = 130  # Ctrl-C or SIGTERM; `lusifer resume RUN` finishes it


class LusiferError(Exception):
    """Base of every expected Lusifer failure; ``str(err)`` is a one-line message for users."""

    exit_code: ExitCode = ExitCode.ERROR


class ConfigurationError(LusiferError):
    """Settings or run configuration that cannot work."""


class DataError(LusiferError):
    """Dataset files that are missing, unreadable or malformed, or ids that do not exist."""


class ServiceError(LusiferError):
    """A broker or database that cannot be reached or used."""


class LLMError(LusiferError):
    """A failure of the language model endpoint."""

    status: int | None = None  # the HTTP status that caused it, where one did


class TransientLLMError(LLMError):
    """A failure that may succeed when tried again (timeout, 429, 5xx, connection reset)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentLLMError(LLMError):
    """A failure that will not go away by retrying (bad key, unknown model, bad request)."""


class OutputValidationError(LLMError):
    """An answer that does not match the expected schema, even after re-asking."""

    def __init__(self, message: str, raw_text: str = "") -> None:
        super().__init__(message)
        self.raw_text = raw_text


class BudgetExhausted(LusiferError):
    """The run has spent its cost cap; no new LLM call is made until the cap is raised."""
