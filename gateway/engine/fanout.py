"""The fan-out engine: one free/busy question, many systems, one deadline.

For a list of calendar user addresses it
- routes each by its domain: ``[gateway] domains`` are local Radicale
  users, each ``[provider:NAME] domains`` belongs to that provider, anything
  else (or anything that is not ``mailto:``) is an unknown calendar user;
- answers from the cache what it can (per provider ``cache_ttl``; a cached
  wider window serves a narrower one; gateway.state.AnswerCache, bounded);
- splits each provider's share by its declared limits (addresses per call,
  longest window), runs the calls in parallel on that provider's own pool
  (``max_parallel`` threads), and stitches the pieces;
- makes one foreign call for the same address and window asked at the
  same moment (single flight, across requests; across gateway instances
  through the shared cache's claims, gateway.state.AnswerCache.claim);
- runs the local lookups on their own bounded pool under the same
  deadline;
- stops waiting at the overall deadline: what has not come back by then
  (running, or still queued behind the provider's limit) is "timed out"
  for its addresses, never free;
- keeps errors per address: one failing provider, call or plugin bug
  (raising, returning None or anything but a mapping of LookupResults,
  periods that are not periods) touches only the addresses in it.
"""

import concurrent.futures
import datetime
import logging
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from gateway import metrics
from gateway.state import (AnswerCache, MemoryAnswerCache,
                           MemoryPushedStore, PushedStore)
from gateway.transport.lookup import (PUBLIC_REASONS, LookupContext,
                                      ProviderError, RateLimited)
from gateway.addresses import bare_address
from gateway.model import (FBTYPES, UTC, LookupResult,
                           Period, Reason, Window, normalize)

logger = logging.getLogger(__name__)

#: (owner user name, window, requesting user, requester's groups) -> result
LocalLookup = Callable[[str, Window, str, set], LookupResult]

#: Calls of one provider in flight at once, unless its ``max_parallel``
#: says otherwise.
DEFAULT_MAX_PARALLEL = 8
#: A claim on a shared answer lasts this long unless its holder renews
#: it (every third of it, while its calls run): an instance killed in the
#: middle of a fetch holds the others up for this long, not for its
#: whole deadline.
CLAIM_LEASE = 3.0


def cache_key(provider, address: str, requester: str) -> str:
    """The answer cache's key: provider, address, and the asker where the
    provider passes the asker's identity on (``per_asker``), because then
    two askers may see different answers."""
    asker = requester if getattr(provider, "per_asker", False) else ""
    return "\x1f".join((provider.name, asker, address))


def pushed_key(provider, address: str) -> str:
    """Where a peer's push for ``address`` is kept."""
    return "%s\n%s" % (provider.name, address)


def _failed(chunk, reason: Reason, text: str) -> Dict[str, LookupResult]:
    return {a: LookupResult.failed(reason, text) for a in chunk}


def _valid_period(p) -> bool:
    if not (isinstance(p, tuple) and len(p) == 3):
        return False
    start, end, fbtype = p
    return (isinstance(start, datetime.datetime) and
            isinstance(end, datetime.datetime) and
            start.utcoffset() is not None and end.utcoffset() is not None
            and isinstance(fbtype, str) and fbtype in FBTYPES)


def _valid_span(span) -> bool:
    return (isinstance(span, tuple) and len(span) == 2 and
            all(isinstance(t, datetime.datetime) and
                t.utcoffset() is not None for t in span))


