"""Every place where Radicale 3.9 itself must change for free/busy.

Each change is version-checked, and ``self_test`` (run at start-up) proves
that each still has its effect, so a Radicale upgrade fails loudly, not
subtly.  The tested versions are pinned in setup.cfg.

1. Radicale refuses to store a calendar object holding a VFREEBUSY or a
   VAVAILABILITY (PUT answers 400, ``AttributeError`` in
   ``filter.visit_time_ranges``), but RFC 4791 7.10 and RFC 7953 want both
   to count for free/busy.  The time range Radicale computes there only
   serves to prefilter queries; for these components the gateway declares
   "any time", which never hides them from a query.
2. Valid iCalendar that Radicale refuses at PUT is stored: an
   ``RDATE;VALUE=PERIOD`` (vobject 0.9 cannot read periods) and an RRULE
   whose UNTIL lies before DTSTART (RFC 5545 3.8.5.3: DTSTART still
   counts).  Radicale's checks run with those properties hidden, and the
   object's time range is "any time".
3. The enclosing time range Radicale keeps per object (and the gateway
   uses as a prefilter) ends with the master's last instance; an override
   with ``RANGE=THISANDFUTURE`` can move instances past it.  Such objects,
   and any whose range Radicale cannot compute, get "any time" too.  The
   item cache version is extended so ranges cached before are recomputed.
4. Several objects that each hold only a VFREEBUSY have no UID; Radicale
   counts "" as a UID they share and answers 409 no-uid-conflict.  An
   empty UID conflicts with nothing.
"""

import contextlib
import datetime
import importlib
import logging
from typing import Iterator, List, Tuple

import radicale
from radicale import item as radicale_item
from radicale import storage as radicale_storage
from radicale.item import filter as radicale_filter

logger = logging.getLogger(__name__)

SUPPORTED = ("3.9.",)
_WHOLE_TIME_COMPONENTS = ("VFREEBUSY", "VAVAILABILITY")
#: Appended to Radicale's item cache version: ranges cached by a Radicale
#: without these changes are computed again.
CACHE_MARK = b"freebusy-gateway-ranges=2;"


def check_version() -> None:
    if not radicale.VERSION.startswith(SUPPORTED):
        raise RuntimeError("Freebusy Gateway needs Radicale %s, found %s" % (
            " or ".join(v + "x" for v in SUPPORTED), radicale.VERSION))


def _components(vobject_item) -> List:
    return [c for c in getattr(vobject_item, "getChildren", lambda: [])()
            if getattr(c, "name", None) in ("VEVENT", "VTODO", "VJOURNAL")]


def _period_rdates(component) -> List:
    return [r for r in component.contents.get("rdate", [])
            if [v.upper() for v in r.params.get("VALUE", [])] == ["PERIOD"]
            or any(isinstance(v, tuple) for v in (
                r.value if isinstance(r.value, list) else [r.value]))]


def _until_before_start(component) -> bool:
    """Does an RRULE of ``component`` end before its DTSTART?"""
    if not hasattr(component, "dtstart"):
        return False
    start = component.dtstart.value
    for rule in component.contents.get("rrule", []):
        text = str(rule.value).upper()
        marker = text.find("UNTIL=")
        if marker < 0:
            continue
        until = text[marker + 6:].split(";")[0]
        stamp = start.strftime("%Y%m%d") if isinstance(
            start, datetime.date) else ""
        if isinstance(start, datetime.datetime):
            stamp = start.astimezone(datetime.timezone.utc).strftime(
                "%Y%m%dT%H%M%SZ") if start.tzinfo else start.strftime(
                "%Y%m%dT%H%M%S")
        if until[:len(stamp)] < stamp[:len(until)]:
            return True
    return False


def _needs_all_time(vobject_item) -> bool:
    """Objects whose instances Radicale's range cannot bound."""
    for component in _components(vobject_item):
        for rid in component.contents.get("recurrence-id", []):
            if rid.params.get("RANGE"):
                return True
        if _period_rdates(component) or _until_before_start(component):
            return True
    return False


@contextlib.contextmanager
def _hidden_for_checks(vobject_items) -> Iterator[None]:
    """Take PERIOD RDATEs and rules ending before DTSTART out of the
    components while Radicale checks them; put them back afterwards."""
    hidden: List[Tuple] = []
    for vobject_item in vobject_items:
        for component in _components(vobject_item):
            for rdate in _period_rdates(component):
                component.contents["rdate"].remove(rdate)
                hidden.append((component, "rdate", rdate))
            if _until_before_start(component):
                for rule in list(component.contents.get("rrule", [])):
                    component.contents["rrule"].remove(rule)
                    hidden.append((component, "rrule", rule))
            for name in ("rdate", "rrule"):
                if name in component.contents and \
                        not component.contents[name]:
                    del component.contents[name]
    try:
        yield
    finally:
        for component, name, prop in hidden:
            if name == "rdate":
                _period_as_text(prop)
            component.contents.setdefault(name, []).append(prop)


def _format_time(value, utc_form: bool) -> str:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None and utc_form:
            return value.astimezone(datetime.timezone.utc).strftime(
                "%Y%m%dT%H%M%SZ")
        return value.strftime("%Y%m%dT%H%M%S")
    return value.strftime("%Y%m%d")


