"""Where shared state lives, as ``[gateway] cache``, ``queue`` and
``redis_prefix`` say: one place that builds the stores of gateway.state
for the application, the providers' HTTP clients and ``fbgateway queue``.

Without ``cache`` and with a file (or nothing) as ``queue``, everything
is in-process and the queue a SQLite file, as ``scripts/serve`` runs it.
With Redis URLs, the answer cache, peers' pushes, throttling pauses,
tokens and change signals go to the ``cache`` Redis and the push queue to
the ``queue`` one (gateway/state_redis.py; docs/redis.md).  One Redis
link per URL and prefix serves the whole process, so an outage is one
state and one log line.
"""

import os
import socket
import threading
from typing import Callable, Dict, Optional, Tuple

from gateway.config import REDIS_SCHEMES, GatewayConfig
from gateway.state import (AnswerCache, MemoryAnswerCache, MemoryPushedStore,
                           MemoryThrottleMemory, PushedStore, PushQueue,
                           SqlitePushQueue, ThrottleMemory, TokenStore)

#: The SQLite queue's file in Radicale's storage folder (the default).
QUEUE_FILE = ".freebusy-push-queue.sqlite"
#: The spool of a Redis queue while Redis is down: one per host.
SPOOL_FILE = ".freebusy-push-spool-%s.sqlite"

_links: Dict[Tuple[str, str], object] = {}
_shared: Dict[Tuple[str, str, str], object] = {}
_lock = threading.Lock()


def is_redis(place: Optional[str]) -> bool:
    return bool(place) and place.split("://", 1)[0].lower() in REDIS_SCHEMES


def _link(url: str, prefix: str):
    from gateway.state_redis import RedisLink
    with _lock:
        link = _links.get((url, prefix))
        if link is None:
            link = _links[(url, prefix)] = RedisLink(url, prefix)
        return link


def redis_links(options: Dict) -> Dict[str, Tuple[object, list]]:
    """The Redis links ``[gateway]`` options name: {url: (link, roles)},
    roles among "cache" and "queue" (``fbgateway check`` pings them)."""
    found: Dict[str, Tuple[object, list]] = {}
    prefix = options.get("redis_prefix") or "fbgw:"
    for role in ("cache", "queue"):
        url = options.get(role)
        if is_redis(url):
            found.setdefault(url, (_link(url, prefix), []))[1].append(role)
    return found


def _one(kind: str, url: str, prefix: str, make: Callable):
    """One backend object of ``kind`` per Redis and prefix per process:
    their fallbacks (own tokens, own pauses) are the process's."""
    with _lock:
        found = _shared.get((kind, url, prefix))
    if found is None:
        built = make(_link(url, prefix))
        with _lock:
            found = _shared.setdefault((kind, url, prefix), built)
    return found


class Stores:
    """The stores one gateway configuration uses."""

    def __init__(self, cache: Optional[str], queue: Optional[str],
                 prefix: str, storage_folder: str) -> None:
        self.cache_url = cache if is_redis(cache) else None
        self.queue_place = queue or os.path.join(storage_folder, QUEUE_FILE)
        self.prefix = prefix
        self.storage_folder = storage_folder

    @classmethod
    def of(cls, gateway_config: GatewayConfig) -> "Stores":
        options = gateway_config.gateway
        return cls(options.get("cache"), options.get("queue"),
                   options.get("redis_prefix") or "fbgw:",
                   gateway_config.radicale.get("storage",
                                               "filesystem_folder"))

    @property
    def shared(self) -> bool:
        """Do other instances share what this one keeps?"""
        return self.cache_url is not None

    def answers(self) -> AnswerCache:
        """A new in-process cache, or the process's Redis one."""
        if not self.shared:
            return MemoryAnswerCache()
        from gateway.state_redis import RedisAnswerCache
        return _one("answers", self.cache_url, self.prefix, RedisAnswerCache)

    def pushed(self) -> PushedStore:
        if not self.shared:
            return MemoryPushedStore()
        from gateway.state_redis import RedisPushedStore
        return _one("pushed", self.cache_url, self.prefix, RedisPushedStore)

    def tokens(self) -> TokenStore:
        """The process's token store (auth.DEFAULT_TOKEN_STORE without
        Redis: every provider of the process shares it)."""
        if not self.shared:
            from gateway.transport.auth import DEFAULT_TOKEN_STORE
            return DEFAULT_TOKEN_STORE
        from gateway.state_redis import RedisTokenStore
        return _one("tokens", self.cache_url, self.prefix, RedisTokenStore)

    def throttle_for(self, provider_name: str) -> ThrottleMemory:
        """The pauses of one provider's HTTP client."""
        if not self.shared:
            return MemoryThrottleMemory()
        from gateway.state_redis import RedisThrottleMemory
        return RedisThrottleMemory(_link(self.cache_url, self.prefix),
                                   provider_name)

    def open_queue(self) -> PushQueue:
        """The push queue: a SQLite file, or Redis with a spool file of
        this host beside the calendars."""
        if not is_redis(self.queue_place):
            return SqlitePushQueue(self.queue_place)
        from gateway.state_redis import RedisPushQueue
        return RedisPushQueue(
            _link(self.queue_place, self.prefix),
            os.path.join(self.storage_folder,
                         SPOOL_FILE % socket.gethostname()))

    def change_signal(self, on_change: Callable[[str], None]):
        """A started ChangeSignal on the ``cache`` Redis (else the
        ``queue`` one), or None when no Redis is configured."""
        url = self.cache_url or (self.queue_place
                                 if is_redis(self.queue_place) else None)
        if url is None:
            return None
        from gateway.state_redis import ChangeSignal
        return ChangeSignal(_link(url, self.prefix), on_change).start()
