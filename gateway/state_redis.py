"""Redis backends of gateway.state, for several gateway instances.

When one gateway process is not enough, several run behind a load
balancer and share through Redis (an existing engine, not a home-made
store) what they must agree on: foreign answers (with a claim, so N
instances make one foreign call), throttling pauses, tokens, peers'
pushes, the push queue, and change signals for the local calendars on a
shared storage folder.  docs/redis.md is the admin's side of this.

Each class has the semantics of its in-process counterpart in
gateway.state (tests/test_state_contract.py runs the same tests on both).
What every one of them adds:

- **Redis down.** A Redis error never reaches a lookup or a write: each
  backend falls back (answers and pushed: a local cache; pauses and
  tokens: this process's memory, which always keeps its own; claims: go
  ahead; the queue: a local SQLite spool, moved to Redis when it is back,
  while pushes wait).  The outage is logged once when it starts and once
  when it ends, and Redis is asked again at most every RETRY_SECONDS, so
  a dead server costs one short timeout per second, not one per call.
- **Bounded.** Every key has a TTL; an answer larger than
  MAX_ANSWER_BYTES is not shared; every key and channel starts with the
  deployment's ``[gateway] redis_prefix``.
- **Safe to read.** Values are JSON with tagged datetimes and periods,
  checked when read; something unreadable is a miss, never an answer.

The redis library is imported when a link is first used, so the embedded
default runs without it.
"""

import base64
import datetime
import hashlib
import json
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import urllib.parse
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from gateway.model import Period
from gateway.state import (AnswerCache, MemoryAnswerCache, MemoryPushedStore,
                           MemoryThrottleMemory, MemoryTokenStore, PushedStore,
                           PushQueue, QueueItem, SqlitePushQueue,
                           ThrottleMemory, TokenStore)

logger = logging.getLogger(__name__)

#: Seconds to connect to Redis, and to wait for one answer.  Short: a
#: lookup's whole deadline is a few seconds, and a fallback exists.
CONNECT_SECONDS = 0.5
COMMAND_SECONDS = 1.0
#: After a failure, Redis is asked again no sooner than this.
RETRY_SECONDS = 1.0
#: An answer whose encoding is larger than this is not shared.
MAX_ANSWER_BYTES = 1 << 20
#: Queue keys live this long after the queue's last write (items are
#: re-queued by the daily republish long before).
QUEUE_TTL_SECONDS = 14 * 86400
#: How long a refresh lock is held at most when its taker gives no time.
LOCK_SECONDS = 30.0
#: A change signal's path is at most this long.
MAX_PATH_CHARS = 4096

#: What a fallback returns to say "Redis did not answer".
DOWN = object()


def _digest(key: str) -> str:
    """A bounded, printable stand-in for a key of any length or bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[
        :32]


def _ms(seconds: float) -> int:
    """Milliseconds for Redis' PX, at least 1."""
    return max(1, int(math.ceil(seconds * 1000)))


_owner_lock = threading.Lock()
_owner: Tuple[int, str] = (0, "")


def instance_id() -> str:
    """This process's name in claims, locks and signals: host, pid and a
    random part (a new one after a fork)."""
    global _owner
    with _owner_lock:
        if _owner[0] != os.getpid():
            _owner = (os.getpid(), "%s:%d:%s" % (
                socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12]))
        return _owner[1]


# -- values -------------------------------------------------------------------


def encode(value: Any) -> bytes:
    """JSON of a value made of None, bool, int, float, str, bytes, aware
    datetimes, Periods and tuples; TypeError for anything else."""
    def walk(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, datetime.datetime):
            if v.utcoffset() is None:
                raise TypeError("naive datetime")
            return {"d": v.isoformat()}
        if isinstance(v, Period):
            return {"p": [walk(v.start), walk(v.end), v.fbtype]}
        if isinstance(v, (tuple, list)):
            return {"t": [walk(x) for x in v]}
        if isinstance(v, bytes):
            return {"b": base64.b64encode(v).decode("ascii")}
        raise TypeError("cannot share a %s" % type(v).__name__)
    return json.dumps(walk(value), separators=(",", ":")).encode("utf-8")