def _period_as_text(prop) -> None:
    """Turn vobject's native period tuples back into text it can write
    (vobject 0.9 parses PERIOD values but cannot serialize them)."""
    if not getattr(prop, "isNative", False):
        return
    utc_form = "TZID" not in prop.params
    parts = []
    for value in (prop.value if isinstance(prop.value, list)
                  else [prop.value]):
        if isinstance(value, tuple) and len(value) == 2:
            start, end = value
            if isinstance(end, datetime.timedelta):
                from vobject.icalendar import timedeltaToString
                tail = timedeltaToString(end)
            else:
                tail = _format_time(end, utc_form)
            parts.append("%s/%s" % (_format_time(start, utc_form), tail))
        else:
            parts.append(_format_time(value, utc_form))
    prop.value = ",".join(parts)
    prop.isNative = False


def allow_freebusy_components() -> None:
    """Install changes 1-4 of the module doc (idempotent)."""
    original = radicale_item.find_time_range
    if getattr(original, "_gateway", False):
        return

    def find_time_range(vobject_item, tag):
        if tag in _WHOLE_TIME_COMPONENTS:
            return radicale_filter.TIMESTAMP_MIN, radicale_filter.TIMESTAMP_MAX
        try:
            if _needs_all_time(vobject_item):
                return (radicale_filter.TIMESTAMP_MIN,
                        radicale_filter.TIMESTAMP_MAX)
            return original(vobject_item, tag)
        except Exception as e:  # never refuse or hide an object for this
            logger.info("Time range of an object cannot be computed (%s); "
                        "it counts for any time", e)
            return (radicale_filter.TIMESTAMP_MIN,
                    radicale_filter.TIMESTAMP_MAX)

    original_check = radicale_item.check_and_sanitize_items

    def check_and_sanitize_items(vobject_items, *args, **kwargs):
        with _hidden_for_checks(vobject_items):
            return original_check(vobject_items, *args, **kwargs)

    original_has_uid = radicale_storage.BaseCollection.has_uid

    def has_uid(self, uid):
        return bool(uid) and original_has_uid(self, uid)

    find_time_range._gateway = True
    radicale_item.find_time_range = find_time_range
    radicale_item.check_and_sanitize_items = check_and_sanitize_items
    radicale_storage.BaseCollection.has_uid = has_uid
    if CACHE_MARK not in radicale_storage.CACHE_VERSION:
        radicale_storage.CACHE_VERSION += CACHE_MARK


_SELF_TEST_OBJECTS = {
    "RDATE;VALUE=PERIOD": (
        "DTSTART:20260105T100000Z\r\nDTEND:20260105T110000Z\r\n"
        "RDATE;VALUE=PERIOD:20260107T100000Z/20260107T120000Z\r\n"),
    "UNTIL before DTSTART": (
        "DTSTART:20260105T100000Z\r\nDTEND:20260105T110000Z\r\n"
        "RRULE:FREQ=DAILY;UNTIL=20260101T000000Z\r\n"),
    "RANGE=THISANDFUTURE": (
        "DTSTART:20260105T100000Z\r\nDTEND:20260105T110000Z\r\n"
        "RRULE:FREQ=WEEKLY;COUNT=3\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\n"
        "UID:t\r\nDTSTAMP:20260101T000000Z\r\n"
        "RECURRENCE-ID;RANGE=THISANDFUTURE:20260112T100000Z\r\n"
        "DTSTART:20260301T100000Z\r\nDTEND:20260301T110000Z\r\n"),
}


def self_test() -> None:
    """Prove that every change above is in effect; RuntimeError if not.

    Runs Radicale's own check and range code on small objects, in memory.
    """
    allow_freebusy_components()
    for name, body in _SELF_TEST_OBJECTS.items():
        text = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
                "BEGIN:VEVENT\r\nUID:t\r\nDTSTAMP:20260101T000000Z\r\n" +
                body + "END:VEVENT\r\nEND:VCALENDAR\r\n")
        try:
            items = radicale_item.read_components(text)
            radicale_item.check_and_sanitize_items(
                items, tag="VCALENDAR", max_vevent_rrule_occurrence=0)
            start, end = radicale_item.find_time_range(items[0], "VEVENT")
            serialized = items[0].serialize()
        except Exception as e:
            raise RuntimeError("Radicale %s refuses %s objects even with the "
                               "gateway's changes: %s" % (
                                   radicale.VERSION, name, e)) from None
        if end != radicale_filter.TIMESTAMP_MAX:
            raise RuntimeError("Radicale %s bounds %s objects in time"
                               % (radicale.VERSION, name))
        if "RDATE" in body and "RDATE" not in serialized or \
                "RRULE" in body and "RRULE" not in serialized:
            raise RuntimeError("Radicale %s drops a property of %s objects"
                               % (radicale.VERSION, name))
    holder = type("Holder", (radicale_storage.BaseCollection,), {
        "get_all": lambda self: iter(()), "path": ""})
    if holder.has_uid(holder.__new__(holder), ""):
        raise RuntimeError("Radicale %s lets empty UIDs conflict"
                           % radicale.VERSION)


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
