"""A hard time limit for pure-Python work that cannot be cut into steps.

Recurrence expansion runs inside dateutil, whose single ``next()`` can
walk millions of candidate instants for a rule that matches rarely or never
(``FREQ=SECONDLY`` with a sparse BYxxx set, ``INTERVAL=0``).  Counting
occurrences between steps cannot stop that, and a thread cannot be killed.
What CPython does offer is an asynchronous exception: one watchdog thread
raises ``TimeLimitExceeded`` inside the worker thread once its limit has
passed, and the worker's own ``with time_limit(...)`` catches it.  The
exception derives from BaseException so that library code with a broad
``except Exception`` cannot swallow it.

The exception is delivered the next time the thread runs Python bytecode;
the code this guards (dateutil, recurring-ical-events) is pure Python.
"""

import contextlib
import ctypes
import heapq
import itertools
import threading
import time
from typing import Dict, Iterator, List, Tuple


class TimeLimitExceeded(BaseException):
    """Raised inside a thread whose ``time_limit`` block ran too long."""




def _set_async_exc(thread_id: int, exception) -> None:
    """PyThreadState_SetAsyncExc; ``None`` clears a pending one (NULL)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id),
        None if exception is None else ctypes.py_object(exception))


class _Watchdog:
    """One daemon thread serving every ``time_limit`` in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: List[Tuple[float, int, int]] = []
        #: token -> thread id, for blocks still running
        self._active: Dict[int, int] = {}
        self._fired: set = set()
        self._tokens = itertools.count()
        self._thread = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="expansion-watchdog")
            self._thread.start()

    def enter(self, seconds: float) -> int:
        with self._lock:
            token = next(self._tokens)
            self._active[token] = threading.get_ident()
            heapq.heappush(self._heap,
                           (time.monotonic() + seconds, token, 0))
            self._ensure_thread()
            self._wake.notify()
            return token

    def leave(self, token: int) -> bool:
        """Unregister; True when the limit fired for this block."""
        with self._lock:
            thread_id = self._active.pop(token)
            fired = token in self._fired
            if fired:
                self._fired.discard(token)
                # Clear an exception that was set but not yet delivered,
                # so it cannot surface after the block.
                _set_async_exc(thread_id, None)
            return fired

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][1] not in self._active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                due, token, _ = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._fired.add(token)
                _set_async_exc(self._active[token], TimeLimitExceeded)


_WATCHDOG = _Watchdog()


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeLimitExceeded in this thread if the block outlasts
    ``seconds``; a non-positive limit means none."""
    if seconds <= 0:
        yield
        return
    token = _WATCHDOG.enter(seconds)
    try:
        yield
    finally:
        fired = _WATCHDOG.leave(token)
    if fired:
        raise TimeLimitExceeded()
