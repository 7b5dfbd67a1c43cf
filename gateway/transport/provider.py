"""The provider interface, and the loader that finds plugins by ``type``.

A provider answers free/busy for the addresses of one foreign system.  It
declares its limits and does one batched call; routing, splitting by the
limits, threads, deadlines, retries on 429 and caching are the fan-out
engine's (gateway.engine.fanout), and HTTP with host pinning and size
bounds is gateway.transport.http's, so a plugin holds only the translation
of one wire format.

``type`` is looked up, as Radicale does for its plugins: a built-in name
(a module in ``plugins/``), then a name registered by another package in
the entry-point group ``freebusy_gateway.providers``, then a dotted path
``package.module`` (class ``Provider``) or ``package.module:Class``.
"""

import datetime
import importlib
import pkgutil
import re
import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from gateway.config import ConfigError, Option, ProviderConfig
from gateway.transport.http import HttpClient
# Plugins import ProviderError and RateLimited from here.
from gateway.transport.lookup import (LookupContext, ProviderError,  # noqa: F401
                            RateLimited)
from gateway.model import LookupResult, Period, Reason, Window

logger = logging.getLogger(__name__)



def _builtin_types() -> Tuple[str, ...]:
    """The modules of the ``plugins`` package: the built-in types that
    exist in this version, and no others."""
    import plugins
    return tuple(sorted(m.name for m in pkgutil.iter_modules(plugins.__path__)
                        if not m.name.startswith("_")))


BUILTIN_TYPES = _builtin_types()
ENTRY_POINT_GROUP = "freebusy_gateway.providers"


class Provider:
    """Base class of every provider plugin.

    Subclasses set the limits, may add ini keys in ``OPTIONS`` (the same
    ``Option`` table as the gateway's own schema), and implement ``lookup``.
    """

    #: Most addresses one call may carry; 0 means no limit.
    max_addresses: int = 0
    #: Longest window one call may ask for; None means no limit.
    max_window: Optional[datetime.timedelta] = None
    #: The foreign system answers in slots of this length (free/busy
    #: merged into 15 or 30 minute intervals); windows sent to it are
    #: widened to whole slots and the answers clipped back.  None = exact.
    slot: Optional[datetime.timedelta] = None
    #: Plugin-specific ini keys, validated at start-up.
    OPTIONS: Mapping[str, Option] = {}
    #: The foreign system answers differently for different askers (it is
    #: asked as the asker, not as the configured account): cached answers
    #: are then kept per asker.
    per_asker: bool = False
    #: ``url`` must be set for this type.
    requires_url: bool = True
    #: The ``auth`` kinds (design.md "Credentials") this type takes; any
    #: other is refused at start-up.  ``client_cert`` and ``ca_file`` go
    #: with any of them.  The transport applies them (gateway.transport.auth).
    AUTH_KINDS: Sequence[str] = ("basic", "bearer", "oauth2")
    #: Default ``scope`` by auth kind (oauth2, google) where the type's
    #: API needs another than Graph's or Google Calendar's.
    AUTH_SCOPES: Mapping[str, str] = {}

    def __init__(self, name: str, options: Dict, extra: Dict,
                 http: HttpClient) -> None:
        self.name = name
        self.options = options
        self.extra = extra
        self.http = http
        # The section may change the type's limits (real tenants differ).
        if options.get("max_addresses"):
            self.max_addresses = options["max_addresses"]
        if options.get("max_window_days"):
            self.max_window = datetime.timedelta(
                days=options["max_window_days"])

    def lookup(self, addresses: Sequence[str], window: Window,
               context: LookupContext) -> Dict[str, LookupResult]:
        """Free/busy of ``addresses`` (bare, lower-case) over ``window``.

        Return a result for each address it could answer; a missing one is
        reported as no data.  Raise ProviderError when the whole call fails.
        """
        raise NotImplementedError

    def publish(self, address: str, periods: List[Period],
                window: Window, context: LookupContext,
                stamp: datetime.datetime) -> None:
        """Push local free/busy to the foreign side, where it wants that.

        ``periods`` is local user ``address``'s busy time over ``window``;
        ``stamp`` the time of the change it reflects (the DTSTAMP to send:
        a repeat carries the same one).  Return when the foreign side has
        taken it; raise ProviderError (or anything) when not: the push
        is retried later."""
        raise NotImplementedError("%s does not take pushed free/busy" %
                                  type(self).__name__)

    @property
    def can_publish(self) -> bool:
        """Does this provider push free/busy out (its type implements
        ``publish`` and, where the type needs one, its section configures
        where to)?  A type may override this to check its own keys."""
        return type(self).publish is not Provider.publish


