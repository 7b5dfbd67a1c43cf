"""The local engine: free/busy of Radicale users from Radicale's storage.

Speed comes from keeping work: each calendar object becomes a
``BusyObject`` once, keyed by its etag and the calendar's time zone, and
that object keeps its recurrence expansions.  To learn which objects
changed without reading them all, the engine compares a cheap fingerprint
of each file (inode, mtime, size) for Radicale's file storage; content is
always read through the storage API (``get_multi``/``get_all``) under
Radicale's read lock.  Other storage backends fall back to ``get_all``
and the etag alone.
"""

import collections
import datetime
import logging
import os
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from radicale import pathutils, storage as radicale_storage
from radicale.app.base import Access

from gateway import timezones
from gateway.availability import availability_periods
from gateway.calendar_object import BusyObject, availability_components
from gateway.model import LookupResult, Period, Reason, Window

logger = logging.getLogger(__name__)

TRANSP_KEY = "C:schedule-calendar-transp"
TIMEZONE_KEY = "C:calendar-timezone"
#: Where the inbox's CALDAV:calendar-availability is kept: a property of
#: the user's principal collection, so it lives in Radicale's storage.
AVAILABILITY_KEY = "C:calendar-availability"


def is_transparent(collection) -> bool:
    """RFC 6638 9.1: does this calendar stay out of its owner's busy time?"""
    return str(collection.get_meta(TRANSP_KEY) or "").strip().lower() == \
        "transparent"


#: (inode, mtime in ns, size) of one item file.
Fingerprint = Tuple[int, int, int]
_FLOATING_SLACK = datetime.timedelta(days=1)
#: Longest time an item edited in place by another program (not through
#: Radicale) may go unnoticed.
FULL_SCAN_SECONDS = 5.0


class _Listing:
    """What the engine last saw of one collection."""

    __slots__ = ("fingerprints", "etags", "ranges", "zone_text",
                 "folder_mark", "scanned_at")

    def __init__(self) -> None:
        self.fingerprints: Dict[str, Fingerprint] = {}
        #: The collection folder's (inode, mtime) at the last file scan.
        self.folder_mark: Optional[Tuple[int, int]] = None
        self.scanned_at = 0.0
        self.etags: Dict[str, str] = {}
        #: Radicale's own enclosing time range of each object (POSIX
        #: seconds, from its item cache): objects that cannot reach a
        #: window are never parsed for it.
        self.ranges: Dict[str, Tuple[int, int]] = {}
        self.zone_text: Optional[str] = None

    def remember(self, href: str, item) -> None:
        self.etags[href] = item.etag
        self.ranges[href] = item.time_range

    def forget(self, href: str) -> None:
        self.etags.pop(href, None)
        self.ranges.pop(href, None)