def decode(data: bytes) -> Any:
    """The value ``encode`` made; ValueError for anything else."""
    def walk(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, dict) and len(v) == 1:
            (tag, inner), = v.items()
            if tag == "d" and isinstance(inner, str):
                moment = datetime.datetime.fromisoformat(inner)
                if moment.utcoffset() is None:
                    raise ValueError("naive datetime")
                return moment
            if tag == "p" and isinstance(inner, list) and len(inner) == 3:
                start, end = walk(inner[0]), walk(inner[1])
                if not (isinstance(start, datetime.datetime) and
                        isinstance(end, datetime.datetime) and
                        isinstance(inner[2], str)):
                    raise ValueError("not a period")
                return Period(start, end, inner[2])
            if tag == "t" and isinstance(inner, list):
                return tuple(walk(x) for x in inner)
            if tag == "b" and isinstance(inner, str):
                return base64.b64decode(inner, validate=True)
        raise ValueError("unknown value")
    try:
        return walk(json.loads(data))
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError("unreadable shared value: %s" % e) from None


def _ms_of(moment: datetime.datetime, up: bool) -> int:
    """A window bound in whole milliseconds, rounded ``up`` or down, so
    that a stored window never claims more than it covers."""
    stamp = moment.timestamp() * 1000
    return int(math.ceil(stamp) if up else math.floor(stamp))


# -- the link -----------------------------------------------------------------


def describe(url: str) -> str:
    """``url`` without its password, for the log."""
    split = urllib.parse.urlsplit(url)
    host = split.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    return "%s://%s%s%s" % (split.scheme, host,
                            ":%d" % split.port if split.port else "",
                            split.path)


class RedisLink:
    """One Redis server as this process uses it: a client made when
    first needed (so a fork before first use is harmless), the
    deployment's key prefix, and the outage state that every backend on
    it shares, so that an outage is logged once and Redis is not asked
    again for RETRY_SECONDS after a failure."""

    def __init__(self, url: str, prefix: str = "fbgw:",
                 owner: Optional[str] = None) -> None:
        self.url = url
        self.prefix = prefix
        self._owner = owner
        self.where = describe(url)
        self._client = None
        self._scripts: Dict[str, Any] = {}
        self._lock = threading.Lock()
        #: wall-clock start of the outage under way, None when up
        self.down_since: Optional[float] = None
        self._retry_at = 0.0

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def owner(self) -> str:
        """This instance's name in claims and signals (default: the
        process's instance_id)."""
        return self._owner or instance_id()

    def client(self):
        with self._lock:
            if self._client is None:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry
                # No retries inside the library: the caller falls back.
                self._client = redis.Redis.from_url(
                    self.url, socket_timeout=COMMAND_SECONDS,
                    socket_connect_timeout=CONNECT_SECONDS,
                    health_check_interval=15, retry=Retry(NoBackoff(), 0))
            return self._client

    def script(self, name: str, source: str):
        """A Lua script registered once (redis-py loads it again after a
        Redis restart forgot it)."""
        with self._lock:
            found = self._scripts.get(name)
        if found is None:
            found = self.client().register_script(source)
            with self._lock:
                self._scripts[name] = found
        return found

    @property
    def up(self) -> bool:
        """Worth asking now: no failure within RETRY_SECONDS."""
        return time.monotonic() >= self._retry_at

    def run(self, work: Callable, fallback: Callable = lambda: DOWN):
        """``work(client)``, or ``fallback()`` when Redis is down or
        fails now (logged once per outage)."""
        if not self.up:
            return fallback()
        try:
            result = work(self.client())
        except Exception as e:  # RedisError, OSError, a bad reply
            if not _redis_error(e):
                raise
            self.failed(e)
            return fallback()
        if self.down_since is not None:
            self.recovered()
        return result

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            first = self.down_since is None
            if first:
                self.down_since = time.time()
        if first:
            logger.warning(
                "Redis at %s failed (%s: %s): until it is back, lookups "
                "go on without the shared cache, tokens and pauses are "
                "this process's own, and pushes wait in the local spool",
                self.where, type(error).__name__, str(error)[:200])

    def recovered(self) -> None:
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            logger.warning("Redis at %s is back after %.1f s", self.where,
                           time.time() - since)


