"""What one lookup carries, and how a provider call fails.

Shared by gateway.http (which raises these on HTTP trouble), the provider
plugins and the fan-out engine, which turns them into per-address results.
"""

from typing import Optional

from gateway.model import Reason


class ProviderError(Exception):
    """A whole call failed; every address in it gets ``reason``."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(detail or reason.value)
        self.reason = reason
        self.detail = detail or reason.value


class RateLimited(ProviderError):
    """The foreign side said 429/503 with Retry-After beyond our deadline."""

    def __init__(self, retry_after: Optional[float], detail: str = "") -> None:
        super().__init__(Reason.RATE_LIMITED, detail or (
            "rate limited, retry after %s s" % retry_after))
        self.retry_after = retry_after


class LookupContext:
    """What one lookup carries down to the HTTP calls of a provider."""

    def __init__(self, deadline: float, hops: int = 0,
                 requester: str = "") -> None:
        #: time.monotonic() value after which nothing may still be waited on
        self.deadline = deadline
        #: how many gateways this request has already passed
        self.hops = hops
        #: the calendar user asking (for plugins that pass it on)
        self.requester = requester
