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
import hashlib
import logging
import os
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from radicale import pathutils, storage as radicale_storage
from radicale.app.base import Access

from gateway import timezones
from gateway.engine.availability import availability_periods
from gateway.engine.calendar_object import (BusyObject, Limits,
                                     availability_components, months)
from gateway.model import (BUSY_UNAVAILABLE, LookupResult, Period, Reason,
                           Window)
from gateway.engine.watchdog import TimeLimitExceeded, time_limit

logger = logging.getLogger(__name__)

TRANSP_KEY = "C:schedule-calendar-transp"
TIMEZONE_KEY = "C:calendar-timezone"
#: Where the inbox's CALDAV:calendar-availability is kept: a property of
#: the user's principal collection, so it lives in Radicale's storage.
AVAILABILITY_KEY = "C:calendar-availability"
#: The principal property by which a user opts out of being looked up by
#: anyone but themselves (design.md, "Who may see whose free/busy").
OPT_OUT_KEY = "{urn:freebusy-gateway}freebusy-opt-out"


def is_transparent(collection) -> bool:
    """RFC 6638 9.1: does this calendar stay out of its owner's busy time?"""
    return str(collection.get_meta(TRANSP_KEY) or "").strip().lower() == \
        "transparent"


#: (inode, mtime in ns, size) of one item file; None while it is "racy".
Fingerprint = Optional[Tuple[int, int, int]]
_FLOATING_SLACK = datetime.timedelta(days=1)
#: Longest time an item edited in place by another program (not through
#: Radicale) may go unnoticed.
FULL_SCAN_SECONDS = 5.0
#: A file or folder whose mtime is this close to the moment it was looked
#: at is "racily clean" (git's term): a change in the same timestamp tick
#: would not move its mtime, so it is not trusted and is read again next
#: time.  Two seconds cover FAT's and NFS's coarse times and small skew.
RACY_NS = 2_000_000_000
#: Biggest item file read directly when Radicale cannot load it.
MAX_RAW_BYTES = 10 << 20
#: Time range for objects the engine must never skip.
_ALL_TIME = (-(1 << 62), 1 << 62)
#: Depth: infinity walks at most this deep and this many collections.
MAX_DEPTH = 8
MAX_COLLECTIONS = 2000


class _Listing:
    """What the engine last saw of one collection."""

    __slots__ = ("fingerprints", "etags", "ranges", "zone_text",
                 "folder_mark", "scanned_at", "lock", "racy")

    def __init__(self) -> None:
        self.fingerprints: Dict[str, Fingerprint] = {}
        #: The collection folder's (inode, mtime) at the last file scan,
        #: None when it was racy.
        self.folder_mark: Optional[Tuple[int, int]] = None
        self.scanned_at = 0.0
        self.etags: Dict[str, str] = {}
        #: Radicale's own enclosing time range of each object (POSIX
        #: seconds, from its item cache): objects that cannot reach a
        #: window are never parsed for it.
        self.ranges: Dict[str, Tuple[int, int]] = {}
        self.zone_text: Optional[str] = None
        #: Some file was racily clean at the last scan: scan again.
        self.racy = False
        #: One query at a time refreshes a collection; other collections
        #: (other users) are never held up by it.
        self.lock = threading.Lock()