def _redis_error(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return True
    try:
        import redis
    except ImportError:
        return False
    return isinstance(error, redis.RedisError)


_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# -- tokens -------------------------------------------------------------------


class _SharedLock:
    """The refresh lock of one token: this process's lock, then a Redis
    key with an owner token that expires (a holder that died frees it
    after its time).  With Redis down the process's lock alone holds."""

    def __init__(self, link: RedisLink, name: str,
                 local: threading.Lock) -> None:
        self.link = link
        self.name = name
        self.local = local
        self._token: Optional[str] = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        wait = LOCK_SECONDS if timeout is None or timeout < 0 else timeout
        if not blocking:
            wait = 0.0
        deadline = time.monotonic() + wait
        if not self.local.acquire(timeout=wait):
            return False
        token = uuid.uuid4().hex
        pause = 0.01
        while True:
            got = self.link.run(lambda c: c.set(
                self.name, token, nx=True, px=_ms(max(wait, 1.0))))
            if got is DOWN or got:
                self._token = None if got is DOWN else token
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                self.local.release()
                return False
            time.sleep(min(pause, left))
            pause = min(0.2, pause * 2)

    def release(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            self.link.run(lambda c: self.link.script(
                "cad", _COMPARE_AND_DELETE)(keys=[self.name], args=[token],
                                            client=c))
        self.local.release()

    def __enter__(self) -> "_SharedLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RedisTokenStore(TokenStore):
    """Tokens in Redis until their expiry, so N instances fetch one token,
    not N; each process also keeps the tokens it saw, for when Redis is
    down."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.local = MemoryTokenStore()

    def _key(self, key: str) -> str:
        return self.link.key("token", _digest(key))

    def get(self, key: str) -> Optional[Tuple[str, float]]:
        found = self.link.run(lambda c: c.get(self._key(key)))
        if found is DOWN:
            return self.local.get(key)
        if found is None:
            return None
        try:
            token, expires_at = json.loads(found)
            entry = (str(token), float(expires_at))
        except (TypeError, ValueError):
            logger.warning("Unreadable token in Redis at %s; fetching a "
                           "new one", self.link.where)
            return None
        return entry if entry[1] > time.time() else None

    def put(self, key: str, token: str, expires_at: float) -> None:
        self.local.put(key, token, expires_at)
        left = expires_at - time.time()
        if left <= 0:
            self.drop(key)
            return
        self.link.run(lambda c: c.set(
            self._key(key), json.dumps([token, expires_at]), px=_ms(left)))

    def drop(self, key: str) -> None:
        self.local.drop(key)
        self.link.run(lambda c: c.delete(self._key(key)))

    def refresh_lock(self, key: str) -> _SharedLock:
        return _SharedLock(self.link, self._key(key) + ":lock",
                           self.local.refresh_lock(key))


# -- answers ------------------------------------------------------------------

#: KEYS: index, entry; ARGV: window id, data, expires ms, ttl ms, windows
#: kept, now ms.  The index scores each window by its expiry.
_ANSWER_PUT = """
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[6])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra - 1)) do
    redis.call('DEL', KEYS[1] .. ':' .. old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
"""

#: KEYS: index; ARGV: start ms, end ms, now ms.  Newest covering first.
_ANSWER_GET = """
local windows = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[3])
for _, window in ipairs(windows) do
  local colon = string.find(window, ':', 2, true)
  local s = tonumber(string.sub(window, 1, colon - 1))
  local e = tonumber(string.sub(window, colon + 1))
  if s <= tonumber(ARGV[1]) and e >= tonumber(ARGV[2]) then
    local value = redis.call('GET', KEYS[1] .. ':' .. window)
    if value then
      return value
    end
  end