class FanOut:
    """Route, split, run in parallel, stitch; see the module doc."""

    def __init__(self, local_domains: Sequence[str], local_lookup: LocalLookup,
                 providers: Sequence, default_cache_ttl: float,
                 timeout: float, max_hops: int, max_workers: int = 32,
                 local_username: Callable[[str], str] = str, *,
                 cache: Optional[AnswerCache] = None,
                 pushed: Optional[PushedStore] = None,
                 max_parallel: int = DEFAULT_MAX_PARALLEL) -> None:
        self.local_domains = set(local_domains)
        #: Local part of an address -> Radicale user name (the admin's
        #: [auth] lc_username / uc_username apply, as at login).
        self.local_username = local_username
        self.local_lookup = local_lookup
        self.providers = list(providers)
        self._by_domain = {d: p for p in self.providers
                           for d in p.options["domains"]}
        self.default_cache_ttl = default_cache_ttl
        self.timeout = timeout
        self.max_hops = max_hops
        self.cache = cache if cache is not None else MemoryAnswerCache()
        #: What peers pushed to us: answers before the cache and the peer.
        self.pushed = pushed if pushed is not None else MemoryPushedStore()
        #: One pool per provider: a hanging system holds only its own
        #: threads, never those the other providers' calls need.
        self._pools = {}
        for provider in self.providers:
            limit = provider.options.get("max_parallel") or max_parallel
            self._pools[provider.name] = concurrent.futures.ThreadPoolExecutor(
                max_workers=limit,
                thread_name_prefix="fanout-%s" % provider.name)
        #: Local lookups, bounded by the same deadline.
        self._local_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="fanout-local")
        #: (provider, asker, address, window) -> the call answering it now
        self._in_flight: Dict[tuple, concurrent.futures.Future] = {}
        self._in_flight_lock = threading.RLock()

    def route(self, address: str):
        """("local", user) | ("provider", provider) | (None, reason)."""
        bare = bare_address(address)
        if bare is None:
            return None, "only mailto: addresses can be looked up"
        local, _, domain = bare.rpartition("@")
        if domain in self.local_domains:
            return "local", self.local_username(local)
        provider = self._by_domain.get(domain)
        if provider is not None:
            return "provider", provider
        return None, "no local user or provider for domain %s" % domain

    def lookup(self, addresses: Sequence[str], window: Window,
               requester: str = "", requester_groups: Optional[set] = None,
               hops: int = 0) -> Dict[str, LookupResult]:
        """A result for every address in ``addresses`` (as given)."""
        deadline = time.monotonic() + self.timeout
        context = LookupContext(deadline, hops, requester)
        results: Dict[str, LookupResult] = {}
        local: List[Tuple[str, str]] = []
        foreign: Dict[str, List[Tuple[str, str]]] = {}
        providers = {}
        #: addresses another instance is fetching: (address, bare, provider)
        waiting: List[Tuple[str, str, object]] = []
        for address in addresses:
            kind, target = self.route(address)
            if kind is None:
                results[address] = LookupResult.failed(
                    Reason.UNKNOWN_USER, target)
            elif kind == "local":
                local.append((address, target))
            else:
                bare = bare_address(address).lower()
                if hops >= self.max_hops:
                    results[address] = LookupResult.failed(
                        Reason.NO_DATA, "%s was not asked: the request has "
                        "already passed %d gateways" % (target.name, hops))
                    continue
                pushed = self.pushed.get(pushed_key(target, bare),
                                         window.start, window.end)
                metrics.cache_lookup("pushed", pushed is not None)
                if pushed is not None:
                    results[address] = LookupResult.busy(pushed, window)
                    continue
                cached = self.cache.get(cache_key(target, bare, requester),
                                        window.start, window.end)
                metrics.cache_lookup("answer", cached is not None)
                if cached is not None:
                    results[address] = _from_cache(cached, window)
                    continue
                if not self._claimed(target, bare, requester, window,
                                     deadline):
                    waiting.append((address, bare, target))
                    continue
                foreign.setdefault(target.name, []).append((address, bare))
                providers[target.name] = target
        jobs = self._submit(providers, foreign, window, context)
        local_jobs = [(address, self._local_pool.submit(
            self._local_call, address, user, window, requester,
            set(requester_groups or ()))) for address, user in local]
        if waiting:
            jobs += self._await_others(waiting, window, context, results,
                                       providers, foreign)
        futures = [job[3] for job in jobs] + [f for _, f in local_jobs]
        while futures:
            left = deadline - time.monotonic()
            futures = concurrent.futures.wait(futures, timeout=max(
                0.0, min(left, CLAIM_LEASE / 3)))[1]
            if left <= CLAIM_LEASE / 3:
                break
            self._renew(providers, foreign, window, requester, deadline)
        for address, future in local_jobs:
            results[address] = self._local_result(address, future)
        results.update(self._collect(providers, foreign, jobs, window,
                                     requester))
        return {a: results[a] for a in addresses}

    # -- single flight across instances ------------------------------------

    def _cache_ttl(self, provider) -> float:
        ttl = provider.options.get("cache_ttl")
        return self.default_cache_ttl if ttl is None else ttl

    def _claimed(self, provider, bare, requester, window, deadline) -> bool:
        """May this instance ask ``provider`` now, or is another instance
        sharing the cache asking it already?  Without caching there is
        nothing to share, so every instance asks."""
        if self._cache_ttl(provider) <= 0:
            return True
        return self.cache.claim(cache_key(provider, bare, requester),
                                window.start, window.end,
                                max(0.001, min(CLAIM_LEASE,
                                               deadline - time.monotonic())))

    def _renew(self, providers, foreign, window: Window, requester: str,
               deadline: float) -> None:
        """Renew this instance's claims on what it is fetching (claiming
        what one holds extends it)."""
        for name, entries in foreign.items():
            for _, bare in entries:
                self._claimed(providers[name], bare, requester, window,
                              deadline)

    def _unclaim(self, provider, bare, requester, window) -> None:
        if self._cache_ttl(provider) > 0:
            self.cache.unclaim(cache_key(provider, bare, requester),
                               window.start, window.end)

    def _await_others(self, waiting, window: Window, context: LookupContext,
                      results, providers, foreign):
        """Wait for answers other instances are fetching: poll the shared
        cache until each lands, or ask the provider here once the other
        instance gave up (its claim released without an answer, or
        expired).  Addresses asked here join ``foreign`` and their calls
        are returned as jobs; what has neither by the deadline is timed
        out, never free."""
        jobs = []
        pause = 0.01
        renewed = time.monotonic()
        while waiting:
            if time.monotonic() - renewed >= CLAIM_LEASE / 3:
                self._renew(providers, foreign, window, context.requester,
                            context.deadline)
                renewed = time.monotonic()
            still = []
            for address, bare, target in waiting:
                cached = self.cache.get(
                    cache_key(target, bare, context.requester),
                    window.start, window.end)
                if cached is not None:
                    results[address] = _from_cache(cached, window)
                elif self._claimed(target, bare, context.requester, window,
                                   context.deadline):
                    providers[target.name] = target
                    foreign.setdefault(target.name, []).append(
                        (address, bare))
                    jobs += self._submit({target.name: target}, {
                        target.name: [(address, bare)]}, window, context)
                else:
                    still.append((address, bare, target))
            waiting = still
            left = context.deadline - time.monotonic()
            if not waiting or left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(0.2, pause * 2)
        for address, _, target in waiting:
            logger.warning("Provider %s: another instance's answer for %s "
                           "did not come within %.3g s", target.name,
                           address, self.timeout)
            results[address] = LookupResult.failed(
                Reason.TIMED_OUT, "%s did not answer within %.3g s" % (
                    target.name, self.timeout))
        return jobs

    # -- local lookups ----------------------------------------------------

    def _local_call(self, address, user, window, requester, groups
                    ) -> LookupResult:
        try:
            result = self.local_lookup(user, window, requester, groups)
        except BaseException:
            logger.exception("Local lookup of %s failed", address)
            return LookupResult.failed(Reason.UNAVAILABLE,
                                       "local lookup failed")
        return result

    def _local_result(self, address, future) -> LookupResult:
        if future.done() and not future.cancelled():
            return future.result()
        future.cancel()     # still queued: it will not run at all
        logger.warning("Local lookup of %s did not finish within %.3g s",
                       address, self.timeout)
        return LookupResult.failed(
            Reason.TIMED_OUT, "the local lookup did not finish within "
            "%.3g s" % self.timeout)

    # -- foreign calls ----------------------------------------------------

    def _submit(self, providers, foreign, window: Window,
                context: LookupContext):
        """Start the calls (or join the ones already answering the same
        address and window): ``[(name, chunk, part, future)]``."""
        jobs = []
        for name, pairs in foreign.items():
            provider = providers[name]
            asker = context.requester if getattr(
                provider, "per_asker", False) else ""
            bares = sorted({bare for _, bare in pairs})
            size = provider.max_addresses or len(bares)
            longest = provider.max_window
            if longest and provider.slot:
                # Widening to whole slots may add up to one at each end.
                longest = max(provider.slot, longest - 2 * provider.slot)
            windows = window.split(longest) if longest else [window]
            if provider.slot:
                windows = [part.aligned(provider.slot) for part in windows]
            with self._in_flight_lock:
                for part in windows:
                    fresh = []
                    for bare in bares:
                        running = self._in_flight.get(
                            (name, asker, bare, part))
                        if running is not None:
                            jobs.append((name, (bare,), part, running))
                        else:
                            fresh.append(bare)
                    for i in range(0, len(fresh), size):
                        chunk = tuple(fresh[i:i + size])
                        future = self._pools[name].submit(
                            self._call, provider, chunk, part, context)
                        keys = [(name, asker, bare, part) for bare in chunk]
                        for key in keys:
                            self._in_flight[key] = future
                        future.add_done_callback(
                            lambda f, keys=keys: self._landed(f, keys))
                        jobs.append((name, chunk, part, future))
        return jobs

    def _landed(self, future, keys) -> None:
        with self._in_flight_lock:
            for key in keys:
                if self._in_flight.get(key) is future:
                    del self._in_flight[key]

    @classmethod
    @metrics.timed_provider_call
    def _call(cls, provider, chunk, part, context) -> Dict[str, LookupResult]:
        """One provider call; what the asker reads of a failure names the
        provider and the reason, the details (hosts, URLs, exceptions) go
        to the log once, with the provider's name."""
        name = provider.name
        if time.monotonic() >= context.deadline:
            # Queued behind the provider's limit until it was too late.
            return _failed(chunk, Reason.TIMED_OUT, "%s could not be asked "
                           "in time" % name)
        try:
            answer = provider.lookup(list(chunk), part, context)
        except ProviderError as e:
            if isinstance(e, RateLimited):
                _remember_pause(provider, e.retry_after)
            logger.warning("Provider %s failed for %d address(es) over %s: "
                           "%s", name, len(chunk), _span(part), e.detail)
            public = e.public if isinstance(e.public, str) else \
                PUBLIC_REASONS.get(e.reason, "failed")
            reason = e.reason if isinstance(e.reason, Reason) else \
                Reason.UNAVAILABLE
            return _failed(chunk, reason, "%s %s" % (name, public))
        except BaseException:  # a plugin bug must stay with its addresses
            logger.exception("Provider %s raised for %d address(es)", name,
                             len(chunk))
            return _failed(chunk, Reason.UNAVAILABLE,
                           "%s failed with an internal error" % name)
        return cls._checked(name, chunk, part, answer)

    @staticmethod
    def _checked(name, chunk, part, answer) -> Dict[str, LookupResult]:
        """A plugin's answer, each result checked: anything the gateway
        cannot read is no data for that address, never free."""
        if not isinstance(answer, Mapping):
            logger.error("Provider %s returned %s instead of a mapping of "
                         "results", name, type(answer).__name__)
            answer = {}
        results = {}
        for address in chunk:
            try:
                result = answer.get(address)
            except Exception:
                logger.exception("Provider %s: its answer cannot be read "
                                 "for %s", name, address)
                result = None
            results[address] = _checked_result(name, address, result, part)
        return results

    def _collect(self, providers, foreign, jobs, window: Window,
                 requester: str) -> Dict[str, LookupResult]:
        pieces: Dict[Tuple[str, str], List[Tuple[Window, LookupResult]]] = {}
        for name, chunk, part, future in jobs:
            answer = None
            if future.done() and not future.cancelled():
                try:
                    answer = future.result()
                except BaseException:
                    logger.exception("Provider %s call failed", name)
                    answer = _failed(chunk, Reason.UNAVAILABLE, "%s failed "
                                     "with an internal error" % name)
            if answer is None:
                started = not future.cancel()
                logger.warning("Provider %s did not answer within %.3g s "
                               "for %d address(es) over %s%s", name,
                               self.timeout, len(chunk), _span(part),
                               "" if started else
                               " (never started: too many calls queued)")
                answer = _failed(chunk, Reason.TIMED_OUT,
                                 "%s did not answer within %.3g s" % (
                                     name, self.timeout))
            for bare in chunk:
                pieces.setdefault((name, bare), []).append(
                    (part, answer[bare]))
        out = {}
        for name, pairs in foreign.items():
            provider = providers[name]
            ttl = self._cache_ttl(provider)
            for address, bare in pairs:
                result = _stitched(pieces[(name, bare)], window)
                if not result.ok:
                    self._unclaim(provider, bare, requester, window)
                    out[address] = result
                    continue
                self.cache.put(cache_key(provider, bare, requester),
                               window.start, window.end,
                               (result.periods, result.nodata,
                                result.working), ttl,
                               cost=len(result.periods) +
                               len(result.nodata) +
                               len(result.working or ()) + 1)
                self._unclaim(provider, bare, requester, window)
                out[address] = result
        return out

    def close(self) -> None:
        for pool in list(self._pools.values()) + [self._local_pool]:
            pool.shutdown(wait=False, cancel_futures=True)


