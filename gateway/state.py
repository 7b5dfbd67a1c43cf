"""Shared state behind small interfaces, with in-process defaults.

What several requests (and, later, several gateway instances through
Redis) must share lives here, each behind an interface small enough that
another backend can implement it without touching plugins or faces:

- ``TokenStore``: access tokens of the providers' credentials, with their
  expiry, and a per-key lock so that one thread refreshes while the others
  wait and then reuse its token.
- ``AnswerCache``: successful foreign answers for ``cache_ttl``, bounded,
  and a claim per answer being fetched (single flight across processes).
- ``ThrottleMemory``: until when a foreign system asked for a pause.
- ``PushQueue``: work for the push direction (durable enqueue, lease with
  expiry, ack); the default is a SQLite file.

gateway/state_redis.py implements the same methods on Redis, for several
gateway instances: keys are strings, times are epoch seconds (monotonic
only inside one process), values are plain tuples of datetimes and
strings or bytes.

This module imports nothing of the gateway.
"""

import sqlite3
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, List, NamedTuple, Optional, Tuple


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

    def claim(self, key: str, start, end, seconds: float) -> bool:
        """May this process fetch ``key`` over start..end now?  False
        when another process sharing the cache is fetching it (for at
        most ``seconds``): the caller then polls ``get`` and claims again
        until one of the two succeeds, so N instances make one foreign
        call.  Claiming what this process holds renews it for
        ``seconds``.  Inside one process the fan-out's own single flight joins
        calls, so a cache no other process shares always says True."""
        return True

    def unclaim(self, key: str, start, end) -> None:
        """Done fetching (answer stored, or failed): a waiting process
        may claim at once instead of waiting for the claim to expire."""


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


# -- free/busy peers pushed to us ---------------------------------------------


class PushedStore:
    """Free/busy a peer pushed for one of its addresses (design.md, "Push
    to a peer gateway"): lookups of that address inside the pushed window
    are answered from it, without asking, until it expires.

    Keys are strings (provider name and address); windows two aware
    datetimes; periods tuples of ``(start, end, fbtype)``; ``stamp`` the
    push's DTSTAMP as a POSIX time, so a repeat of an older push (one in
    flight when its sender crashed) never replaces a newer one."""

    def put(self, key: str, start, end, periods, stamp: float,
            expires: float) -> bool:
        """Keep it until ``expires`` (wall clock); False when what is
        kept is newer (``stamp`` smaller), which is then kept."""
        raise NotImplementedError

    def get(self, key: str, start, end) -> Optional[Any]:
        """The periods of a live push covering start..end, else None."""
        raise NotImplementedError


class MemoryPushedStore(PushedStore):
    """In-process default, at most ``max_entries`` addresses (the ones
    expiring first go when room is needed)."""

    def __init__(self, max_entries: int = 100000) -> None:
        self.max_entries = max_entries
        self._entries: Dict[str, tuple] = {}
        self._lock = threading.Lock()

    def put(self, key: str, start, end, periods, stamp: float,
            expires: float) -> bool:
        now = time.time()
        with self._lock:
            kept = self._entries.get(key)
            if kept is not None and kept[4] > now and kept[3] > stamp:
                return False
            self._entries[key] = (start, end, tuple(periods), stamp,
                                  expires)
            if len(self._entries) > self.max_entries:
                for old in sorted(self._entries,
                                  key=lambda k: self._entries[k][4]
                                  )[:len(self._entries) - self.max_entries]:
                    del self._entries[old]
        return True

    def get(self, key: str, start, end) -> Optional[Any]:
        with self._lock:
            kept = self._entries.get(key)
            if kept is None:
                return None
            if kept[4] <= time.time():
                del self._entries[key]
                return None
        if kept[0] <= start and kept[1] >= end:
            return kept[2]
        return None


# -- the push queue -----------------------------------------------------------


class QueueItem(NamedTuple):
    """One queued push as the admin sees it (``fbgateway queue list``)."""

    id: str
    key: Optional[str]
    payload: bytes
    attempts: int
    #: wall-clock seconds: queued, next try, held by a worker until
    created: float
    not_before: float
    leased_until: float
    last_error: str


class PushQueue:
    """Work for the push direction (free/busy to publish elsewhere):
    durable enqueue, lease with expiry, ack, retry later.  Delivery is at
    least once: an item whose lease runs out before its ack (a worker
    killed mid-push) is leased again."""

    def enqueue(self, payload: bytes, key: Optional[str] = None) -> str:
        """Add an item; with ``key``, an item of the same key that no
        worker holds is replaced instead (a newer state supersedes an
        older one; a retry wait it was in is kept).  Returns its id."""
        raise NotImplementedError

    def lease(self, seconds: float, limit: int = 1
              ) -> List[Tuple[str, bytes]]:
        """Up to ``limit`` due items nobody holds, as ``(lease id,
        payload)``, held for ``seconds``."""
        raise NotImplementedError

    def ack(self, lease_id: str) -> bool:
        """Done with a leased item: it is removed.  False if the lease had
        run out and someone else holds the item now."""
        raise NotImplementedError

    def release(self, lease_id: str, delay: float, error: str) -> bool:
        """A leased item failed: due again in ``delay`` seconds."""
        raise NotImplementedError

    def items(self) -> List[QueueItem]:
        """Every queued item, oldest first."""
        raise NotImplementedError

    def retry(self, item_id: Optional[str] = None) -> int:
        """Make one item (or all) due now; how many."""
        raise NotImplementedError

    def purge(self, item_id: Optional[str] = None) -> int:
        """Drop one item (or all); how many."""
        raise NotImplementedError

    def summary(self) -> Tuple[int, Optional[float]]:
        """(items queued, when the oldest was queued), for health and
        metrics; an implementation answers it without reading payloads
        where it can."""
        items = self.items()
        return len(items), min((i.created for i in items), default=None)

    def get_meta(self, name: str) -> Optional[str]:
        """A small value the push worker keeps beside the queue (when it
        last republished everyone)."""
        raise NotImplementedError

    def set_meta(self, name: str, value: str) -> None:
        raise NotImplementedError