class LocalEngine:
    """Busy periods of calendars, calendar homes and users."""

    def __init__(self, radicale_storage, rights,
                 limits: Limits = Limits(), max_cost: int = 500000,
                 answer_seconds: float = 10.0,
                 addresses_of: Callable[[str], Iterable[str]] = lambda _: ()
                 ) -> None:
        self._storage = radicale_storage
        #: A user's calendar user addresses, to skip what they declined.
        self.addresses_of = addresses_of
        self._rights = rights
        self.limits = limits
        #: Time one answer may spend expanding, when the caller gives no
        #: deadline ([gateway] timeout).
        self.answer_seconds = answer_seconds
        #: Most the object cache may hold, in BusyObject.cost units
        #: (about one period or four cached datetimes, some 400 bytes).
        self.max_cost = max_cost
        self._objects: "collections.OrderedDict[Tuple[str, str], BusyObject]" \
            = collections.OrderedDict()
        self._costs: Dict[Tuple[str, str], int] = {}
        self._cost = 0
        self._cache_lock = threading.Lock()
        self._listings: Dict[str, _Listing] = {}
        self._listings_lock = threading.Lock()

    # -- one calendar -----------------------------------------------------

    def calendar_periods(self, collection, window: Window,
                         excluding: frozenset = frozenset(),
                         deadline: Optional[float] = None) -> List[Period]:
        """Busy periods of one calendar collection (the caller holds
        Radicale's storage lock).

        Not clipped or merged: callers normalise once over all sources.
        Occurrences declined by an address in ``excluding`` are left out.
        Expansion still missing at ``deadline`` (time.monotonic(); default
        ``answer_seconds`` from now) counts as busy for this answer.
        """
        if deadline is None:
            deadline = time.monotonic() + self.answer_seconds
        zone_text = collection.get_meta(TIMEZONE_KEY) or ""
        zone = timezones.zone_from_calendar_timezone(zone_text)
        with self._listings_lock:
            listing = self._listings.setdefault(collection.path, _Listing())
        with listing.lock:
            objects = self._objects_of(collection, listing, zone_text, zone,
                                       window)
        periods: List[Period] = []
        month_starts = months(window)
        for key, busy_object in objects:
            periods.extend(busy_object.periods(window, excluding,
                                               month_starts, deadline))
        self._account(objects)
        components = availability_components(o for _, o in objects)
        if components:
            periods.extend(self._availability(components, window))
        return periods

    def _objects_of(self, collection, listing: _Listing, zone_text: str,
                    zone: datetime.tzinfo, window: Window
                    ) -> List[Tuple[Tuple[str, str], BusyObject]]:
        """The objects of ``collection`` that may have busy time in
        ``window``, built from the cache where their etag is unchanged."""
        if listing.zone_text != zone_text:
            self._drop_keys([(e, listing.zone_text or "")
                             for e in listing.etags.values()])
            listing.etags.clear()
            listing.ranges.clear()
            listing.fingerprints.clear()
            listing.folder_mark = None
            listing.zone_text = zone_text
        items: Dict[str, object] = {}
        raw: Dict[str, BusyObject] = {}
        if not (self._unchanged_folder(collection, listing) and
                not listing.racy):
            self._refresh(collection, listing, zone_text, items, raw)
        # Radicale computes ranges with floating times as UTC; a calendar
        # time zone moves them by at most 14 hours.
        low = _timestamp(window.start - _FLOATING_SLACK)
        high = _timestamp(window.end + _FLOATING_SLACK)
        objects = []
        missing = []
        for href, etag in listing.etags.items():
            start, end = listing.ranges[href]
            if end < low or start > high:
                continue
            key = (etag, zone_text)
            with self._cache_lock:
                busy_object = self._objects.get(key)
                if busy_object is not None:
                    self._objects.move_to_end(key)
            if busy_object is not None:
                objects.append((key, busy_object))
            elif href in raw or href in items:
                objects.append((key, self._keep(
                    key, raw.get(href) or self._build(collection,
                                                      items[href], zone))))
            else:
                missing.append((href, key))
        # Unchanged items whose objects were evicted: read in one batch
        # (each get_multi lists the folder).
        read = self._read_items(collection, [h for h, _ in missing]) \
            if missing else {}
        for href, key in missing:
            item = read.get(href)
            if item is not None:
                objects.append((key, self._keep(
                    key, item if isinstance(item, BusyObject)
                    else self._build(collection, item, zone))))
        return objects

    def _refresh(self, collection, listing: _Listing, zone_text: str,
                 items: Dict[str, object], raw: Dict[str, BusyObject]
                 ) -> None:
        """Bring ``listing`` up to date with the collection's files; the
        items and raw objects read on the way are left in ``items`` and
        ``raw`` for the caller."""
        old_etags = dict(listing.etags)
        fingerprints = _file_fingerprints(collection)
        if fingerprints is None:
            # Not Radicale's file storage: etags from the storage API.
            listing.folder_mark = None
            items.update((item.href, item) for item in collection.get_all())
            listing.etags.clear()
            listing.ranges.clear()
            for href, item in items.items():
                self._remember(listing, href, item)
        else:
            changed = [href for href, fp in fingerprints.items()
                       if fp is None or listing.fingerprints.get(href) != fp
                       or href not in listing.etags]
            read = self._read_items(collection, changed) if changed else {}
            for href in changed:
                item = read.get(href)
                if isinstance(item, BusyObject):
                    raw[href] = item
                    listing.etags[href] = "raw:%s" % item.origin_etag
                    listing.ranges[href] = _ALL_TIME
                elif item is not None:
                    items[href] = item
                    self._remember(listing, href, item)
                else:
                    self._forget(listing, href)
            for href in list(listing.etags):
                if href not in fingerprints:
                    self._forget(listing, href)
            listing.fingerprints = fingerprints
            listing.racy = None in fingerprints.values()
        # Objects replaced or deleted since the last look leave the cache
        # now instead of waiting to be evicted.
        self._drop_keys([(etag, zone_text) for href, etag in
                         old_etags.items()
                         if listing.etags.get(href) != etag])

    def _keep(self, key: Tuple[str, str],
              busy_object: BusyObject) -> BusyObject:
        """Put a newly built object into the cache and count its cost."""
        with self._cache_lock:
            self._objects[key] = busy_object
            self._costs[key] = cost = busy_object.cost
            self._cost += cost
        return busy_object

    def _remember(self, listing: _Listing, href: str, item) -> None:
        listing.etags[href] = item.etag
        listing.ranges[href] = item.time_range

    def _forget(self, listing: _Listing, href: str) -> None:
        listing.etags.pop(href, None)
        listing.ranges.pop(href, None)

    def _read_items(self, collection, hrefs: List[str]) -> Dict[str, object]:
        """Radicale's items for ``hrefs``, read in one ``get_multi`` where
        possible (each call lists the folder); a file Radicale cannot load
        (written by another program) becomes a BusyObject read from the
        raw file, so that it still counts.  Gone files are left out."""
        out: Dict[str, object] = {}
        remaining = list(hrefs)
        while remaining:
            try:
                for href, item in collection.get_multi(remaining):
                    out[href] = item if item is not None else \
                        self._raw_object(collection, href,
                                         "Radicale skipped it")
                remaining = []
            except Exception as e:  # Radicale wraps every load error
                failed = next(h for h in remaining if h not in out)
                out[failed] = self._raw_object(collection, failed,
                                               str(e.__cause__ or e))
                remaining = [h for h in remaining if h not in out]
        for href in hrefs:
            if href not in out:  # over Radicale's max_resource_size
                out[href] = self._raw_object(collection, href,
                                             "Radicale did not return it")
        return {h: i for h, i in out.items() if i is not None}

    def _raw_object(self, collection, href: str,
                    error: str) -> Optional[BusyObject]:
        path = os.path.join(getattr(collection, "_filesystem_path", ""),
                            href)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_RAW_BYTES + 1)
        except OSError:
            return None
        logger.warning("Calendar object /%s/%s cannot be loaded by Radicale "
                       "(%s); reading it directly", collection.path, href,
                       error.replace("\n", " ")[:200])
        text = data[:MAX_RAW_BYTES].decode("utf-8", "replace")
        busy_object = BusyObject(text, timezones.zone_from_calendar_timezone(
            collection.get_meta(TIMEZONE_KEY) or ""), self.limits,
            origin="/%s/%s" % (collection.path, href))
        busy_object.origin_etag = hashlib.sha256(data).hexdigest()
        return busy_object

    def _build(self, collection, item, zone) -> BusyObject:
        return BusyObject(item.serialize(), zone, self.limits,
                          origin="/%s/%s" % (collection.path, item.href))

    def _account(self, objects) -> None:
        """Update the cache's cost after a query; evict the least
        recently used objects while it is over ``max_cost``."""
        changed = [(key, busy_object.cost) for key, busy_object in objects]
        costs = self._costs
        changed = [(key, cost) for key, cost in changed
                   if costs.get(key, cost) != cost]
        if not changed and self._cost <= self.max_cost:
            return
        with self._cache_lock:
            for key, cost in changed:
                if key in self._costs:
                    self._cost += cost - self._costs[key]
                    self._costs[key] = cost
            while self._cost > self.max_cost and self._objects:
                key, _ = self._objects.popitem(last=False)
                self._cost -= self._costs.pop(key, 0)

    def _drop_keys(self, keys) -> None:
        with self._cache_lock:
            for key in keys:
                if self._objects.pop(key, None) is not None:
                    self._cost -= self._costs.pop(key, 0)

    @property
    def cache_cost(self) -> int:
        """What the object cache holds now, in cost units."""
        return self._cost

    @staticmethod
    def _unchanged_folder(collection, listing: _Listing) -> bool:
        """True when no item can have changed since the last file scan.

        Radicale adds, replaces and deletes items by atomic rename or
        unlink in the collection folder, which always moves the folder's
        mtime, so an unchanged folder spares a stat of every item file.
        A folder mtime within RACY_NS of the scan is not trusted.  Edits
        made in place by other programs do not move it; a full scan at
        least every FULL_SCAN_SECONDS catches those too.
        """
        path = getattr(collection, "_filesystem_path", None)
        if not path:
            return False
        now_ns = time.time_ns()
        try:
            st = os.stat(path)
        except OSError:
            return False
        mark = (st.st_ino, st.st_mtime_ns)
        now = time.monotonic()
        if listing.folder_mark is not None and \
                mark == listing.folder_mark and \
                now - listing.scanned_at < FULL_SCAN_SECONDS:
            return True
        racy = st.st_mtime_ns >= now_ns - RACY_NS
        listing.folder_mark = None if racy else mark
        listing.scanned_at = now
        return False

    # -- many calendars ---------------------------------------------------

    def home_calendars(self, home_path: str, user: str, user_groups: set,
                       depth: str = "1", check_rights: bool = True
                       ) -> Iterable:
        """The calendars under ``home_path`` that count for free/busy.

        Opaque calendars only (RFC 6638 9.1), and with ``check_rights``
        only those where ``user`` has Radicale's read or free/busy right.
        ``depth`` "infinity" also walks plain collections below, up to
        MAX_DEPTH levels and MAX_COLLECTIONS collections.
        """
        levels = MAX_DEPTH if depth == "infinity" else 1
        seen = 0
        pending = [(home_path, 1)]
        while pending:
            path, level = pending.pop(0)
            for collection in self._storage.discover(path, depth="1"):
                if (not isinstance(collection,
                                   radicale_storage.BaseCollection)
                        or collection.path == path.strip("/")):
                    continue
                seen += 1
                if seen > MAX_COLLECTIONS:
                    logger.warning("Stopped walking %s after %d "
                                   "collections", home_path, seen - 1)
                    return
                if collection.tag != "VCALENDAR":
                    if not collection.tag and level < levels:
                        pending.append(("/%s/" % collection.path, level + 1))
                    continue
                if is_transparent(collection):
                    continue
                if not check_rights or Access(
                        self._rights, user, user_groups,
                        "/%s/" % collection.path).allows_freebusy(collection):
                    yield collection

    def lookup_user(self, owner: str, window: Window, user: str,
                    user_groups: set, check_rights: bool = True,
                    deadline: Optional[float] = None) -> LookupResult:
        """All busy time of local user ``owner`` as ``user`` may see it.

        Unknown when ``owner`` has no principal here; no authority when
        ``check_rights`` is on, ``owner`` has calendars and ``user`` may
        see none of them.  The working hours (CALDAV:calendar-availability,
        kept on the principal) count too; meetings ``owner`` declined do
        not.
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
            if user != owner and _opted_out(principal):
                return LookupResult.failed(Reason.NO_AUTHORITY,
                                           "%s opted out" % owner)
            visible = list(self.home_calendars(home, user, user_groups,
                                               check_rights=check_rights))
            if check_rights and not visible:
                calendars = [c for c in self._storage.discover(
                    home, depth="1") if isinstance(
                        c, radicale_storage.BaseCollection)
                    and c.tag == "VCALENDAR"]
                if calendars and not any(
                        Access(self._rights, user, user_groups,
                               "/%s/" % c.path).allows_freebusy(c)
                        for c in calendars):
                    return LookupResult.failed(
                        Reason.NO_AUTHORITY,
                        "no free/busy right on %s" % owner)
            declined = frozenset(a.lower() for a in self.addresses_of(owner))
            periods: List[Period] = []
            for calendar in visible:
                periods.extend(self.calendar_periods(calendar, window,
                                                     declined, deadline))
            availability = principal.get_meta(AVAILABILITY_KEY)
        if availability:
            periods.extend(self.availability_of_text(availability, window))
        return LookupResult.busy(periods, window)

    def principal_meta(self, owner: str, key: str) -> Optional[str]:
        """A property of local user ``owner``'s principal (None when the
        user or the property is missing)."""
        if not pathutils.is_safe_path_component(owner):
            return None
        with self._storage.acquire_lock("r"):
            principal = next(iter(self._storage.discover(
                "/%s/" % owner, depth="0")), None)
            if not isinstance(principal, radicale_storage.BaseCollection):
                return None
            return principal.get_meta(key)

    def opted_out(self, owner: str) -> bool:
        """Has ``owner`` opted out of being looked up by others?"""
        return _opt_out_value(self.principal_meta(owner, OPT_OUT_KEY))

    def availability_of_text(self, text: str, window: Window) -> List[Period]:
        """Busy time of a stored calendar-availability value."""
        busy_object = BusyObject(text, timezones.UTC, self.limits,
                                 origin="(calendar-availability)")
        return self._availability(availability_components([busy_object]),
                                  window)

    def _availability(self, components, window: Window) -> List[Period]:
        """VAVAILABILITY busy time; when it cannot be computed, the whole
        window is BUSY-UNAVAILABLE (no data), never free."""
        try:
            with time_limit(self.limits.seconds * 4):
                return availability_periods(components, window)
        except (Exception, TimeLimitExceeded) as e:
            logger.warning("VAVAILABILITY cannot be used (%s); counting "
                           "%s..%s as unavailable", type(e).__name__,
                           window.start, window.end)
            return [Period(window.start, window.end, BUSY_UNAVAILABLE)]


def _opt_out_value(value) -> bool:
    return str(value or "").strip().lower() in ("true", "1", "yes")


def _opted_out(principal) -> bool:
    return _opt_out_value(principal.get_meta(OPT_OUT_KEY))


def _timestamp(value: datetime.datetime) -> float:
    try:
        return value.timestamp()
    except (OverflowError, ValueError):
        return -(1 << 62) if value.year < 5000 else 1 << 62


def _file_fingerprints(collection) -> Optional[Dict[str, Fingerprint]]:
    """Cheap change marks of a multifilesystem collection's item files.

    Radicale writes items by atomic rename, so a changed item always has a
    new inode or mtime.  A file modified within RACY_NS of the scan gets
    no mark (None): it is read again next time, since a second change in
    the same timestamp tick would leave its mtime as it is.  None for
    storage backends without files.
    """
    path = getattr(collection, "_filesystem_path", None)
    if not path or not hasattr(collection, "_list"):
        return None
    marks: Dict[str, Fingerprint] = {}
    racy_after = time.time_ns() - RACY_NS
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
                marks[name] = None if st.st_mtime_ns >= racy_after else (
                    st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return None
    return marks
