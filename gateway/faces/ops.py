"""Operations: ``GET /.freebusy/health`` for load balancers and
``GET /.freebusy/metrics`` for Prometheus.

Health answers without a login, so it says nothing secret: no user
names, paths, hosts or URLs, only check names, states, counts and the
provider sections' names and types.  It never calls a foreign system (a
load balancer's polls must not reach them): a provider's state is its
remembered throttle pause.  It checks what this instance needs to
answer: the storage folder (readable, writable, its lock acquirable),
the push queue (readable when opened afresh, as a restart would open it;
depth and the oldest item's age), Redis when the ini names one, and the
providers.  Each check runs in its own thread, all under one bound
(``CHECK_SECONDS``); a check that hangs (a dead NFS mount, a lock never
released) keeps its one thread and is reported as hanging until it
returns, so polls cannot pile threads up.  One answer serves every poll
for ``REUSE_SECONDS``.

``"status"`` is ``failing`` (HTTP 503: take this instance out) when the
storage or the queue cannot be used, ``degraded`` (200) when it answers
but Redis is down, a provider is paused or pushes have waited over
``QUEUE_STALE_SECONDS``, else ``ok``.

Metrics are on unless ``[gateway] metrics = no``; ``[gateway]
metrics_users`` restricts them to those local accounts (see
docs/deployment.md).
"""

import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
import weakref
from typing import Callable, Dict, NamedTuple, Optional

from radicale import httputils

from gateway import metrics
from gateway.stores import Stores

logger = logging.getLogger(__name__)

HEALTH_PATH = "/.freebusy/health"
METRICS_PATH = "/.freebusy/metrics"
#: Longest a health answer waits for its checks: load balancers give up
#: after a few seconds, and a slower answer is itself a failure.
CHECK_SECONDS = 2.0
#: One health answer serves every poll this long.
REUSE_SECONDS = 1.0
#: Pushes waiting longer than this (a peer down, a republish of many
#: users stuck) make the gateway "degraded".
QUEUE_STALE_SECONDS = 3600.0
#: Radicale's storage types that keep a folder the gateway can check.
FOLDER_STORAGES = ("multifilesystem", "multifilesystem_nolock")

OK, DEGRADED, FAILING = "ok", "degraded", "failing"
_ORDER = (OK, DEGRADED, FAILING)


def register(registry) -> None:
    registry.route(("GET", "HEAD"), HEALTH_PATH, health)
    registry.route(("GET", "HEAD"), METRICS_PATH, scrape)


def _text(status: int, text: str) -> tuple:
    return status, {"Content-Type": "text/plain; charset=utf-8"}, \
        text.encode("utf-8"), None


def health(app, request) -> tuple:
    if request.path.rstrip("/") != HEALTH_PATH:
        return _text(404, "no such route")
    report = checker_of(app).report()
    body = json.dumps({"status": report.status, "checks": report.checks},
                      indent=1, sort_keys=True).encode("utf-8")
    return 503 if report.status == FAILING else 200, {
        "Content-Type": "application/json; charset=utf-8",
        "Cache-Control": "no-store"}, body, None


def scrape(app, request) -> tuple:
    if request.path.rstrip("/") != METRICS_PATH:
        return _text(404, "no such route")
    options = app.gateway_options
    if not options.get("metrics", True):
        return _text(404, "metrics are turned off ([gateway] metrics = no)")
    allowed = options.get("metrics_users") or ()
    if allowed and request.user not in allowed:
        # 401 with Radicale's WWW-Authenticate when anonymous, else 403.
        return httputils.NOT_ALLOWED
    report = checker_of(app).report()
    body, content_type = metrics.exposition(
        app.providers, _local_cache_cost(app.local), report.queue)
    return 200, {"Content-Type": content_type,
                 "Cache-Control": "no-store"}, body, None


def _local_cache_cost(engine) -> int:
    """The local engine's ``cache_cost`` (a method until the busy index
    made it a property)."""
    cost = engine.cache_cost
    return int(cost() if callable(cost) else cost)


# -- the checks -----------------------------------------------------------


class CheckFailed(Exception):
    """A check's failure, with a reason safe to show anyone."""


def _failing(reason: str) -> dict:
    return {"status": FAILING, "reason": reason}


def _os_reason(what: str, error: OSError) -> str:
    # strerror only: the exception's text names the path.
    return "%s: %s" % (what, error.strerror or type(error).__name__)


def check_storage(app, step: Dict[str, str]) -> dict:
    """Radicale's folder can be listed and written, and its lock taken
    (a writer holding it for long stops every request)."""
    configuration = app.configuration
    if configuration.get("storage", "type") in FOLDER_STORAGES:
        folder = configuration.get("storage", "filesystem_folder")
        step["now"] = "storage folder"
        try:
            with os.scandir(folder) as entries:
                next(entries, None)
        except OSError as e:
            raise CheckFailed(_os_reason("storage folder not readable", e))
        try:
            handle, probe = tempfile.mkstemp(prefix=".freebusy-health-",
                                             dir=folder)
            try:
                os.write(handle, b"ok\n")
            finally:
                os.close(handle)
                os.unlink(probe)
        except OSError as e:
            raise CheckFailed(_os_reason("storage folder not writable", e))
    step["now"] = "storage lock"
    try:
        with app._storage.acquire_lock("r"):
            pass
    except RuntimeError:
        raise CheckFailed("storage lock failed")
    return {"status": OK}


