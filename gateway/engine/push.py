"""The push direction: local free/busy published where foreign systems
want it pushed (an .ifb file in a WebDAV folder, a peer gateway).

A change to a user's calendars enqueues one item per publishing provider,
keyed ``provider/user``, so that several changes before the worker gets
to it coalesce into one push.  The worker leases items from the durable
queue (gateway.state.PushQueue), computes the user's free/busy for the
push window (from the start of today, ``[gateway] push_window_days``)
at delivery time, and calls the provider's ``publish``.  A failed push is
released for a retry with exponential backoff; a worker killed mid-push
leaves its lease to run out, and the item is pushed again (at least
once).  Each push carries the DTSTAMP of the change that queued it, so a
receiver can drop the repeat of a push it had already taken.  Every user
is republished every ``push_republish_hours``, since the window slides
even when nothing changes.
"""

import datetime
import json
import logging
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from gateway.model import UTC, LookupResult, Reason, Window
from gateway.state import PushQueue
from gateway.transport.lookup import LookupContext

logger = logging.getLogger(__name__)

#: Retry delays: 5 s doubling up to an hour.
FIRST_RETRY, LAST_RETRY = 5.0, 3600.0
LAST_REPUBLISH = "last_republish"


def retry_delay(attempt: int) -> float:
    return min(LAST_RETRY, FIRST_RETRY * 2 ** max(0, attempt - 1))


def push_window(days: int, now: Optional[datetime.datetime] = None
                ) -> Window:
    """From the start of today (UTC) for ``days`` days."""
    now = now or datetime.datetime.now(UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return Window(start, start + datetime.timedelta(days=days))


class PushWorker:
    """Feeds the queue on changes and drains it in one daemon thread."""

    def __init__(self, queue: PushQueue, providers: Sequence,
                 lookup: Callable[[str, Window], LookupResult],
                 users: Callable[[], Iterable[str]],
                 address_of: Callable[[str], str], window_days: int,
                 republish_seconds: float, timeout: float,
                 poll_seconds: float = 1.0) -> None:
        self.queue = queue
        self.providers: Dict[str, object] = {p.name: p for p in providers}
        self.lookup = lookup
        self.users = users
        self.address_of = address_of
        self.window_days = window_days
        self.republish_seconds = republish_seconds
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- feeding ----------------------------------------------------------

    def changed(self, user: str, stamp: Optional[float] = None) -> None:
        """``user``'s calendars changed: push them everywhere, soon."""
        stamp = time.time() if stamp is None else stamp
        for name in self.providers:
            self.queue.enqueue(json.dumps({
                "user": user, "provider": name, "stamp": stamp}).encode(),
                key="%s/%s" % (name, user))
        self._wake.set()

    def republish_if_due(self) -> bool:
        """Queue every user again when the last round is old enough."""
        last = float(self.queue.get_meta(LAST_REPUBLISH) or 0)
        now = time.time()
        if now - last < self.republish_seconds:
            return False
        self.queue.set_meta(LAST_REPUBLISH, repr(now))
        count = 0
        for user in self.users():
            self.changed(user, now)
            count += 1
        logger.info("Push: republishing %d users", count)
        return True

    # -- draining ---------------------------------------------------------

    def run_once(self) -> int:
        """Push the next due item; how many were taken (0 or 1)."""
        # One item at a time, held for twice the push's deadline: longer
        # than its push can take, short enough that a killed worker's
        # item goes out again soon.
        leased = self.queue.lease(2 * self.timeout + 5, 1)
        for lease_id, payload in leased:
            self._deliver(lease_id, payload)
        return len(leased)

    def _deliver(self, lease_id: str, payload: bytes) -> None:
        try:
            item = json.loads(payload)
            user, name = str(item["user"]), str(item["provider"])
            stamp = float(item["stamp"])
        except (ValueError, KeyError, TypeError):
            logger.error("Push: dropping unreadable queue item %s", lease_id)
            self.queue.ack(lease_id)
            return
        provider = self.providers.get(name)
        if provider is None:
            # The provider left the config: nothing to push to any more.
            logger.warning("Push: provider %s is gone; dropping %s's push",
                           name, user)
            self.queue.ack(lease_id)
            return
        error = self._push(provider, user, stamp)
        if error is None:
            if not self.queue.ack(lease_id):
                logger.warning("Push of %s to %s finished after its lease "
                               "ran out; it may be pushed twice", user, name)
            return
        attempt = int(lease_id.rpartition(":")[2])
        delay = retry_delay(attempt)
        logger.warning("Push of %s to %s failed (attempt %d, next in %d s):"
                       " %s", user, name, attempt, delay, error)
        self.queue.release(lease_id, delay, error)

    def _push(self, provider, user: str, stamp: float) -> Optional[str]:
        """None when ``provider`` took ``user``'s free/busy, else why not."""
        window = push_window(self.window_days)
        result = self.lookup(user, window)
        if result.failure in (Reason.NO_AUTHORITY, Reason.UNKNOWN_USER):
            # Opted out, or gone: nothing of theirs goes out.
            logger.info("Push of %s to %s dropped: %s", user, provider.name,
                        result.failure.value)
            return None
        if not result.ok:
            return "%s's free/busy: %s %s" % (user, result.failure.value,
                                               result.detail)
        context = LookupContext(time.monotonic() + self.timeout)
        try:
            provider.publish(self.address_of(user), list(result.periods),
                             window, context,
                             datetime.datetime.fromtimestamp(stamp, UTC))
        except Exception as e:  # a plugin's failure stays with its item
            detail = getattr(e, "detail", None) or "%s: %s" % (
                type(e).__name__, e)
            return str(detail)
        return None

    # -- the thread -------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="push",
                                        daemon=True)
        self._thread.start()

    def stop(self, wait: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(wait)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.republish_if_due()
                while self.run_once() and not self._stop.is_set():
                    pass
            except Exception:
                logger.exception("Push worker pass failed")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()


def queue_summary(items: List) -> str:
    """``fbgateway queue list``: one line per item."""
    lines = []
    now = time.time()
    for item in items:
        try:
            payload = json.loads(item.payload)
            what = "%s -> %s" % (payload.get("user"), payload.get("provider"))
        except ValueError:
            what = "(unreadable)"
        state = "held" if item.leased_until > now else (
            "due in %d s" % (item.not_before - now)
            if item.not_before > now else "due")
        lines.append("%s  %s  attempts=%d  %s%s" % (
            item.id, what, item.attempts, state,
            "  last error: %s" % item.last_error if item.last_error else ""))
    return "\n".join(lines)