end
return false
"""

#: KEYS: claim; ARGV: owner, ms.  1 when the owner holds it now (for ms
#: more: claiming again renews).
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class RedisAnswerCache(AnswerCache):
    """Answers in Redis for their TTL, at most ``windows_per_key``
    windows per key (newest kept), each at most ``max_bytes`` encoded;
    Redis' own memory limit (docs/redis.md) bounds the total.  A claim is
    a key with this process's id on a short lease its holder renews
    while it fetches (gateway.engine.fanout.CLAIM_LEASE), so a killed
    holder delays the others by one lease.  With Redis down, this
    process's own small cache answers what it fetched itself."""

    def __init__(self, link: RedisLink, max_bytes: int = MAX_ANSWER_BYTES,
                 windows_per_key: int = 8) -> None:
        self.link = link
        self.max_bytes = max_bytes
        self.windows_per_key = windows_per_key
        self.local = MemoryAnswerCache(max_cost=20000,
                                       windows_per_key=windows_per_key)

    def _index(self, key: str) -> str:
        return self.link.key("answer", _digest(key))

    def get(self, key: str, start, end) -> Optional[Any]:
        found = self.link.run(lambda c: self.link.script(
            "answer_get", _ANSWER_GET)(
                keys=[self._index(key)],
                args=[_ms_of(start, False), _ms_of(end, True),
                      int(time.time() * 1000)], client=c))
        if found is DOWN:
            return self.local.get(key, start, end)
        if found is None:
            return None
        try:
            return decode(found)
        except ValueError as e:
            logger.warning("Shared answer unreadable (%s); asking again", e)
            return None

    def put(self, key: str, start, end, value: Any, ttl: float,
            cost: int = 1) -> None:
        if ttl <= 0:
            return
        try:
            data = encode(value)
        except TypeError as e:
            logger.warning("Answer not shared: %s", e)
            return
        if len(data) > self.max_bytes:
            logger.info("Answer of %d bytes not shared (more than %d)",
                        len(data), self.max_bytes)
            return
        self.local.put(key, start, end, value, ttl, cost)
        # The window as it covers: start rounded up, end down.
        window = "%d:%d" % (_ms_of(start, True), _ms_of(end, False))
        now_ms = int(time.time() * 1000)
        index = self._index(key)
        self.link.run(lambda c: self.link.script("answer_put", _ANSWER_PUT)(
            keys=[index, index + ":" + window],
            args=[window, data, now_ms + _ms(ttl), _ms(ttl),
                  self.windows_per_key, now_ms], client=c))

    def _claim_key(self, key: str, start, end) -> str:
        return "%s:claim:%d:%d" % (self._index(key), _ms_of(start, False),
                                   _ms_of(end, True))

    def claim(self, key: str, start, end, seconds: float) -> bool:
        held = self.link.run(lambda c: self.link.script("claim", _CLAIM)(
            keys=[self._claim_key(key, start, end)],
            args=[self.link.owner, _ms(max(seconds, 0.001))], client=c))
        return held is DOWN or held == 1

    def unclaim(self, key: str, start, end) -> None:
        self.link.run(lambda c: self.link.script(
            "cad", _COMPARE_AND_DELETE)(
                keys=[self._claim_key(key, start, end)],
                args=[self.link.owner], client=c))


# -- pauses -------------------------------------------------------------------

