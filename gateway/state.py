"""Shared state behind small interfaces, with in-process defaults.

What several requests (and, later, several gateway instances through
Redis) must share lives here, each behind an interface small enough that
another backend can implement it without touching plugins or faces:

- ``TokenStore``: access tokens of the providers' credentials, with their
  expiry, and a per-key lock so that one thread refreshes while the others
  wait and then reuse its token.
- ``AnswerCache``: successful foreign answers for ``cache_ttl``, bounded.
- ``ThrottleMemory``: until when a foreign system asked for a pause.
- ``PushQueue``: work for the push direction (durable enqueue, lease with
  expiry, ack); the default is a SQLite file.

A Redis backend implements the same methods: keys are strings, times are
epoch seconds (monotonic only inside one process), values are plain
tuples of datetimes and strings or bytes.

This module imports nothing of the gateway.
"""

import sqlite3
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple


class TokenStore:
    """Tokens by key (a provider's credential identity), with expiry."""

    def get(self, key: str) -> Optional[Tuple[str, float]]:
        """``(token, expires_at)`` (epoch seconds), or None."""
        raise NotImplementedError

    def put(self, key: str, token: str, expires_at: float) -> None:
        raise NotImplementedError

    def drop(self, key: str) -> None:
        """Forget a token the foreign side refused."""
        raise NotImplementedError

    def refresh_lock(self, key: str):
        """A context manager held by the one thread that refreshes."""
        raise NotImplementedError


class MemoryTokenStore(TokenStore):
    """The in-process default."""

    def __init__(self) -> None:
        self._tokens: Dict[str, Tuple[str, float]] = {}
        self._locks: Dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: str) -> Optional[Tuple[str, float]]:
        entry = self._tokens.get(key)
        if entry is not None and entry[1] <= time.time():
            return None
        return entry

    def put(self, key: str, token: str, expires_at: float) -> None:
        self._tokens[key] = (token, expires_at)

    def drop(self, key: str) -> None:
        self._tokens.pop(key, None)

    def refresh_lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


# -- the answer cache ---------------------------------------------------------


class AnswerCache:
    """Successful answers by key, each for the window it covered, until
    its TTL.  A cached wider window serves a narrower one.

    Keys are strings (the fan-out builds them from the provider's name,
    the asker where the provider is ``per_asker``, and the address);
    windows are two aware datetimes; values are what the caller stored (a
    tuple of periods, each ``(start, end, fbtype)``), which a shared
    backend serialises.  An implementation must bound its memory.
    """

    def get(self, key: str, start, end) -> Optional[Any]:
        """The value of a fresh entry whose window covers start..end."""
        raise NotImplementedError

    def put(self, key: str, start, end, value: Any, ttl: float,
            cost: int = 1) -> None:
        """Keep ``value`` for ``ttl`` seconds; ``cost`` is its size in
        the implementation's units (the fan-out passes periods + 1)."""
        raise NotImplementedError


class MemoryAnswerCache(AnswerCache):
    """The in-process default: least recently used keys go first once
    the total cost passes ``max_cost``; at most ``windows_per_key``
    windows per key; expired entries leave when their key is touched or
    when room is needed."""

    def __init__(self, max_cost: int = 200000,
                 windows_per_key: int = 8) -> None:
        self.max_cost = max_cost
        self.windows_per_key = windows_per_key
        #: key -> [(start, end, value, expires (monotonic), cost)]
        self._entries: "OrderedDict[str, List[tuple]]" = OrderedDict()
        self._cost = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(e) for e in self._entries.values())

    @property
    def cost(self) -> int:
        return self._cost

    def _fresh(self, key: str, now: float) -> List[tuple]:
        entries = self._entries.get(key, [])
        kept = [e for e in entries if e[3] > now]
        if len(kept) != len(entries):
            self._cost -= sum(e[4] for e in entries) - sum(
                e[4] for e in kept)
            if kept:
                self._entries[key] = kept
            else:
                del self._entries[key]
        return kept

    def get(self, key: str, start, end) -> Optional[Any]:
        now = time.monotonic()
        with self._lock:
            for entry in reversed(self._fresh(key, now)):   # newest first
                if entry[0] <= start and entry[1] >= end:
                    self._entries.move_to_end(key)
                    return entry[2]
        return None

    def put(self, key: str, start, end, value: Any, ttl: float,
            cost: int = 1) -> None:
        if ttl <= 0 or cost > self.max_cost:
            return
        now = time.monotonic()
        with self._lock:
            entries = self._fresh(key, now)
            entries.append((start, end, value, now + ttl, cost))
            self._cost += cost
            while len(entries) > self.windows_per_key:
                self._cost -= entries.pop(0)[4]
            self._entries[key] = entries
            self._entries.move_to_end(key)
            while self._cost > self.max_cost and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._cost -= sum(e[4] for e in dropped)