def _from_cache(cached, window: Window) -> LookupResult:
    """A cached (periods, nodata, working) over ``window``; entries an
    older version shared have no working hours."""
    periods, nodata = cached[0], cached[1]
    working = cached[2] if len(cached) > 2 else None
    return LookupResult.busy(periods, window, nodata, working)


def _stitched(parts: List[Tuple[Window, LookupResult]],
              window: Window) -> LookupResult:
    """One address's answer from the pieces its window was split into.

    Any failure but "no data" fails the address.  A piece with no data
    beside pieces with answers (a publishing horizon, a service that
    keeps less history) is BUSY-UNAVAILABLE over that piece, as the model
    asks; only when every piece has no data is the address "no data".
    """
    failure = next((r for _, r in parts
                    if not r.ok and r.failure is not Reason.NO_DATA), None)
    if failure is not None:
        return failure
    answered = [r for _, r in parts if r.ok]
    if not answered:
        return next(r for _, r in parts)
    periods = [p for r in answered for p in r.periods]
    nodata = [span for r in answered for span in r.nodata]
    nodata.extend((part.start, part.end) for part, r in parts if not r.ok)
    working = None if any(r.working is None for r in answered) else [
        span for r in answered for span in r.working]
    return LookupResult.busy(periods, window, nodata, working)