class LocalEngine:
    """Busy periods of calendars, calendar homes and users."""

    def __init__(self, radicale_storage, rights, max_occurrences: int = 0,
                 max_objects: int = 50000,
                 addresses_of: Callable[[str], Iterable[str]] = lambda _: ()
                 ) -> None:
        self._storage = radicale_storage
        #: A user's calendar user addresses, to skip what they declined.
        self.addresses_of = addresses_of
        self._rights = rights
        self.max_occurrences = max_occurrences
        self.max_objects = max_objects
        self._objects: "collections.OrderedDict[Tuple[str, str], BusyObject]" \
            = collections.OrderedDict()
        self._listings: Dict[str, _Listing] = {}
        self._lock = threading.Lock()

    # -- one calendar -----------------------------------------------------

    def calendar_periods(self, collection, window: Window,
                         excluding: frozenset = frozenset()) -> List[Period]:
        """Busy periods of one calendar collection (caller holds the lock).

        Not clipped or merged: callers normalise once over all sources.
        Occurrences declined by an address in ``excluding`` are left out.
        """
        zone_text = collection.get_meta(TIMEZONE_KEY) or ""
        zone = timezones.zone_from_calendar_timezone(zone_text)
        with self._lock:
            objects = self._objects_of(collection, zone_text, zone, window)
            periods: List[Period] = []
            for busy_object in objects:
                periods.extend(busy_object.periods(window, excluding))
            components = availability_components(objects)
        if components:
            periods.extend(availability_periods(components, window))
        return periods

    def _objects_of(self, collection, zone_text: str, zone: datetime.tzinfo,
                    window: Window) -> List[BusyObject]:
        """The objects of ``collection`` that may have busy time in
        ``window``, built from the cache where their etag is unchanged."""
        listing = self._listings.setdefault(collection.path, _Listing())
        if listing.zone_text != zone_text:
            listing.etags.clear()
            listing.ranges.clear()
            listing.fingerprints.clear()
            listing.folder_mark = None
            listing.zone_text = zone_text
        if self._unchanged_folder(collection, listing):
            fingerprints = listing.fingerprints
        else:
            fingerprints = _file_fingerprints(collection)
        if fingerprints is None:
            # Not Radicale's file storage: etags from the storage API.
            listing.folder_mark = None
            items = {item.href: item for item in collection.get_all()}
            listing.etags.clear()
            listing.ranges.clear()
            for href, item in items.items():
                listing.remember(href, item)
        else:
            changed = [href for href, fp in fingerprints.items()
                       if listing.fingerprints.get(href) != fp
                       or href not in listing.etags]
            items = {}
            if changed:
                items = {href: item for href, item in
                         collection.get_multi(changed) if item is not None}
                for href in changed:
                    if href in items:
                        listing.remember(href, items[href])
                    else:
                        listing.forget(href)
            for href in list(listing.etags):
                if href not in fingerprints:
                    listing.forget(href)
            listing.fingerprints = fingerprints
        # Radicale computes ranges with floating times as UTC; a calendar
        # time zone moves them by at most 14 hours.
        low = (window.start - _FLOATING_SLACK).timestamp()
        high = (window.end + _FLOATING_SLACK).timestamp()
        objects = []
        for href, etag in listing.etags.items():
            start, end = listing.ranges[href]
            if end < low or start > high:
                continue
            key = (etag, zone_text)
            busy_object = self._objects.get(key)
            if busy_object is None:
                item = items.get(href)
                if item is None:
                    item = next((i for _, i in collection.get_multi([href])
                                 if i is not None), None)
                    if item is None:
                        continue
                busy_object = self._build(item, zone)
                if busy_object is None:
                    continue
                self._objects[key] = busy_object
                if len(self._objects) > self.max_objects:
                    self._objects.popitem(last=False)
            else:
                self._objects.move_to_end(key)
            objects.append(busy_object)
        return objects

    @staticmethod
    def _unchanged_folder(collection, listing: _Listing) -> bool:
        """True when no item can have changed since the last file scan.

        Radicale adds, replaces and deletes items by atomic rename or
        unlink in the collection folder, which always moves the folder's
        mtime, so an unchanged folder spares a stat of every item file.
        Edits made in place by other programs do not move it; a full scan
        at least every FULL_SCAN_SECONDS catches those too.
        """
        path = getattr(collection, "_filesystem_path", None)
        if not path:
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        mark = (st.st_ino, st.st_mtime_ns)
        now = time.monotonic()
        if mark == listing.folder_mark and \
                now - listing.scanned_at < FULL_SCAN_SECONDS:
            return True
        listing.folder_mark, listing.scanned_at = mark, now
        return False

    def _build(self, item, zone) -> Optional[BusyObject]:
        try:
            return BusyObject(item.serialize(), zone, self.max_occurrences)
        except Exception as e:  # a broken object must not break the answer
            logger.warning("Skipping unreadable calendar object %r: %s",
                           item.href, e)
            return None

    # -- many calendars ---------------------------------------------------

    def home_calendars(self, home_path: str, user: str, user_groups: set
                       ) -> Iterable:
        """The calendars under ``home_path`` that count for free/busy.

        Opaque calendars only (RFC 6638 9.1), and only those where ``user``
        has Radicale's read or free/busy right.
        """
        for collection in self._storage.discover(home_path, depth="1"):
            if (not isinstance(collection, radicale_storage.BaseCollection)
                    or collection.path == home_path.strip("/")
                    or collection.tag != "VCALENDAR"
                    or is_transparent(collection)):
                continue
            access = Access(self._rights, user, user_groups,
                            "/%s/" % collection.path)
            if access.allows_freebusy(collection):
                yield collection

    def lookup_user(self, owner: str, window: Window, user: str,
                    user_groups: set) -> LookupResult:
        """All busy time of local user ``owner`` as ``user`` may see it.

        Unknown when ``owner`` has no principal here; no authority when
        ``owner`` has calendars but ``user`` may see none of them.  The
        working hours (CALDAV:calendar-availability, kept on the principal)
        count too; meetings ``owner`` declined do not.
        """
        home = "/%s/" % owner
        if not pathutils.is_safe_path_component(owner):
            return LookupResult.failed(Reason.UNKNOWN_USER, "not a user name")
        with self._storage.acquire_lock("r", user):
            principal = next(iter(self._storage.discover(home, depth="0")),
                             None)
            if not isinstance(principal, radicale_storage.BaseCollection):
                return LookupResult.failed(Reason.UNKNOWN_USER,
                                           "no such user here")
            calendars = [c for c in self._storage.discover(home, depth="1")
                         if isinstance(c, radicale_storage.BaseCollection)
                         and c.tag == "VCALENDAR"]
            visible = list(self.home_calendars(home, user, user_groups))
            if calendars and not visible and not any(
                    Access(self._rights, user, user_groups,
                           "/%s/" % c.path).allows_freebusy(c)
                    for c in calendars):
                return LookupResult.failed(Reason.NO_AUTHORITY,
                                           "no free/busy right on %s" % owner)
            declined = frozenset(a.lower() for a in self.addresses_of(owner))
            periods: List[Period] = []
            for calendar in visible:
                periods.extend(self.calendar_periods(calendar, window,
                                                     declined))
            availability = principal.get_meta(AVAILABILITY_KEY)
        if availability:
            periods.extend(self.availability_of_text(availability, window))
        return LookupResult.busy(periods, window)

    def availability_of_text(self, text: str, window: Window) -> List[Period]:
        """Busy time of a stored calendar-availability value."""
        try:
            busy_object = BusyObject(text, timezones.UTC)
        except Exception as e:
            logger.warning("Ignoring unreadable calendar-availability: %s", e)
            return []
        return availability_periods(availability_components([busy_object]),
                                    window)


def _file_fingerprints(collection) -> Optional[Dict[str, Fingerprint]]:
    """Cheap change marks of a multifilesystem collection's item files.

    Radicale writes items by atomic rename, so a changed item always has a
    new inode or mtime.  None for storage backends without files.
    """
    path = getattr(collection, "_filesystem_path", None)
    if not path or not hasattr(collection, "_list"):
        return None
    marks = {}
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or not \
                        pathutils.is_safe_filesystem_path_component(name):
                    continue
                st = entry.stat(follow_symlinks=False)
                if not entry.is_file(follow_symlinks=False):
                    continue
                marks[name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return None
    return marks