# -- the throttle memory ------------------------------------------------------


class ThrottleMemory:
    """Until when a foreign system asked not to be called (Retry-After, a
    throttling body), by key (a provider's name).  Times are epoch
    seconds, so several gateway instances can share them."""

    def paused_until(self, key: str) -> float:
        """Epoch seconds before which ``key`` is not to be called; 0 if
        there is no pause."""
        raise NotImplementedError

    def pause(self, key: str, until: float) -> None:
        """Remember a pause; an earlier end never shortens a later one."""
        raise NotImplementedError


class MemoryThrottleMemory(ThrottleMemory):
    """The in-process default."""

    def __init__(self) -> None:
        self._until: Dict[str, float] = {}
        self._lock = threading.Lock()

    def paused_until(self, key: str) -> float:
        with self._lock:
            until = self._until.get(key, 0.0)
            if until and until <= time.time():
                del self._until[key]
                return 0.0
            return until

    def pause(self, key: str, until: float) -> None:
        with self._lock:
            self._until[key] = max(self._until.get(key, 0.0), until)


# -- the push queue -----------------------------------------------------------


class PushQueue:
    """Work for the push direction (free/busy to publish elsewhere):
    durable enqueue, lease with expiry, ack.  Delivery is at least once:
    an item whose lease runs out before its ack is leased again."""

    def enqueue(self, payload: bytes, key: Optional[str] = None) -> str:
        """Add an item; with ``key``, a pending (unleased) item of the same
        key is replaced instead (a newer state supersedes an older one).
        Returns the item's id."""
        raise NotImplementedError

    def lease(self, seconds: float, limit: int = 1
              ) -> List[Tuple[str, bytes]]:
        """Up to ``limit`` items nobody holds, as ``(lease id, payload)``,
        held for ``seconds``."""
        raise NotImplementedError

    def ack(self, lease_id: str) -> bool:
        """Done with a leased item: it is removed.  False if the lease had
        run out and someone else holds the item now."""
        raise NotImplementedError


class SqlitePushQueue(PushQueue):
    """The default: one SQLite file (``":memory:"`` for tests), so queued
    items survive a restart."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False,
                                   isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS push_queue ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT,"
                " payload BLOB NOT NULL, leased_until REAL NOT NULL"
                " DEFAULT 0, attempt INTEGER NOT NULL DEFAULT 0)")

    def enqueue(self, payload: bytes, key: Optional[str] = None) -> str:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = None if key is None else self._db.execute(
                    "SELECT id FROM push_queue WHERE key = ? AND "
                    "leased_until <= ? ORDER BY id LIMIT 1",
                    (key, time.time())).fetchone()
                if row is not None:
                    self._db.execute("UPDATE push_queue SET payload = ? "
                                     "WHERE id = ?", (payload, row[0]))
                    item = row[0]
                else:
                    item = self._db.execute(
                        "INSERT INTO push_queue (key, payload) VALUES (?, ?)",
                        (key, payload)).lastrowid
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return str(item)

    def lease(self, seconds: float, limit: int = 1
              ) -> List[Tuple[str, bytes]]:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT id, payload, attempt FROM push_queue WHERE "
                    "leased_until <= ? ORDER BY id LIMIT ?",
                    (now, max(1, limit))).fetchall()
                for item, _, attempt in rows:
                    self._db.execute(
                        "UPDATE push_queue SET leased_until = ?, attempt = ?"
                        " WHERE id = ?", (now + seconds, attempt + 1, item))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [("%d:%d" % (item, attempt + 1), bytes(payload))
                for item, payload, attempt in rows]

    def ack(self, lease_id: str) -> bool:
        item, _, attempt = lease_id.partition(":")
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM push_queue WHERE id = ? AND attempt = ?",
                (int(item), int(attempt)))
        return cursor.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._db.close()
