"""The one access policy of the ``/.freebusy/``, Graph-path and EWS faces.

design.md, "Who may see whose free/busy": authenticated callers look up
local and foreign addresses as ``[gateway] freebusy_access`` says, and an
opted-out user answers them "no authority"; anonymous callers get 401
unless ``[gateway] anonymous_freebusy = yes``, and then see local users'
busy periods only: an unknown, opted-out, unreadable or foreign address
looks exactly like a free one, so nothing can be harvested, and no
foreign system is ever asked on their behalf.  Every caller is held to
``[gateway] requests_per_minute``.

A face calls :func:`refusal` first (None, or the answer to send), then
:func:`lookup`.
"""

import threading
import time
from collections import OrderedDict
from typing import Dict, NamedTuple, Optional, Sequence

from radicale import httputils

from gateway import metrics
from gateway.addresses import bare_address
from gateway.model import LookupResult, Reason, Window
from gateway.transport.http import HOPS_HEADER

#: Callers whose request counts are kept at once; the least recently seen
#: go first, so the table is bounded whatever the number of callers.
MAX_CALLERS = 10000
#: Failures an anonymous caller is shown as free time.
HIDDEN_FROM_ANONYMOUS = (Reason.UNKNOWN_USER, Reason.NO_AUTHORITY)


class Caller(NamedTuple):
    """Who is asking: a local user, or anonymous ("") from an address."""

    user: str
    groups: frozenset
    remote: str

    @property
    def anonymous(self) -> bool:
        return not self.user

    @classmethod
    def of(cls, request) -> "Caller":
        """The caller of a face's ``gateway.faces.Request``."""
        return cls(request.user, frozenset(request.user_groups or ()),
                   request.environ.get("REMOTE_ADDR", ""))


class RequestCounter:
    """Per-caller token buckets: ``per_minute`` requests a minute, with
    bursts of the same size; bounded to :data:`MAX_CALLERS` callers."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: "OrderedDict[str, list]" = OrderedDict()
        self._lock = threading.Lock()

    def wait_needed(self, key: str) -> float:
        """0 when the caller may go on (one request counted), else the
        seconds until they may."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.pop(key, None) or [float(self.per_minute),
                                                      now]
            tokens = min(float(self.per_minute),
                         bucket[0] + (now - bucket[1]) * rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / rate
            self._buckets[key] = [tokens, now]
            while len(self._buckets) > MAX_CALLERS:
                self._buckets.popitem(last=False)
        return wait


def _text(status: int, text: str, headers=()):
    return status, dict([("Content-Type", "text/plain; charset=utf-8"),
                         *headers]), text.encode("utf-8"), None


def refusal(app, request) -> Optional[tuple]:
    """The answer that ends the request before any lookup, or None.

    401 (with Radicale's WWW-Authenticate) for failed credentials, and for
    anonymous callers unless anonymous free/busy is on; 429 with
    Retry-After past the caller's request limit.
    """
    caller = Caller.of(request)
    if caller.anonymous and (
            request.environ.get("HTTP_AUTHORIZATION") or
            not app.gateway_options["anonymous_freebusy"]):
        return httputils.NOT_ALLOWED
    wait = app.request_counter.wait_needed(caller.user or "@" + caller.remote)
    if wait > 0:
        return _text(429, "too many requests; try again in %d s" % (
            int(wait) + 1), [("Retry-After", str(int(wait) + 1))])
    return None


def lookup(app, caller: Caller, addresses: Sequence[str], window: Window,
           hops: int = 0, face: str = "other") -> Dict[str, LookupResult]:
    """A result for every address (as given) under the policy, counted
    for ``face`` (gateway.metrics)."""
    results = _lookup(app, caller, addresses, window, hops)
    metrics.observe_lookup(face, results)
    return results


def _lookup(app, caller: Caller, addresses: Sequence[str], window: Window,
            hops: int) -> Dict[str, LookupResult]:
    if not caller.anonymous:
        return app.fanout.lookup(list(addresses), window,
                                 requester=caller.user,
                                 requester_groups=set(caller.groups),
                                 hops=hops)
    results = {}
    for address in addresses:
        kind, target = app.fanout.route(address)
        result = LookupResult.failed(Reason.UNKNOWN_USER)
        if kind == "local":
            # Anonymous callers see local busy time whatever the rights
            # file gives the anonymous user (they are here because the
            # admin turned anonymous free/busy on); opt-outs still hold.
            result = app.local.lookup_user(
                target, window, "", set(), check_rights=False,
                deadline=time.monotonic() + app.gateway_options["timeout"])
        if not result.ok and result.failure in HIDDEN_FROM_ANONYMOUS:
            result = LookupResult.busy((), window)
        results[address] = result
    return results


def incoming_hops(environ) -> int:
    """Gateways a federated request has passed (0 from a client), so a
    peer that asks us about its own users cannot loop."""
    raw = environ.get("HTTP_" + HOPS_HEADER.upper().replace("-", "_"), "0")
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def is_local(app, address: str) -> bool:
    """Is ``address`` in one of the gateway's own domains?"""
    bare = bare_address(address)
    return bare is not None and \
        bare.rpartition("@")[2] in app.gateway_options["domains"]
