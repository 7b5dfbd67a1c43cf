"""Prometheus metrics: what an operator watches of a running gateway.

Counters and the latency histogram are updated where things happen, by
one call each: the faces count their lookups (``observe_lookup``,
``counted_answer``), the fan-out its provider calls
(``timed_provider_call``) and its cache look-ups (``cache_lookup``).
What describes shared state (the push queue, the providers' throttle
pauses) and this process's local engine cache is read when Prometheus
scrapes (``exposition``), so it is never stale and costs nothing between
scrapes.

No label carries user data: labels are face names, result and outcome
words, cache kinds and provider names from the ini file.

Several worker processes: set the environment variable
``PROMETHEUS_MULTIPROC_DIR`` to an empty folder private to the service
before it starts (docs/deployment.md); each process then writes its
counters there and a scrape, whichever worker answers it, adds them up.
Without it a scrape shows the counters of the worker that answered.
"""

import functools
import os
import time
from typing import Mapping, Optional, Tuple

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY,
                               CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from gateway.model import LookupResult, Reason

#: Where worker processes keep their counters (prometheus-client's
#: multiprocess mode); unset: one process, counters in memory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    # prometheus-client writes there as the metrics below are made.
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

#: The ``face`` label: every way of asking.
FACES = ("report", "outbox", "readurl", "getschedule", "ews",
         "findmeetingtimes", "view")

#: The ``result`` label of a lookup (per address) and the ``outcome`` of a
#: provider call: "ok", or the failure as one word.
RESULT_WORDS = {
    Reason.UNKNOWN_USER: "unknown",
    Reason.NO_AUTHORITY: "no_authority",
    Reason.TIMED_OUT: "timed_out",
    Reason.RATE_LIMITED: "rate_limited",
    Reason.NO_DATA: "no_data",
    Reason.UNAVAILABLE: "unavailable",
}

#: What a refused REPORT's status says about the one user it asked for;
#: any other non-2xx status (a malformed request) looked nobody up.
_STATUS_WORDS = {403: "no_authority", 404: "unknown"}

LOOKUPS = Counter(
    "fbgateway_lookups", "Addresses looked up, by the face asked and the "
    "result for the address.", ["face", "result"])
PROVIDER_CALLS = Counter(
    "fbgateway_provider_calls", "Calls to foreign systems, by provider "
    "section and outcome; not_started: queued behind the provider's "
    "max_parallel until the deadline had passed.", ["provider", "outcome"])
