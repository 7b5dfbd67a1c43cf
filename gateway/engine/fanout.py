"""The fan-out engine: one free/busy question, many systems, one deadline.

For a list of calendar user addresses it
- routes each by its domain: ``[gateway] domains`` are local Radicale
  users, each ``[provider:NAME] domains`` belongs to that provider, anything
  else (or anything that is not ``mailto:``) is an unknown calendar user;
- answers from the cache what it can (per provider ``cache_ttl``; a cached
  wider window serves a narrower one);
- splits each provider's share by its declared limits (addresses per call,
  longest window), runs all calls in parallel, and stitches the pieces;
- stops waiting at the overall deadline: what has not come back by then is
  "timed out" for its addresses, never free;
- keeps errors per address: one failing provider or call touches only the
  addresses that were in it.
"""

import concurrent.futures
import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from gateway.transport.lookup import (PUBLIC_REASONS, LookupContext,
                                      ProviderError)
from gateway.model import LookupResult, Period, Reason, Window, normalize

logger = logging.getLogger(__name__)

#: (owner user name, window, requesting user, requester's groups) -> result
LocalLookup = Callable[[str, Window, str, set], LookupResult]


def bare_address(address: str) -> Optional[str]:
    """``mailto:Alice@Example.COM`` -> ``Alice@example.com``; None if not mail.

    The local part keeps its case (Radicale user names are case-sensitive),
    the domain is lower-cased.
    """
    value = address.strip()
    if value[:7].lower() != "mailto:":
        return None
    local, at, domain = value[7:].rpartition("@")
    if not at or not local or not domain or any(
            c in value for c in "/\\?#\r\n\t "):
        return None
    return "%s@%s" % (local, domain.lower())


class TtlCache:
    """Successful provider answers per (provider, address), for a while."""

    def __init__(self) -> None:
        self._entries: Dict[Tuple[str, str], List[Tuple[Window, Tuple[
            Period, ...], float]]] = {}
        self._lock = threading.Lock()

    def get(self, provider: str, address: str, window: Window
            ) -> Optional[LookupResult]:
        now = time.monotonic()
        with self._lock:
            entries = [e for e in self._entries.get((provider, address), [])
                       if e[2] > now]
            self._entries[(provider, address)] = entries
            for cached_window, periods, _ in entries:
                if (cached_window.start <= window.start and
                        cached_window.end >= window.end):
                    return LookupResult.busy(periods, window)
        return None

    def put(self, provider: str, address: str, window: Window,
            result: LookupResult, ttl: float) -> None:
        if ttl <= 0 or not result.ok:
            return
        with self._lock:
            entries = self._entries.setdefault((provider, address), [])
            entries.append((window, result.periods, time.monotonic() + ttl))
            del entries[:-8]  # a few windows per address is plenty


