"""Third-party plugins with bugs, loaded by dotted path
(``type = broken_providers:ReturnsNone``): each fails in its own way, and
the gateway must fail only its addresses, never the answer.  Plus two
that echo the asker, to show per-asker cache keys, and one that reads a
throttling body and raises RateLimited."""

import datetime
import json
import time
from collections.abc import Mapping

from gateway.provider import (BUSY, LookupResult, Period, Provider as Base,
                              ProviderError, RateLimited, Reason)

UTC = datetime.timezone.utc


class _NoUrl(Base):
    requires_url = False


class Raises(_NoUrl):
    def lookup(self, addresses, window, context):
        raise KeyError("internal-detail-of-the-plugin")


class RaisesSystemExit(_NoUrl):
    def lookup(self, addresses, window, context):
        raise SystemExit(3)


class ReturnsNone(_NoUrl):
    def lookup(self, addresses, window, context):
        return None


class ReturnsList(_NoUrl):
    def lookup(self, addresses, window, context):
        return [LookupResult.busy([], window) for _ in addresses]


class ReturnsStrings(_NoUrl):
    def lookup(self, addresses, window, context):
        return {address: "free" for address in addresses}


class BadPeriods(_NoUrl):
    def lookup(self, addresses, window, context):
        return {address: LookupResult(periods=("not a period",))
                for address in addresses}


class NaivePeriods(_NoUrl):
    def lookup(self, addresses, window, context):
        start = window.start.replace(tzinfo=None)
        return {address: LookupResult(periods=(Period(
            start, start + datetime.timedelta(hours=1), BUSY),))
            for address in addresses}


class FreePeriods(_NoUrl):
    def lookup(self, addresses, window, context):
        return {address: LookupResult(periods=(Period(
            window.start, window.end, "FREE"),)) for address in addresses}


class BadFailure(_NoUrl):
    def lookup(self, addresses, window, context):
        return {address: LookupResult(failure="nope")
                for address in addresses}


class _Exploding(Mapping):
    def __getitem__(self, key):
        raise RuntimeError("boom")

    def __iter__(self):
        raise RuntimeError("boom")

    def __len__(self):
        return 1


class BadMapping(_NoUrl):
    def lookup(self, addresses, window, context):
        return _Exploding()


class Hangs(_NoUrl):
    """Pure Python that does not come back (no socket to shut down)."""

    def lookup(self, addresses, window, context):
        time.sleep(8)
        return {address: LookupResult.busy([], window)
                for address in addresses}


class AskerEcho(_NoUrl):
    """Passes the asker on (as delegated access would): its answer
    depends on who asks, so its cache keys include the asker."""

    per_asker = True

    def lookup(self, addresses, window, context):
        hour = 9 if context.requester == "alice" else 10
        start = window.start.replace(hour=hour, minute=0, second=0)
        return {address: LookupResult.busy([Period(
            start, start + datetime.timedelta(hours=1), BUSY)], window)
            for address in addresses}


class AskerEchoShared(AskerEcho):
    """The same, declared not per asker: one cached answer for all."""

    per_asker = False


class ReadsThrottlingBody(Base):
    """An API that answers 200 with an EWS-like ErrorServerBusy and
    BackOffMilliseconds in its body, which the plugin reports."""

    def lookup(self, addresses, window, context):
        response = self.http.request("GET", "busy", context)
        answer = json.loads(response.body)
        if "ErrorServerBusy" in answer:
            raise RateLimited(answer["ErrorServerBusy"][
                "BackOffMilliseconds"] / 1000.0)
        raise ProviderError(Reason.NO_DATA, "unexpected answer")