def _resolve_type(type_name: str):
    if type_name in BUILTIN_TYPES:
        return getattr(importlib.import_module("plugins." + type_name),
                       "Provider")
    try:
        from importlib.metadata import entry_points
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name == type_name:
                return entry.load()
    except Exception as e:  # a broken third-party package must be named
        raise ImportError("entry point %r: %s" % (type_name, e)) from e
    module_name, _, class_name = type_name.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name or "Provider")


def load_provider(path: str, provider_config: ProviderConfig,
                  http_factory) -> Provider:
    """Instantiate one ``[provider:NAME]`` section; ConfigError if wrong."""
    section = "provider:%s" % provider_config.name
    type_name = provider_config.options["type"]
    try:
        cls = _resolve_type(type_name)
    except (ImportError, AttributeError) as e:
        raise ConfigError("%s: [%s] key 'type': cannot load %r: %s" % (
            path, section, type_name, e)) from None
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError("%s: [%s] key 'type': %r is not a Provider "
                          "subclass" % (path, section, type_name))
    extra = {}
    for key, raw in provider_config.extra.items():
        option = cls.OPTIONS.get(key)
        if option is None:
            known = sorted(set(cls.OPTIONS))
            raise ConfigError("%s: [%s] unknown key %r for type %r%s" % (
                path, section, key, type_name,
                " (its own keys: %s)" % ", ".join(known) if known else ""))
        try:
            extra[key] = option.parse(raw)
        except ValueError as e:
            raise ConfigError("%s: [%s] bad value for %r: %r: %s" % (
                path, section, key, raw, e)) from None
    for key, option in cls.OPTIONS.items():
        if key not in extra:
            if option.default is None:
                raise ConfigError("%s: [%s] missing required key %r (%s)" % (
                    path, section, key, option.help))
            extra[key] = option.parse(option.default) \
                if option.default != "" else None
    if cls.requires_url and not provider_config.options["url"]:
        raise ConfigError("%s: [%s] missing required key 'url' for type %r"
                          % (path, section, type_name))
    try:
        return cls(provider_config.name, provider_config.options, extra,
                   http_factory(provider_config, cls))
    except ValueError as e:
        raise ConfigError("%s: [%s] %s" % (path, section, e)) from None


#: Words foreign systems use in per-address error messages, for services
#: whose codes say less than their texts (Graph's freeBusyError, Nylas).
UNKNOWN_WORDS = re.compile(
    r"unable to resolve|not (be )?found|does not exist|no such (user|"
    r"mailbox|calendar)|invalid (user|e-?mail|address)|no mailbox|"
    r"not a valid", re.I)
DENIED_WORDS = re.compile(
    r"access (is )?denied|no free/?busy access|not (allowed|"
    r"authori[sz]ed|permitted)|permission|forbidden", re.I)
THROTTLE_WORDS = re.compile(r"rate.?limit|throttl|too many requests|quota",
                            re.I)


def failure_in_words(text: str, detail: str) -> LookupResult:
    """A per-address error message as a failed result: unknown user, no
    authority or rate limited where its words say so, else no data."""
    for words, reason in ((UNKNOWN_WORDS, Reason.UNKNOWN_USER),
                          (DENIED_WORDS, Reason.NO_AUTHORITY),
                          (THROTTLE_WORDS, Reason.RATE_LIMITED)):
        if words.search(text or ""):
            return LookupResult.failed(reason, detail)
    return LookupResult.failed(Reason.NO_DATA, detail)


def no_data(addresses, detail: str) -> Dict[str, LookupResult]:
    """The same failure for many addresses."""
    return {a: LookupResult.failed(Reason.NO_DATA, detail) for a in addresses}
