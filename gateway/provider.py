"""The plugin API: everything a provider plugin imports from the gateway.

A plugin (a module in ``plugins/`` or a third-party package) subclasses
``Provider`` and translates one foreign wire format; routing, splitting,
threads, deadlines, retries, caching, authentication and host pinning are
the gateway's (``gateway.engine``, ``gateway.transport``).  Importing from
here, not from the modules behind it, keeps plugins working when those
move.
"""

from gateway.config import Option
from gateway.model import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,
                           LookupResult, Period, Reason, Span, Window, gaps)
from gateway.transport.lookup import (LookupContext, ProviderError,
                                      RateLimited)
from gateway.transport.provider import Provider, failure_in_words, no_data

__all__ = ["BUSY", "BUSY_TENTATIVE", "BUSY_UNAVAILABLE", "LookupContext",
           "LookupResult", "Option", "Period", "Provider", "ProviderError",
           "RateLimited", "Reason", "Span", "Window", "failure_in_words",
           "gaps", "no_data"]
