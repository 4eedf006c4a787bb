"""The OpenAI Batch API mode: requests become lines of a file, answers come back in files.

``lines`` builds, splits and parses the JSONL; ``deferred`` is the chat model that answers
from finished batch lines or defers the request to the next batch; ``client`` talks to the
Files and Batches endpoints; ``store`` keeps submissions and lines in the database.
"""