def _checked_result(name, address, result, part) -> LookupResult:
    if not isinstance(result, LookupResult):
        logger.warning("Provider %s gave no answer for %s%s", name, address,
                       "" if result is None else " (a %s)" %
                       type(result).__name__)
        return LookupResult.failed(
            Reason.NO_DATA, "%s gave no answer for this address" % name)
    if result.failure is not None:
        # A plugin's own text may hold anything; the asker gets the
        # reason's phrase, the log the text.
        reason = result.failure if isinstance(result.failure, Reason) \
            else Reason.NO_DATA
        logger.info("Provider %s: %s for %s: %s", name, reason.value,
                    address, str(result.detail)[:500])
        return LookupResult.failed(reason, "%s %s" % (
            name, PUBLIC_REASONS[reason]))
    periods = result.periods
    try:
        if not isinstance(periods, (tuple, list)) or not all(
                _valid_period(p) for p in periods):
            raise TypeError("periods that are not periods")
        nodata = getattr(result, "nodata", ())
        if not isinstance(nodata, (tuple, list)) or not all(
                _valid_span(s) for s in nodata):
            raise TypeError("no-data spans that are not spans")
        working = getattr(result, "working", None)
        if working is not None and (not isinstance(
                working, (tuple, list)) or not all(
                    _valid_span(s) for s in working)):
            logger.warning("Provider %s gave unreadable working hours for "
                           "%s; using the default", name, address)
            working = None
        return LookupResult.busy([Period(
            p[0].astimezone(UTC), p[1].astimezone(UTC), p[2])
            for p in periods], part, [
            (s.astimezone(UTC), e.astimezone(UTC)) for s, e in nodata],
            None if working is None else [
                (s.astimezone(UTC), e.astimezone(UTC)) for s, e in working])
    except Exception as e:
        logger.warning("Provider %s gave an unreadable answer for %s: %s",
                       name, address, e)
        return LookupResult.failed(
            Reason.NO_DATA, "%s gave an unreadable answer" % name)


def _remember_pause(provider, seconds) -> None:
    """A RateLimited a plugin raised (from a throttling body) goes into
    the provider's throttle memory, as a Retry-After would."""
    throttle = getattr(getattr(provider, "http", None), "throttle", None)
    if seconds is not None and callable(throttle):
        try:
            throttle(seconds)
        except Exception:
            logger.exception("Provider %s: pause of %r not remembered",
                             provider.name, seconds)


def _span(window: Window) -> str:
    return "%s/%s" % (window.start.isoformat(), window.end.isoformat())


def merged(results: Sequence[LookupResult], window: Window) -> List[Period]:
    """Union of several successful results, normalised."""
    return normalize([p for r in results if r.ok for p in r.periods], window)