#: KEYS: pause; ARGV: until (epoch s), ms left.  Never shortens a pause.
_PAUSE = """
local kept = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > kept then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class RedisThrottleMemory(ThrottleMemory):
    """Pauses in Redis until they end, so no instance calls a throttled
    system early; ``scope`` (a provider's name) keeps two providers on
    one host (two tenants) apart.  Each process also keeps the pauses it
    learnt, and the later of the two ends counts."""

    def __init__(self, link: RedisLink, scope: str = "") -> None:
        self.link = link
        self.scope = scope
        self.local = MemoryThrottleMemory()

    def _key(self, key: str) -> str:
        return self.link.key("pause", _digest(self.scope + "\n" + key))

    def paused_until(self, key: str) -> float:
        own = self.local.paused_until(key)
        shared = self.link.run(lambda c: c.get(self._key(key)))
        try:
            shared = 0.0 if shared in (None, DOWN) else float(shared)
        except (TypeError, ValueError):
            shared = 0.0
        until = max(own, shared)
        return until if until > time.time() else 0.0

    def pause(self, key: str, until: float) -> None:
        self.local.pause(key, until)
        left = until - time.time()
        if left > 0:
            self.link.run(lambda c: self.link.script("pause", _PAUSE)(
                keys=[self._key(key)], args=[repr(float(until)), _ms(left)],
                client=c))


# -- peers' pushes ------------------------------------------------------------

#: KEYS: push; ARGV: stamp, data, ms left (0: already over).
_PUSHED_PUT = """
local kept = redis.call('HGET', KEYS[1], 'stamp')
if kept and tonumber(kept) > tonumber(ARGV[1]) then
  return 0
end
if tonumber(ARGV[3]) <= 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'stamp', ARGV[1], 'data', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisPushedStore(PushedStore):
    """A peer's push in Redis until it expires, so whichever instance
    the peer reached, all answer from it; the stamp comparison is one
    script, so a late repeat never replaces a newer push.  With Redis
    down, pushes go to and come from this process's memory."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.local = MemoryPushedStore(max_entries=10000)

    def _key(self, key: str) -> str:
        return self.link.key("pushed", _digest(key))

    def put(self, key: str, start, end, periods, stamp: float,
            expires: float) -> bool:
        data = encode((start, end, tuple(periods)))
        left = expires - time.time()
        kept = self.link.run(lambda c: self.link.script(
            "pushed_put", _PUSHED_PUT)(
                keys=[self._key(key)],
                args=[repr(float(stamp)), data,
                      _ms(left) if left > 0 else 0], client=c))
        if kept is DOWN:
            return self.local.put(key, start, end, periods, stamp, expires)
        return kept == 1

    def get(self, key: str, start, end) -> Optional[Any]:
        found = self.link.run(lambda c: c.hget(self._key(key), "data"))
        if found is DOWN:
            return self.local.get(key, start, end)
        if found is None:
            return None
        try:
            kept_start, kept_end, periods = decode(found)
        except (ValueError, TypeError) as e:
            logger.warning("Shared push unreadable (%s); asking the peer", e)
            return None
        if kept_start <= start and kept_end >= end:
            return periods
        return None


# -- the push queue -----------------------------------------------------------

_QUEUE_TOUCH = """
local function touch(q, ttl)
  for _, name in ipairs({'seq', 'due', 'keys', 'meta'}) do
    redis.call('PEXPIRE', q .. name, ttl)
  end
end
"""

#: ARGV: queue prefix, coalescing key ('' none), payload, now, ttl ms.
_ENQUEUE = _QUEUE_TOUCH + """
local q, key, now = ARGV[1], ARGV[2], tonumber(ARGV[4])
if key ~= '' then
  local id = redis.call('HGET', q .. 'keys', key)
  if id then
    local item = q .. 'item:' .. id
    local leased = redis.call('HGET', item, 'leased_until')
    if leased and tonumber(leased) <= now then
      redis.call('HSET', item, 'payload', ARGV[3])
      redis.call('PEXPIRE', item, ARGV[5])
      touch(q, ARGV[5])
      return id
    end
  end
end
local id = tostring(redis.call('INCR', q .. 'seq'))
local item = q .. 'item:' .. id
redis.call('HSET', item, 'key', key, 'payload', ARGV[3], 'attempt', 0,
           'not_before', 0, 'leased_until', 0, 'created', ARGV[4],
           'last_error', '')
redis.call('PEXPIRE', item, ARGV[5])
redis.call('ZADD', q .. 'due', ARGV[4], id)
if key ~= '' then
  redis.call('HSET', q .. 'keys', key, id)
end
touch(q, ARGV[5])
return id
"""

#: ARGV: queue prefix, now, seconds, limit.  -> id, attempt, payload...
_LEASE = """
local q, now = ARGV[1], tonumber(ARGV[2])
local held = now + tonumber(ARGV[3])
local out = {}
local ids = redis.call('ZRANGEBYSCORE', q .. 'due', '-inf', now, 'LIMIT', 0,
                       tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  local item = q .. 'item:' .. id
  local payload = redis.call('HGET', item, 'payload')
  if not payload then
    redis.call('ZREM', q .. 'due', id)
  else
    local attempt = redis.call('HINCRBY', item, 'attempt', 1)
    redis.call('HSET', item, 'leased_until', tostring(held))
    redis.call('ZADD', q .. 'due', held, id)
    table.insert(out, id)
    table.insert(out, attempt)
    table.insert(out, payload)
  end
end
return out
"""

#: ARGV: queue prefix, id, attempt.
_ACK = """
local q, id = ARGV[1], ARGV[2]
local item = q .. 'item:' .. id
if redis.call('HGET', item, 'attempt') ~= ARGV[3] then
  return 0
end
local key = redis.call('HGET', item, 'key')
redis.call('DEL', item)
redis.call('ZREM', q .. 'due', id)
if key and key ~= '' and redis.call('HGET', q .. 'keys', key) == id then
  redis.call('HDEL', q .. 'keys', key)
end
return 1
"""

#: ARGV: queue prefix, id, attempt, due again (epoch s), error.
_RELEASE = """
local q, id = ARGV[1], ARGV[2]
local item = q .. 'item:' .. id
if redis.call('HGET', item, 'attempt') ~= ARGV[3] then
  return 0
end
redis.call('HSET', item, 'leased_until', 0, 'not_before', ARGV[4],
           'last_error', ARGV[5])
redis.call('ZADD', q .. 'due', ARGV[4], id)
return 1
"""

#: ARGV: queue prefix, 'retry' or 'purge', one id ('' for all).
_ADMIN = """
local q, action = ARGV[1], ARGV[2]
local ids = {ARGV[3]}
if ARGV[3] == '' then
  ids = redis.call('ZRANGE', q .. 'due', 0, -1)
end
local count = 0
for _, id in ipairs(ids) do
  local item = q .. 'item:' .. id
  if redis.call('EXISTS', item) == 1 then
    count = count + 1
    if action == 'retry' then
      redis.call('HSET', item, 'not_before', 0)
      redis.call('ZADD', q .. 'due',
                 tonumber(redis.call('HGET', item, 'leased_until')), id)
    else
      local key = redis.call('HGET', item, 'key')
      redis.call('DEL', item)
      if key and key ~= '' and redis.call('HGET', q .. 'keys', key) == id
      then
        redis.call('HDEL', q .. 'keys', key)
      end
    end
  end
  if action == 'purge' then
    redis.call('ZREM', q .. 'due', id)
  end
end
return count
"""


class _Spool(SqlitePushQueue):
    """Where pushes wait while Redis is down: a SQLite file of this host,
    with a rollback journal where it can switch to one, since WAL needs
    shared memory that a network file system (a storage folder on NFS)
    does not give; another process of the host that has the file open
    keeps it as it is."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        with self._lock:
            try:
                self._db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.OperationalError:
                pass


#: Item ids of the spool, as ``items()`` shows them.
SPOOL_ID = "spool-"


class RedisPushQueue(PushQueue):
    """The push queue in Redis, shared by every instance: durable as
    Redis is (docs/redis.md: appendonly), at least once (a lease that
    expires: a worker killed mid-push leaves its item to be leased again,
    by any instance, once its time is up), coalescing by key.

    Redis down: an enqueue goes to the local spool (``spool_path``, a
    SQLite file) and is moved to Redis when it is back; nothing is
    leased meanwhile (pushes wait); an ack is kept and sent when Redis is
    back (if the lease ran out meanwhile, the item goes again: at least
    once).  Ids of Redis items are numbers, as ``fbgateway queue`` takes
    them; spooled items show as ``spool-N``."""

    def __init__(self, link: RedisLink, spool_path: str) -> None:
        self.link = link
        self.spool_path = spool_path
        self._q = link.key("queue", "")
        self._spool: Optional[_Spool] = None
        self._spool_lock = threading.Lock()
        self._pending_acks: List[str] = []
        self._meta_copy: Dict[str, str] = {}
        if os.path.exists(spool_path):
            self._open_spool()      # left over from an outage

    # -- Redis down ---------------------------------------------------------

    def _open_spool(self) -> _Spool:
        with self._spool_lock:
            if self._spool is None:
                self._spool = _Spool(self.spool_path)
            return self._spool

    def _catch_up(self) -> None:
        """Once Redis answers again: acks made meanwhile, then the
        spooled items, oldest first."""
        while self._pending_acks:
            lease_id = self._pending_acks[0]
            if self._run_ack(lease_id) is DOWN:
                return
            self._pending_acks.pop(0)
        spool = self._spool
        if spool is None:
            return
        moved = 0
        for item in spool.items():
            if self._redis_enqueue(item.payload, item.key) is DOWN:
                break
            moved += spool.purge(item.id)
        if moved:
            logger.warning("Push queue: %d push(es) spooled while Redis was "
                           "down moved to Redis at %s", moved,
                           self.link.where)

    def _script(self, name: str, source: str, *args):
        return self.link.run(lambda c: self.link.script(name, source)(
            keys=[], args=[self._q] + list(args), client=c))

    def _redis_enqueue(self, payload: bytes, key: Optional[str]):
        return self._script("enqueue", _ENQUEUE, key or "", payload,
                            repr(time.time()), _ms(QUEUE_TTL_SECONDS))

    # -- PushQueue ----------------------------------------------------------

    def enqueue(self, payload: bytes, key: Optional[str] = None) -> str:
        found = self._redis_enqueue(payload, key)
        if found is not DOWN:
            return found.decode() if isinstance(found, bytes) else str(found)
        return SPOOL_ID + self._open_spool().enqueue(payload, key)

    def lease(self, seconds: float, limit: int = 1
              ) -> List[Tuple[str, bytes]]:
        if self._pending_acks or self._spool is not None:
            self._catch_up()
        found = self._script("lease", _LEASE, repr(time.time()),
                             repr(float(seconds)), max(1, limit))
        if found is DOWN:
            return []
        leased = []
        for i in range(0, len(found), 3):
            item = found[i].decode() if isinstance(found[i], bytes) \
                else str(found[i])
            leased.append(("%s:%d" % (item, int(found[i + 1])),
                           bytes(found[i + 2])))
        return leased

    @staticmethod
    def _lease_parts(lease_id: str) -> Tuple[str, str]:
        item, _, attempt = lease_id.partition(":")
        return item, attempt

    def _run_ack(self, lease_id: str):
        item, attempt = self._lease_parts(lease_id)
        return self._script("ack", _ACK, item, attempt)

    def ack(self, lease_id: str) -> bool:
        done = self._run_ack(lease_id)
        if done is DOWN:
            self._pending_acks.append(lease_id)
            return True
        return done == 1

    def release(self, lease_id: str, delay: float, error: str) -> bool:
        item, attempt = self._lease_parts(lease_id)
        done = self._script("release", _RELEASE, item, attempt,
                            repr(time.time() + delay), error[:500])
        return done == 1

    def items(self) -> List[QueueItem]:
        def read(client):
            ids = client.zrange(self._q + "due", 0, -1)
            pipe = client.pipeline(transaction=False)
            for item in ids:
                pipe.hgetall(self._q + "item:" + item.decode())
            return list(zip(ids, pipe.execute()))
        found = self.link.run(read)
        listed = []
        if found is not DOWN:
            for item, fields in found:
                if not fields:
                    continue
                fields = {k.decode(): v for k, v in fields.items()}
                listed.append(QueueItem(
                    item.decode(), fields["key"].decode() or None,
                    bytes(fields["payload"]), int(fields["attempt"]),
                    float(fields["created"]), float(fields["not_before"]),
                    float(fields["leased_until"]),
                    fields["last_error"].decode("utf-8", "replace")))
            listed.sort(key=lambda i: int(i.id))
        if self._spool is not None:
            listed.extend(i._replace(id=SPOOL_ID + i.id)
                          for i in self._spool.items())
        return listed

    def _admin(self, action: str, item_id: Optional[str]) -> int:
        count = 0
        if item_id is None or not item_id.startswith(SPOOL_ID):
            found = self._script("admin", _ADMIN, action, item_id or "")
            count += 0 if found is DOWN else int(found)
        if self._spool is not None and (
                item_id is None or item_id.startswith(SPOOL_ID)):
            count += getattr(self._spool, action)(
                None if item_id is None else item_id[len(SPOOL_ID):])
        return count

    def retry(self, item_id: Optional[str] = None) -> int:
        return self._admin("retry", item_id)

    def purge(self, item_id: Optional[str] = None) -> int:
        return self._admin("purge", item_id)

    def get_meta(self, name: str) -> Optional[str]:
        found = self.link.run(lambda c: c.hget(self._q + "meta", name))
        if found is DOWN:
            return self._meta_copy.get(name)
        return None if found is None else found.decode()

    def set_meta(self, name: str, value: str) -> None:
        self._meta_copy[name] = value
        self.link.run(lambda c: c.pipeline().hset(
            self._q + "meta", name, value).pexpire(
                self._q + "meta", _ms(QUEUE_TTL_SECONDS)).execute())

    def close(self) -> None:
        with self._spool_lock:
            if self._spool is not None:
                self._spool.close()
                self._spool = None


# -- change signals -----------------------------------------------------------


class ChangeSignal:
    """Collections written through one instance, told to the others.

    The instance that wrote publishes the collection's path on the
    channel ``<prefix>changes``; every instance listens in one daemon
    thread and calls ``on_change(path)`` for the others' messages, so its
    local engine stops trusting its stat-based view of that collection
    (on NFS, attributes are cached and rename order is not kept).  After
    the subscription was lost, ``on_change("")`` says that anything may
    have changed.  With Redis down nothing is published and the engine's
    stat check is all there is."""

    def __init__(self, link: RedisLink,
                 on_change: Callable[[str], None]) -> None:
        self.link = link
        self.on_change = on_change
        self.channel = link.key("changes")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        #: Set once the subscription is in place (tests wait for it).
        self.listening = threading.Event()

    def publish(self, path: str) -> None:
        message = json.dumps({"origin": self.link.owner,
                              "path": path[:MAX_PATH_CHARS]})
        self.link.run(lambda c: c.publish(self.channel, message))

    def start(self) -> "ChangeSignal":
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="redis-changes")
        self._thread.start()
        return self

    def stop(self, wait: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait)

    def _run(self) -> None:
        pause, lost = 0.2, False
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self.link.client().pubsub(
                    ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.listening.set()
                pause = 0.2
                if lost:
                    lost = False
                    self._tell("")
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._received(message.get("data"))
            except Exception as e:
                if not _redis_error(e):
                    logger.exception("Change signals: listener failed")
                else:
                    self.link.failed(e)
                self.listening.clear()
                lost = True
                self._stop.wait(pause)
                pause = min(5.0, pause * 2)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
        self.listening.clear()

    def _received(self, data) -> None:
        try:
            message = json.loads(data)
            origin, path = message["origin"], message["path"]
            if not (isinstance(origin, str) and isinstance(path, str) and
                    len(path) <= MAX_PATH_CHARS):
                raise ValueError("not a change signal")
        except (TypeError, ValueError, KeyError) as e:
            logger.warning("Change signals: unreadable message (%s)", e)
            return
        if origin != self.link.owner:
            self._tell(path)

    def _tell(self, path: str) -> None:
        try:
            self.on_change(path)
        except Exception:
            logger.exception("Change signals: %r not taken", path)
