"""Requests-per-window and tokens-per-window limits shared by every worker, kept in Redis.

A sliding-window log: every grant is a member of a sorted set scored by the Redis server's
clock (one clock for all hosts), with its token count beside it. One Lua script expires the
grants older than the window, checks both limits and records the new grant atomically, so no
window of the configured length ever holds more than the limit, however many workers ask.

Tokens are estimated before a call (prompt characters / 4 plus the answer's ``max_tokens``)
and corrected with the real usage after it. A 429 pauses the limiter for every worker until
the server's ``Retry-After`` has passed. Limits are keyed by endpoint and model, so two runs
against the same endpoint share them.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from lusifer.core.config import RateLimits
from lusifer.llm.waits import sleep as interruptible_sleep

# KEYS: grants (zset id -> ms), tokens (hash id -> tokens), token total, paused-until (ms).
# ARGV: window ms, max requests (0: none), max tokens (0: none), tokens asked, grant id, the
# longest pause ms (a pause left longer, e.g. by an older version, is cut to it).
# Returns {1, granted_at_ms} or {0, ms to wait before asking again}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local horizon = '(' .. (now - window)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon)
if #expired > 0 then
  local freed = 0
  for _, id in ipairs(expired) do
    freed = freed + tonumber(redis.call('HGET', KEYS[2], id) or '0')
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
  redis.call('DECRBY', KEYS[3], freed)
end
local paused = tonumber(redis.call('GET', KEYS[4]) or '0')
local max_pause = tonumber(ARGV[6])
if paused > now + max_pause then
  paused = now + max_pause
  redis.call('SET', KEYS[4], paused, 'PX', max_pause)
end
if paused > now then
  return {0, paused - now}
end
local count = redis.call('ZCARD', KEYS[1])
local max_requests = tonumber(ARGV[2])
if max_requests > 0 and count >= max_requests then
  local oldest = redis.call('ZRANGE', KEYS[1], count - max_requests, count - max_requests,
    'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now + 1}
end
local max_tokens = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
if max_tokens > 0 and count > 0 and total + tokens > max_tokens then
  local excess = total + tokens - max_tokens
  local grants = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #grants, 2 do
    excess = excess - tonumber(redis.call('HGET', KEYS[2], grants[i]) or '0')
    if excess <= 0 then
      return {0, tonumber(grants[i + 1]) + window - now + 1}
    end
  end
  return {0, window}
end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('HSET', KEYS[2], ARGV[5], tokens)
redis.call('INCRBY', KEYS[3], tokens)
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], 2 * window)
end
return {1, now}
"""

# KEYS: tokens hash, token total. ARGV: grant id, real tokens.
_SETTLE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]) - tonumber(old))
return 1
"""

# KEYS: paused-until. ARGV: pause ms. The longest pause asked for wins.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + ms > current then
  redis.call('SET', KEYS[1], now + ms, 'PX', ms)
end
return now + ms
"""


@dataclass(frozen=True)
class Grant:
    """Permission for one call, with the tokens it was granted for."""

    id: str
    tokens: int
    granted_at_ms: int


def limiter_key(base_url: str, model: str) -> str:
    """The Redis key prefix of an endpoint's limits (hash-tagged: one cluster slot)."""
    digest = hashlib.sha256(f"{base_url.rstrip('/')}|{model}".encode()).hexdigest()[:16]
    return f"lusifer:ratelimit:{{{digest}}}"


def redis_for_broker(url: str) -> redis.Redis:
    """A Redis client for a Celery broker URL (also local mode's ``redis+socket://``)."""
    if url.startswith("redis+socket://"):
        return redis.Redis(unix_socket_path=url.removeprefix("redis+socket://"))
    return redis.Redis.from_url(url)


def estimate_tokens(text_chars: int, max_answer_tokens: int | None) -> int:
    """Tokens a call may use: its prompt at four characters a token, and the longest answer."""
    return text_chars // 4 + 1 + (max_answer_tokens or 256)


def jittered(wait_s: float) -> float:
    """The wait before asking again: ``wait_s`` and a little jitter, which keeps the waiting
    callers of all workers from asking in lockstep."""
    return wait_s + random.uniform(0.0, min(0.05, wait_s / 4 + 0.005))


class RateLimiter:
    """A limiter shared through Redis; thread-safe (redis-py's pool is)."""

    def __init__(
        self, client: redis.Redis, key: str, limits: RateLimits, max_pause_s: float = 300.0
    ) -> None:
        self.limits = limits
        self._keys = [f"{key}:grants", f"{key}:tokens", f"{key}:total", f"{key}:paused"]
        self._window_ms = max(1, round(limits.window_s * 1000))
        self._max_pause_ms = max(1, round(max_pause_s * 1000))
        self._acquire: Any = client.register_script(_ACQUIRE)
        self._settle: Any = client.register_script(_SETTLE)
        self._pause: Any = client.register_script(_PAUSE)

    def try_acquire(self, tokens: int) -> tuple[Grant | None, float]:
        """One attempt: a grant, or None and the seconds to wait before the next attempt."""
        grant_id = uuid.uuid4().hex
        args = [self._window_ms, self.limits.requests or 0, self.limits.tokens or 0, tokens]
        granted, value = self._acquire(keys=self._keys, args=[*args, grant_id, self._max_pause_ms])
        if granted:
            return Grant(grant_id, tokens, int(value)), 0.0
        return None, int(value) / 1000

    def acquire(self, tokens: int) -> Grant:
        """Wait until a call of ``tokens`` fits both limits, and take it."""
        while True:
            grant, wait_s = self.try_acquire(tokens)
            if grant is not None:
                return grant
            interruptible_sleep(jittered(wait_s))

    def settle(self, grant: Grant, tokens: int) -> None:
        """Replace a grant's estimated tokens by the real usage."""
        self._settle(keys=self._keys[1:3], args=[grant.id, max(0, int(tokens))])

    def pause(self, seconds: float) -> None:
        """Grant nothing to anyone for ``seconds`` (the server said Retry-After)."""
        ms = min(max(1, round(seconds * 1000)), self._max_pause_ms)
        self._pause(keys=self._keys[3:], args=[ms])
