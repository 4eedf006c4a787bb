"""What the broker holds: messages waiting in the job queue, and messages handed out.

Celery's Redis transport keeps a queue as a Redis list named after it (one more list per
priority level, ``<queue>\\x06\\x16<n>``, when messages carry priorities), and every message
delivered but not acknowledged yet in the hash ``unacked``: with ``acks_late`` those are the
jobs workers hold (running, or prefetched).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from lusifer.queue import split_tls_options

# kombu's separator between a queue's name and its priority level.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_LEVELS = (3, 6, 9)
UNACKED_HASH = "unacked"


@dataclass(frozen=True)
class QueueFigures:
    """Messages waiting per queue, and messages delivered but not acknowledged."""

    waiting: dict[str, int]
    unacked: int


class BrokerReader:
    """Reads queue lengths from the broker's Redis with bounded socket timeouts."""

    def __init__(self, broker_url: str, queues: tuple[str, ...], timeout_s: float) -> None:
        url, tls = split_tls_options(broker_url)
        self.queues = queues
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            **(tls or {}),
        )

    def read(self) -> QueueFigures:
        """LLEN of each queue (all its priority lists) and HLEN of the unacked hash."""
        waiting: dict[str, int] = {}
        for queue in self.queues:
            keys = [queue, *self._priority_keys(queue)]
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.llen(key)
            waiting[queue] = sum(int(n) for n in pipe.execute())
        return QueueFigures(waiting, int(self._client.hlen(UNACKED_HASH)))

    @staticmethod
    def _priority_keys(queue: str) -> list[str]:
        # kombu's default priority steps; level 0 is the plain name. Fixed keys, no SCAN:
        # a scrape costs the same however large the keyspace.
        return [f"{queue}{PRIORITY_SEPARATOR}{level}" for level in PRIORITY_LEVELS]

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()