class FanOut:
    """Route, split, run in parallel, stitch; see the module doc."""

    def __init__(self, local_domains: Sequence[str], local_lookup: LocalLookup,
                 providers: Sequence, default_cache_ttl: float,
                 timeout: float, max_hops: int, max_workers: int = 32,
                 local_username: Callable[[str], str] = str) -> None:
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
        self.cache = TtlCache()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="fanout")

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
                cached = self.cache.get(target.name, bare, window)
                if cached is not None:
                    results[address] = cached
                    continue
                foreign.setdefault(target.name, []).append((address, bare))
                providers[target.name] = target
        jobs = self._submit(providers, foreign, window, context)
        for address, user in local:
            try:
                results[address] = self.local_lookup(
                    user, window, requester, requester_groups or set())
            except Exception:
                logger.exception("Local lookup of %s failed", address)
                results[address] = LookupResult.failed(Reason.UNAVAILABLE,
                                                       "local lookup failed")
        results.update(self._collect(providers, foreign, jobs, window,
                                     deadline))
        return {a: results[a] for a in addresses}

    def _submit(self, providers, foreign, window: Window,
                context: LookupContext):
        jobs = []
        for name, pairs in foreign.items():
            provider = providers[name]
            bares = sorted({bare for _, bare in pairs})
            size = provider.max_addresses or len(bares)
            longest = provider.max_window
            if longest and provider.slot:
                # Widening to whole slots may add up to one at each end.
                longest = max(provider.slot, longest - 2 * provider.slot)
            windows = window.split(longest) if longest else [window]
            if provider.slot:
                windows = [part.aligned(provider.slot) for part in windows]
            for i in range(0, len(bares), size):
                chunk = bares[i:i + size]
                for part in windows:
                    future = self._pool.submit(self._call, provider, chunk,
                                               part, context)
                    jobs.append((name, chunk, part, future))
        return jobs

    @staticmethod
    def _call(provider, chunk, part, context) -> Dict[str, LookupResult]:
        """One provider call; what the asker reads of a failure names the
        provider and the reason, the details (hosts, URLs, exceptions) go
        to the log once, with the provider's name."""
        name = provider.name
        try:
            answer = provider.lookup(chunk, part, context)
        except ProviderError as e:
            logger.warning("Provider %s failed for %d address(es) over %s: "
                           "%s", name, len(chunk), _span(part), e.detail)
            return {a: LookupResult.failed(e.reason, "%s %s" % (
                name, e.public)) for a in chunk}
        except Exception:  # a plugin bug must stay with its addresses
            logger.exception("Provider %s raised for %d address(es)", name,
                             len(chunk))
            return {a: LookupResult.failed(
                Reason.UNAVAILABLE, "%s failed with an internal error" %
                name) for a in chunk}
        if not isinstance(answer, dict):
            logger.error("Provider %s returned %s instead of a dict", name,
                         type(answer).__name__)
            answer = {}
        results = {}
        for address in chunk:
            result = answer.get(address)
            if not isinstance(result, LookupResult):
                logger.warning("Provider %s gave no answer for %s", name,
                               address)
                result = LookupResult.failed(
                    Reason.NO_DATA, "%s gave no answer for this address"
                    % name)
            elif not result.ok:
                # A plugin's own text may hold anything; the asker gets
                # the reason's phrase, the log the text.
                logger.info("Provider %s: %s for %s: %s", name,
                            result.failure.value, address, result.detail)
                result = LookupResult.failed(result.failure, "%s %s" % (
                    name, PUBLIC_REASONS[result.failure]))
            results[address] = result
        return results

    def _collect(self, providers, foreign, jobs, window: Window,
                 deadline: float) -> Dict[str, LookupResult]:
        futures = [job[3] for job in jobs]
        if futures:
            concurrent.futures.wait(futures, timeout=max(
                0.0, deadline - time.monotonic()))
        pieces: Dict[Tuple[str, str], List[LookupResult]] = {}
        for name, chunk, part, future in jobs:
            if future.done():
                answer = future.result()
            else:
                logger.warning("Provider %s did not answer within %.3g s "
                               "for %d address(es) over %s", name,
                               self.timeout, len(chunk), _span(part))
                answer = {a: LookupResult.failed(
                    Reason.TIMED_OUT, "%s did not answer within %.3g s" % (
                        name, self.timeout)) for a in chunk}
            for bare in chunk:
                pieces.setdefault((name, bare), []).append(answer[bare])
        out = {}
        for name, pairs in foreign.items():
            provider = providers[name]
            ttl = provider.options.get("cache_ttl")
            ttl = self.default_cache_ttl if ttl is None else ttl
            for address, bare in pairs:
                parts = pieces[(name, bare)]
                failure = next((p for p in parts if not p.ok), None)
                if failure is not None:
                    out[address] = failure
                    continue
                result = LookupResult.busy(
                    [p for part in parts for p in part.periods], window)
                self.cache.put(name, bare, window, result, ttl)
                out[address] = result
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _span(window: Window) -> str:
    return "%s/%s" % (window.start.isoformat(), window.end.isoformat())


def merged(results: Sequence[LookupResult], window: Window) -> List[Period]:
    """Union of several successful results, normalised."""
    return normalize([p for r in results if r.ok for p in r.periods], window)
