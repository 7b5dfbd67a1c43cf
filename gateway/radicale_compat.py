"""The two places where Radicale 3.9 itself must change for free/busy.

1. Radicale refuses to store a calendar object holding a VFREEBUSY or a
   VAVAILABILITY (PUT answers 400, ``AttributeError`` in
   ``filter.visit_time_ranges``), but RFC 4791 7.10 and RFC 7953 want both
   to count for free/busy.  The time range Radicale computes there only
   serves to prefilter calendar-query; for these components the gateway
   declares "any time", which never hides them from a query.
2. Radicale's ``server.serve`` builds its Application from its own module
   name; ``serve_application`` lends it the gateway's.

Both are version-checked so a Radicale upgrade fails loudly, not subtly.
"""

import importlib

import radicale
from radicale import item as radicale_item
from radicale.item import filter as radicale_filter

SUPPORTED = ("3.9.",)
_WHOLE_TIME_COMPONENTS = ("VFREEBUSY", "VAVAILABILITY")


def check_version() -> None:
    if not radicale.VERSION.startswith(SUPPORTED):
        raise RuntimeError("Freebusy Gateway needs Radicale %s, found %s" % (
            " or ".join(v + "x" for v in SUPPORTED), radicale.VERSION))


def allow_freebusy_components() -> None:
    """Let VFREEBUSY and VAVAILABILITY objects be stored (idempotent)."""
    original = radicale_item.find_time_range
    if getattr(original, "_gateway", False):
        return

    def find_time_range(vobject_item, tag):
        if tag in _WHOLE_TIME_COMPONENTS:
            return radicale_filter.TIMESTAMP_MIN, radicale_filter.TIMESTAMP_MAX
        return original(vobject_item, tag)

    find_time_range._gateway = True
    radicale_item.find_time_range = find_time_range


def serve_application(configuration, application_factory, shutdown_socket):
    """Run Radicale's own server with the gateway's Application."""
    from radicale import server
    server.Application = lambda _configuration: application_factory()
    server.serve(configuration, shutdown_socket)


_RADICALE_PLUGINS = (("auth", "Auth"), ("rights", "Rights"),
                     ("storage", "Storage"), ("web", "Web"))


def check_plugins(configuration) -> None:
    """Import the auth, rights, storage and web modules the file names.

    Radicale itself only finds a wrong ``type`` when its Application is
    built inside the running server; checking here lets start-up and
    ``check-config`` fail with one message, without creating anything.
    Raises ValueError naming section and key.
    """
    for section, class_name in _RADICALE_PLUGINS:
        type_ = configuration.get(section, "type")
        if callable(type_):
            continue
        package = importlib.import_module("radicale." + section)
        module = ("radicale.%s.%s" % (section, type_)
                  if type_ in package.INTERNAL_TYPES else type_)
        try:
            getattr(importlib.import_module(module), class_name)
        except Exception as e:
            raise ValueError("[%s] key 'type': cannot load %r: %s" % (
                section, type_, e)) from None
