"""What one lookup carries, and how a provider call fails.

Shared by gateway.transport.http (which raises these on HTTP trouble),
the provider plugins and the fan-out engine, which turns them into
per-address results.
"""

from typing import Optional

from gateway.model import Reason


#: What the asker is told when a provider call fails, after the provider's
#: name ("corp is unreachable"): never hosts, ports or exception names.
PUBLIC_REASONS = {
    Reason.UNKNOWN_USER: "does not know this user",
    Reason.NO_AUTHORITY: "refused access",
    Reason.UNAVAILABLE: "is unreachable",
    Reason.TIMED_OUT: "did not answer in time",
    Reason.RATE_LIMITED: "is throttling requests",
    Reason.NO_DATA: "gave no usable answer",
}


class ProviderError(Exception):
    """A whole call failed; every address in it gets ``reason``.

    ``detail`` is for the log and may name hosts, URLs and exceptions;
    ``public`` is what the asker reads after the provider's name ("did
    not answer within 5 s"), by default the reason's phrase.
    """

    def __init__(self, reason: Reason, detail: str = "",
                 public: str = "") -> None:
        super().__init__(detail or reason.value)
        self.reason = reason
        self.detail = detail or reason.value
        self.public = public or PUBLIC_REASONS[reason]


class RateLimited(ProviderError):
    """The foreign side said 429/503 with Retry-After beyond our deadline."""

    def __init__(self, retry_after: Optional[float], detail: str = "",
                 public: str = "", status: Optional[int] = None) -> None:
        super().__init__(Reason.RATE_LIMITED, detail or (
            "rate limited, retry after %s s" % retry_after), public or (
            "is throttling requests" if retry_after is None else
            "is throttling requests (retry after %.0f s)" % retry_after))
        self.retry_after = retry_after
        #: the HTTP status that asked for the pause (429, 503); None for a
        #: pause read from a body or remembered from an earlier answer
        self.status = status


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