class SqlitePushQueue(PushQueue):
    """The default: one SQLite file (``":memory:"`` for tests), so queued
    items survive a restart and a kill -9 (each change is one committed
    transaction; several processes may share the file)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False,
                                   isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS push_items ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT,"
                " payload BLOB NOT NULL,"
                " leased_until REAL NOT NULL DEFAULT 0,"
                " attempt INTEGER NOT NULL DEFAULT 0,"
                " not_before REAL NOT NULL DEFAULT 0,"
                " created REAL NOT NULL DEFAULT 0,"
                " last_error TEXT NOT NULL DEFAULT '')")
            self._db.execute("CREATE INDEX IF NOT EXISTS push_items_key "
                             "ON push_items (key)")
            self._db.execute("CREATE TABLE IF NOT EXISTS push_meta ("
                             " name TEXT PRIMARY KEY, value TEXT)")

    def _transaction(self, work):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return result

    def enqueue(self, payload: bytes, key: Optional[str] = None) -> str:
        now = time.time()

        def work(db):
            row = None if key is None else db.execute(
                "SELECT id FROM push_items WHERE key = ? AND "
                "leased_until <= ? ORDER BY id LIMIT 1",
                (key, now)).fetchone()
            if row is not None:
                db.execute("UPDATE push_items SET payload = ? WHERE id = ?",
                           (payload, row[0]))
                return row[0]
            return db.execute(
                "INSERT INTO push_items (key, payload, created) "
                "VALUES (?, ?, ?)", (key, payload, now)).lastrowid
        return str(self._transaction(work))

    def lease(self, seconds: float, limit: int = 1
              ) -> List[Tuple[str, bytes]]:
        now = time.time()

        def work(db):
            rows = db.execute(
                "SELECT id, payload, attempt FROM push_items WHERE "
                "leased_until <= ? AND not_before <= ? ORDER BY id LIMIT ?",
                (now, now, max(1, limit))).fetchall()
            for item, _, attempt in rows:
                db.execute("UPDATE push_items SET leased_until = ?, "
                           "attempt = ? WHERE id = ?",
                           (now + seconds, attempt + 1, item))
            return rows
        return [("%d:%d" % (item, attempt + 1), bytes(payload))
                for item, payload, attempt in self._transaction(work)]

    @staticmethod
    def _lease_parts(lease_id: str) -> Tuple[int, int]:
        item, _, attempt = lease_id.partition(":")
        return int(item), int(attempt)

    def ack(self, lease_id: str) -> bool:
        item, attempt = self._lease_parts(lease_id)
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM push_items WHERE id = ? AND attempt = ?",
                (item, attempt))
        return cursor.rowcount == 1

    def release(self, lease_id: str, delay: float, error: str) -> bool:
        item, attempt = self._lease_parts(lease_id)
        with self._lock:
            cursor = self._db.execute(
                "UPDATE push_items SET leased_until = 0, not_before = ?, "
                "last_error = ? WHERE id = ? AND attempt = ?",
                (time.time() + delay, error[:500], item, attempt))
        return cursor.rowcount == 1

    def items(self) -> List[QueueItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, key, payload, attempt, created, not_before, "
                "leased_until, last_error FROM push_items ORDER BY id"
            ).fetchall()
        return [QueueItem(str(r[0]), r[1], bytes(r[2]), *r[3:])
                for r in rows]

    def _where(self, item_id: Optional[str]):
        if item_id is None:
            return "", ()
        return " WHERE id = ?", (int(item_id),)

    def retry(self, item_id: Optional[str] = None) -> int:
        where, args = self._where(item_id)
        with self._lock:
            return self._db.execute(
                "UPDATE push_items SET not_before = 0" + where, args
            ).rowcount

    def purge(self, item_id: Optional[str] = None) -> int:
        where, args = self._where(item_id)
        with self._lock:
            return self._db.execute("DELETE FROM push_items" + where,
                                    args).rowcount

    def summary(self) -> Tuple[int, Optional[float]]:
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created) FROM push_items").fetchone()
        return count, oldest

    def get_meta(self, name: str) -> Optional[str]:
        with self._lock:
            row = self._db.execute("SELECT value FROM push_meta WHERE "
                                   "name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, name: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO push_meta (name, value)"
                             " VALUES (?, ?)", (name, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()
