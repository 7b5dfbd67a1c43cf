"""Shared state behind small interfaces, with in-process defaults.

What several requests (and, later, several gateway instances through
Redis) must share lives here, each behind an interface small enough that
another backend can implement it without touching plugins or faces:

- ``TokenStore``: access tokens of the providers' credentials, with their
  expiry, and a per-key lock so that one thread refreshes while the others
  wait and then reuse its token.

This module imports nothing of the gateway.
"""

import threading
import time
from typing import Dict, Optional, Tuple


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