def check_queue(app, step: Dict[str, str]) -> dict:
    """The push queue opened afresh, as a restart would open it (the
    running connection can go on reading pages it has cached from a file
    that is no longer a database): depth and the oldest item's age."""
    if app.push is None:
        return {"status": OK, "used": False}
    step["now"] = "push queue"
    try:
        queue = Stores.of(app.gateway_config).open_queue()
        try:
            state = metrics.queue_state(queue)
        finally:
            getattr(queue, "close", lambda: None)()
    except sqlite3.Error as e:
        raise CheckFailed("push queue unreadable: %s" % e)
    except OSError as e:
        raise CheckFailed(_os_reason("push queue unreadable", e))
    stale = state.oldest_age is not None and \
        state.oldest_age > QUEUE_STALE_SECONDS
    return {"status": DEGRADED if stale else OK, "used": True,
            "depth": state.depth,
            "oldest_age_seconds": None if state.oldest_age is None
            else round(state.oldest_age, 1), "_state": state}


def check_redis(app, step: Dict[str, str]) -> dict:
    """Each Redis this instance uses (``[gateway] cache``, and ``queue``
    when pushes go out), pinged.  Down is degraded, not failing: lookups
    go on without the shared cache and pushes wait in the local spool
    (docs/redis.md).  A link that failed within the last second answers
    "down" without being asked again."""
    by_link: Dict[int, list] = {}
    for role, holder in (("cache", app.fanout.cache),
                         ("queue", getattr(app.push, "queue", None))):
        link = getattr(holder, "link", None)
        if link is not None:
            by_link.setdefault(id(link), [link, []])[1].append(role)
    if not by_link:
        return {"status": OK, "used": False}
    found = {}
    for link, roles in by_link.values():
        step["now"] = "Redis (%s)" % ", ".join(roles)
        up = link.run(lambda client: client.ping(), lambda: False)
        since = getattr(link, "down_since", None)
        state = {"up": bool(up)} if up or since is None else {
            "up": False, "down_seconds": round(time.time() - since, 1)}
        found.update((role, state) for role in roles)
    down = not all(state["up"] for state in found.values())
    return dict(found, status=DEGRADED if down else OK, used=True)


def check_providers(app, step: Dict[str, str]) -> dict:
    """Each provider section's type and remembered pause; never a call."""
    step["now"] = "provider throttle memory"
    found = {p.name: {"type": str(p.options.get("type", "")),
                      "paused_seconds": round(metrics.paused_for(p), 1)}
             for p in app.providers}
    paused = any(p["paused_seconds"] > 0 for p in found.values())
    return {"status": DEGRADED if paused else OK, "providers": found}


CHECKS: Dict[str, Callable[[object, Dict[str, str]], dict]] = {
    "storage": check_storage,
    "queue": check_queue,
    "redis": check_redis,
    "providers": check_providers,
}


class _Probe:
    """One check in its own daemon thread; while it hangs, later polls
    wait on the same thread instead of starting another."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: Optional[threading.Thread] = None
        self._started = 0.0
        self._box: dict = {}

    def begin(self, app, check) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        box: dict = {"step": {"now": self.name}}
        thread = threading.Thread(target=self._run, args=(app, check, box),
                                  name="health-" + self.name, daemon=True)
        self._thread, self._box, self._started = thread, box, \
            time.monotonic()
        thread.start()

    def _run(self, app, check, box: dict) -> None:
        try:
            box["answer"] = check(app, box["step"])
        except CheckFailed as e:
            box["answer"] = _failing(str(e))
        except Exception as e:
            # Its text may name hosts or paths: the log gets it.
            logger.warning("Health check %s failed: %s", self.name, e,
                           exc_info=True)
            box["answer"] = _failing("%s check failed (%s)" % (
                self.name, type(e).__name__))

    def answer(self, deadline: float) -> dict:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return _failing("%s did not answer within %.0f s" % (
                self._box["step"]["now"], time.monotonic() - self._started))
        return self._box["answer"]


class Report(NamedTuple):
    status: str
    checks: Dict[str, dict]
    #: the push queue as read for this report (None when unreadable)
    queue: Optional[metrics.QueueState]


class Checker:
    """The health of one application, computed at most once a second."""

    def __init__(self, app) -> None:
        self._app = weakref.ref(app)
        self._probes = {name: _Probe(name) for name in CHECKS}
        self._lock = threading.Lock()
        self._last: Optional[Report] = None
        self._last_time = 0.0

    def report(self) -> Report:
        with self._lock:
            if self._last is None or \
                    time.monotonic() - self._last_time >= REUSE_SECONDS:
                self._last = self._check()
                self._last_time = time.monotonic()
            return self._last

    def _check(self) -> Report:
        app = self._app()
        deadline = time.monotonic() + CHECK_SECONDS
        for name, check in CHECKS.items():
            self._probes[name].begin(app, check)
        checks = {name: dict(probe.answer(deadline))
                  for name, probe in self._probes.items()}
        queue = checks["queue"].pop("_state", None)
        status = max((c["status"] for c in checks.values()),
                     key=_ORDER.index)
        return Report(status, checks, queue)


_checkers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_checkers_lock = threading.Lock()


def checker_of(app) -> Checker:
    with _checkers_lock:
        checker = _checkers.get(app)
        if checker is None:
            checker = _checkers[app] = Checker(app)
        return checker