PROVIDER_SECONDS = Histogram(
    "fbgateway_provider_call_seconds", "Time one call to a foreign system "
    "took, whatever its outcome.", ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
CACHE_LOOKUPS = Counter(
    "fbgateway_cache_lookups", "Foreign answers looked for before asking: "
    "cache=answer (provider answers kept for cache_ttl), cache=pushed "
    "(what peers pushed); result hit or miss.", ["cache", "result"])
LOCAL_CACHE_COST = Gauge(
    "fbgateway_local_cache_cost", "What the local engine keeps of parsed "
    "calendar objects, in units of about 400 bytes ([gateway] "
    "local_cache_size is the limit), as of this worker's last scrape.",
    multiprocess_mode="liveall")


def result_word(result: LookupResult) -> str:
    if result.ok:
        return "ok"
    return RESULT_WORDS.get(result.failure, "unavailable")


def observe_lookup(face: str, results: Mapping[str, LookupResult]) -> None:
    """Count one face's answer: one per address, by its result."""
    for result in results.values():
        LOOKUPS.labels(face, result_word(result)).inc()


def counted_answer(face: str, answer: Tuple) -> Tuple:
    """Count the answer of a face that asks for one user's busy time and
    gives no per-address results (the REPORT), by its status; return it."""
    status = int(answer[0])
    word = "ok" if 200 <= status < 300 else _STATUS_WORDS.get(status)
    if word is not None:
        LOOKUPS.labels(face, word).inc()
    return answer


def timed_provider_call(call):
    """Wrap the fan-out's one-call function ``(cls, provider, chunk, part,
    context) -> {address: LookupResult}``: count the call by outcome (the
    first failure among its addresses, else ok) and time it."""
    @functools.wraps(call)
    def timed(cls, provider, chunk, part, context):
        if time.monotonic() >= context.deadline:
            # The call gives up without asking: not a foreign latency.
            PROVIDER_CALLS.labels(provider.name, "not_started").inc()
            return call(cls, provider, chunk, part, context)
        started = time.monotonic()
        results = call(cls, provider, chunk, part, context)
        PROVIDER_SECONDS.labels(provider.name).observe(
            time.monotonic() - started)
        failed = next((r for r in results.values() if not r.ok), None)
        PROVIDER_CALLS.labels(provider.name, "ok" if failed is None
                              else result_word(failed)).inc()
        return results
    return timed


def cache_lookup(cache: str, hit: bool) -> None:
    """One look into the answer cache or the pushed store."""
    CACHE_LOOKUPS.labels(cache, "hit" if hit else "miss").inc()


def process_ended(pid: int) -> None:
    """A worker process is gone: its live gauges leave the scrape (for a
    supervisor that reaps workers; counters it wrote stay counted)."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        multiprocess.mark_process_dead(pid, folder)


# -- the scrape ---------------------------------------------------------------


class QueueState:
    """The push queue as a scrape sees it: items waiting, and how long
    the oldest has waited (None: the queue is empty or not used)."""

    def __init__(self, used: bool, depth: int = 0,
                 oldest_age: Optional[float] = None) -> None:
        self.used = used
        self.depth = depth
        self.oldest_age = oldest_age


def queue_state(queue) -> QueueState:
    """Depth and oldest age of a gateway.state.PushQueue; its
    ``summary()`` (depth, oldest created) when it has one, which costs
    no payload reads, else its ``items()``."""
    summary = getattr(queue, "summary", None)
    if callable(summary):
        depth, oldest = summary()
    else:
        items = queue.items()
        depth = len(items)
        oldest = min((i.created for i in items), default=None)
    age = None if oldest is None else max(0.0, time.time() - oldest)
    return QueueState(True, depth, age)


class _StateCollector:
    """Gauges of shared state, computed for one scrape."""

    def __init__(self, providers, queue: Optional[QueueState]) -> None:
        self.providers = providers
        self.queue = queue

    def collect(self):
        paused = GaugeMetricFamily(
            "fbgateway_provider_paused_seconds", "Seconds until a "
            "provider that asked for a pause (429/503 Retry-After, a "
            "throttling answer) is called again; 0 when it is not "
            "paused.", labels=["provider"])
        for provider in self.providers:
            paused.add_metric([provider.name], paused_for(provider))
        yield paused
        if self.queue is not None and self.queue.used:
            yield GaugeMetricFamily(
                "fbgateway_push_queue_depth", "Pushes waiting to go out "
                "(due, held by a worker, or waiting for a retry).",
                value=self.queue.depth)
            yield GaugeMetricFamily(
                "fbgateway_push_queue_oldest_age_seconds", "How long the "
                "oldest queued push has waited; 0 when none waits.",
                value=self.queue.oldest_age or 0.0)


def paused_for(provider) -> float:
    """Seconds the provider's throttle memory still holds it back."""
    http = getattr(provider, "http", None)
    paused = getattr(http, "paused_for", None)
    return float(paused()) if callable(paused) else 0.0


def exposition(providers, local_cache_cost: int,
               queue: Optional[QueueState]) -> Tuple[bytes, str]:
    """The text Prometheus scrapes, and its content type."""
    LOCAL_CACHE_COST.set(local_cache_cost)
    scraped = CollectorRegistry()
    scraped.register(_StateCollector(providers, queue))
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted, folder)
        text = generate_latest(counted)
    else:
        # This process's counters, and its CPU, memory and GC figures.
        text = generate_latest(REGISTRY)
    return text + generate_latest(scraped), CONTENT_TYPE_LATEST
