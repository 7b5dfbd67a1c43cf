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
from gateway.engine import busy_index
from gateway.engine.availability import availability_periods
from gateway.engine.busy_index import Busy, CollectionIndex, Record
from gateway.engine.calendar_object import (BusyObject, Limits,
                                     availability_components)
from gateway.engine.disk_cache import DiskCache
from gateway.model import (BUSY, BUSY_UNAVAILABLE, LookupResult, Period,
                           Reason, Window)
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
#: Rounds of (refresh, expand, install) one answer may take while other
#: requests keep changing the calendar; after them, what is still open
#: is busy for that answer.
MAX_ATTEMPTS = 3
#: Keep busy indexes on disk (gateway/engine/disk_cache.py).
DISK_CACHE = True


class _Listing:
    """What the engine last saw of one collection."""

    __slots__ = ("fingerprints", "etags", "ranges", "zone_text",
                 "folder_mark", "scanned_at", "lock", "racy", "index",
                 "loaded", "folder")

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
        #: The collection's merged busy time (gateway.engine.busy_index).
        self.index = CollectionIndex()
        #: The disk cache was looked at (once per process and zone).
        self.loaded = False
        #: The collection's folder (file storage only), for the disk cache.
        self.folder: Optional[str] = None


class LocalEngine:
    """Busy periods of calendars, calendar homes and users."""

    def __init__(self, radicale_storage, rights,
                 limits: Limits = Limits(), max_cost: int = 500000,
                 answer_seconds: float = 10.0,
                 addresses_of: Callable[[str], Iterable[str]] = lambda _: (),
                 disk_cache: bool = True) -> None:
        self._storage = radicale_storage
        #: A user's calendar user addresses, to skip what they declined.
        self.addresses_of = addresses_of
        self._rights = rights
        self.limits = limits
        #: Time one answer may spend expanding, when the caller gives no
        #: deadline ([gateway] timeout).
        self.answer_seconds = answer_seconds
        #: Most the object cache and the busy indexes may hold together,
        #: in BusyObject.cost units (about one period or four cached
        #: datetimes, some 400 bytes); each gets half.
        self.max_cost = max_cost
        self._objects: "collections.OrderedDict[Tuple[str, ...], " \
            "BusyObject]" = collections.OrderedDict()
        self._costs: Dict[Tuple[str, ...], int] = {}
        self._cost = 0
        self._cache_lock = threading.Lock()
        #: by collection path, least recently used first
        self._listings: "collections.OrderedDict[str, _Listing]" = \
            collections.OrderedDict()
        self._index_costs: Dict[str, int] = {}
        #: (index, its change count) when its cost was last counted
        self._index_seen: Dict[str, Tuple[int, int]] = {}
        self._listings_lock = threading.Lock()
        #: Indexes kept on disk beside Radicale's item cache, so a restart
        #: does not start from nothing (None: off, or not wanted).
        self.disk = DiskCache(limits) if disk_cache and DISK_CACHE else None

    # -- one calendar -----------------------------------------------------

    def calendar_periods(self, collection, window: Window,
                         excluding: frozenset = frozenset(),
                         deadline: Optional[float] = None) -> List[Period]:
        """Busy periods of one calendar collection (the caller holds
        Radicale's storage lock), clipped to ``window`` and coalesced.

        Occurrences declined by an address in ``excluding`` are left out.
        Expansion still missing at ``deadline`` (time.monotonic(); default
        ``answer_seconds`` from now) counts as busy for this answer.
        """
        return busy_index.periods_of(self.calendar_busy(
            collection, window, excluding, deadline))

    def calendar_busy(self, collection, window: Window,
                      excluding: frozenset = frozenset(),
                      deadline: Optional[float] = None) -> Busy:
        """``calendar_periods`` as the busy index keeps it: per FBTYPE,
        sorted, coalesced POSIX seconds inside ``window``.

        Warm, this is a lookup in the months of the window and a copy.
        Otherwise: under the collection's lock the listing is brought up
        to date and the months of the window are built from what the
        index keeps; recurring objects are expanded for the months still
        missing without that lock (each object has its own, and the
        deadline); their months are installed under the lock again.
        """
        if deadline is None:
            deadline = time.monotonic() + self.answer_seconds
        zone_text = collection.get_meta(TIMEZONE_KEY) or ""
        zone = timezones.zone_from_calendar_timezone(zone_text)
        with self._listings_lock:
            listing = self._listings.get(collection.path)
            if listing is None:
                listing = self._listings[collection.path] = _Listing()
            else:
                self._listings.move_to_end(collection.path)
        keys = busy_index.month_keys(window)
        low = busy_index.seconds(window.start)
        high = busy_index.seconds_up(window.end)
        extra: List[Period] = []
        used: List[Tuple[Tuple[str, ...], BusyObject]] = []
        for attempt in range(MAX_ATTEMPTS):
            with listing.lock:
                tasks, available = self._prepare(collection, listing,
                                                 zone_text, zone, keys,
                                                 window, used)
            done = [(task, task[3].month_busy(
                busy_index.moment(task[0].key), deadline))
                for task in tasks]
            with listing.lock:
                extra = self._install(listing, done, excluding)
                covered = {(task[0].key, task[1]) for task, _ in done}
                index = listing.index
                months = [index.months.get(key) for key in keys]
                open_parts = [(key, href) for key, month in zip(keys, months)
                              if month is not None
                              for href in month.pending
                              if (key, href) not in covered]
                if None not in months and not open_parts:
                    answer = index.answer(keys, low, high, excluding)
                    break
                if attempt == MAX_ATTEMPTS - 1:
                    # Changes kept arriving: what is still open is busy
                    # for this answer, never free.
                    open_months = {key for key, _ in open_parts}
                    extra.extend(Period(
                        busy_index.moment(key), busy_index.moment(
                            busy_index.month_end(key)), BUSY)
                        for key, month in zip(keys, months)
                        if month is None or key in open_months)
                    answer = index.answer(
                        [k for k, m in zip(keys, months) if m is not None],
                        low, high, excluding)
        self._account(used, collection.path, listing)
        if available:
            extra.extend(self._availability(
                availability_components(available), window))
        if extra:
            answer = busy_index.merge(
                [answer, busy_index.busy_of_periods(extra, window)])
        return answer

    def _prepare(self, collection, listing: _Listing, zone_text: str,
                 zone: datetime.tzinfo, keys: List[int], window: Window,
                 used: List) -> Tuple[List[Tuple], List[BusyObject]]:
        """Bring ``listing`` and its index up to date for months ``keys``
        (the caller holds ``listing.lock``).  Returns what is left to
        expand, as (month, href, etag, object), and the objects with
        VAVAILABILITY that reach ``window``."""
        if listing.zone_text != zone_text:
            self._drop_keys([self._key(collection.path, href, etag,
                                       listing.zone_text or "")
                             for href, etag in listing.etags.items()])
            listing.etags.clear()
            listing.ranges.clear()
            listing.fingerprints.clear()
            listing.folder_mark = None
            listing.zone_text = zone_text
            listing.index = CollectionIndex()
            listing.loaded = False
        if not listing.loaded:
            listing.loaded = True
            if self.disk is not None and _file_fingerprints_possible(
                    collection):
                listing.folder = collection._filesystem_path
                self.disk.load(collection, listing)
        items: Dict[str, object] = {}
        raw: Dict[str, BusyObject] = {}
        index = listing.index
        if not (self._unchanged_folder(collection, listing) and
                not listing.racy):
            seen = listing.fingerprints
            changed = self._refresh(collection, listing, zone_text, items,
                                    raw)
            if changed:
                index.invalidate(changed, listing.ranges)
            elif listing.fingerprints != seen:
                # Files no longer racy (or touched): the disk cache may
                # now trust their fingerprints.
                index.dirty = True
        months = [index.month(key, listing.ranges) for key in keys]
        index.trim(keys)
        wanted = set()
        for month in months:
            wanted |= month.pending
        if index.candidates and wanted:
            index.adopt(wanted, listing.etags)
            wanted = set()
            for month in months:
                wanted |= month.pending
        objects = self._objects_of(collection, listing, zone_text, zone,
                                   sorted(wanted), items, raw, used)
        for href, busy_object in objects.items():
            if href not in index.records:
                index.add_record(href, _record(listing.etags[href],
                                               busy_object))
        low = _timestamp(window.start - _FLOATING_SLACK)
        high = _timestamp(window.end + _FLOATING_SLACK)
        available = sorted(href for href in index.available
                           if href in listing.ranges and not (
                               listing.ranges[href][1] < low or
                               listing.ranges[href][0] > high))
        if any(href not in objects for href in available):
            objects.update(self._objects_of(
                collection, listing, zone_text, zone,
                [h for h in available if h not in objects], items, raw,
                used))
        tasks = []
        for month in months:
            index.settle(month)
            for href in month.pending:
                busy_object = objects.get(href)
                if busy_object is not None:
                    tasks.append((month, href, listing.etags[href],
                                  busy_object))
        return tasks, [objects[h] for h in available if h in objects]

    def _install(self, listing: _Listing, done: List,
                 excluding: frozenset) -> List[Period]:
        """Put expanded months into the index (the caller holds
        ``listing.lock``); what cannot be kept (incomplete, or the object
        changed meanwhile) is returned to count for this answer only."""
        index = listing.index
        extra: List[Period] = []
        for (month, href, etag, busy_object), (periods, declined,
                                              complete) in done:
            record = index.records.get(href)
            if complete and record is not None and record.etag == etag \
                    and listing.etags.get(href) == etag:
                if busy_object.fixed_version != record.version:
                    fresh = _record(etag, busy_object)
                    if (fresh.fixed, fresh.declined) != (record.fixed,
                                                         record.declined):
                        index.refresh_fixed(href, fresh, listing.ranges)
                    else:
                        record.version = fresh.version
                        record.persist = fresh.persist
                if index.install(month, href, busy_index.pack(
                        periods, month.key, month.end),
                        busy_index.pack_declined(declined, month.key,
                                                 month.end)):
                    continue
            fixed, fixed_declined = busy_object.fixed_busy()
            extra.extend(periods)
            extra.extend(fixed)
            extra.extend(p for p, who in declined + fixed_declined
                         if not who & excluding)
        return extra

    def _objects_of(self, collection, listing: _Listing, zone_text: str,
                    zone: datetime.tzinfo, hrefs: List[str],
                    items: Dict[str, object], raw: Dict[str, BusyObject],
                    used: List) -> Dict[str, BusyObject]:
        """BusyObjects of ``hrefs``: from the cache where their etag is
        unchanged, else built from the items just read (``items``,
        ``raw``) or read now in one batch.  Only objects that are needed
        again later (recurring, VAVAILABILITY) are kept in the cache: the
        index keeps everything of the others."""
        out: Dict[str, BusyObject] = {}
        missing = []
        for href in hrefs:
            etag = listing.etags.get(href)
            if etag is None:
                continue
            key = self._key(collection.path, href, etag, zone_text)
            with self._cache_lock:
                busy_object = self._objects.get(key)
                if busy_object is not None:
                    self._objects.move_to_end(key)
            if busy_object is None and href in raw:
                busy_object = raw[href]
            elif busy_object is None and href in items:
                busy_object = self._build(collection, items[href], zone)
            if busy_object is None:
                missing.append((href, key))
                continue
            out[href] = busy_object
            used.append((key, busy_object))
        # Unchanged items whose objects were evicted or never kept: read
        # in one batch (each get_multi lists the folder).
        read = self._read_items(collection, [h for h, _ in missing]) \
            if missing else {}
        for href, key in missing:
            item = read.get(href)
            if item is not None:
                busy_object = item if isinstance(item, BusyObject) \
                    else self._build(collection, item, zone)
                out[href] = busy_object
                used.append((key, busy_object))
        for key, busy_object in used:
            if (busy_object.recurring or busy_object.availability) and \
                    key not in self._costs:
                self._keep(key, busy_object)
        return out

    @staticmethod
    def _key(path: str, href: str, etag: str,
             zone_text: str) -> Tuple[str, ...]:
        return (path, href, etag, zone_text)

    def _refresh(self, collection, listing: _Listing, zone_text: str,
                 items: Dict[str, object], raw: Dict[str, BusyObject]
                 ) -> List[str]:
        """Bring ``listing`` up to date with the collection's files; the
        items and raw objects read on the way are left in ``items`` and
        ``raw`` for the caller.  Returns the hrefs added, changed or
        gone."""
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
        gone = [href for href, etag in old_etags.items()
                if listing.etags.get(href) != etag]
        self._drop_keys([self._key(collection.path, href, old_etags[href],
                                   zone_text) for href in gone])
        return gone + [href for href in listing.etags
                       if href not in old_etags]

    def _keep(self, key: Tuple[str, ...],
              busy_object: BusyObject) -> BusyObject:
        """Put a newly built object into the cache and count its cost."""
        with self._cache_lock:
            if key not in self._costs:
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

    def _account(self, used: List, path: str, listing: _Listing) -> None:
        """Update the caches' costs after a query and keep each within
        its half of ``max_cost``: least recently used objects go first,
        then the indexes of least recently used calendars, then months
        of this one outside the window just asked."""
        costs = self._costs
        changed = [(key, busy_object.cost) for key, busy_object in used
                   if key in costs and costs[key] != busy_object.cost]
        half = self.max_cost // 2
        if changed or self._cost > half:
            with self._cache_lock:
                for key, cost in changed:
                    if key in self._costs:
                        self._cost += cost - self._costs[key]
                        self._costs[key] = cost
                while self._cost > half and self._objects:
                    key, _ = self._objects.popitem(last=False)
                    self._cost -= self._costs.pop(key, 0)
        index = listing.index
        if self._index_seen.get(path) == (id(index), index.changes):
            return
        with listing.lock:
            self._index_seen[path] = (id(index), index.changes)
            cost = index.cost
        if self.disk is not None and index.dirty:
            self.disk.schedule(path, listing)
        with self._listings_lock:
            self._index_costs[path] = cost
            total = sum(self._index_costs.values())
            for victim in [p for p in self._listings
                           if p != path and p in self._index_costs]:
                if total <= half:
                    break
                total -= self._index_costs.pop(victim)
                del self._listings[victim]
                self._index_seen.pop(victim, None)
        while total > half:
            with listing.lock:
                kept = len(index.months)
                index.trim((), most=kept // 2)
                cost = index.cost
            with self._listings_lock:
                self._index_costs[path] = cost
                total = sum(self._index_costs.values())
            if kept == 0:
                break

    def _drop_keys(self, keys) -> None:
        with self._cache_lock:
            for key in keys:
                if self._objects.pop(key, None) is not None:
                    self._cost -= self._costs.pop(key, 0)

    @property
    def cache_cost(self) -> int:
        """What the object cache and the indexes hold now, in cost
        units."""
        return self._cost + sum(self._index_costs.values())

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

    def invalidate(self, path: str) -> None:
        """Another instance wrote ``path`` (a storage path of a collection
        or an item; "" when anything may have changed): stop trusting the
        stat-based view of that collection, which on a shared folder (NFS)
        can hide a change.  Its next query reads every item's etag again
        (unchanged ones still hit the object cache).  Called from the
        change-signal thread: takes only the listings' own locks."""
        path = path.strip("/")
        parent = path.rpartition("/")[0]
        with self._listings_lock:
            listings = list(self._listings.items())
        for key, listing in listings:
            if not path or key in (path, parent):
                with listing.lock:
                    listing.folder_mark = None
                    listing.fingerprints = {}

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
            answers = [self.calendar_busy(calendar, window, declined,
                                          deadline) for calendar in visible]
            availability = principal.get_meta(AVAILABILITY_KEY)
        if availability:
            answers.append(busy_index.busy_of_periods(
                self.availability_of_text(availability, window), window))
        # Already clipped, coalesced and sorted as LookupResult.busy
        # would make them, at a fraction of the cost.
        return LookupResult(tuple(busy_index.periods_of(
            busy_index.merge(answers))))

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


def _record(etag: str, busy_object: BusyObject) -> Record:
    """What the busy index keeps of ``busy_object`` whatever the month."""
    fixed, declined = busy_object.fixed_busy()
    return Record(etag, busy_index.pack(fixed),
                  busy_index.pack_declined(declined), busy_object.recurring,
                  bool(busy_object.availability), busy_object.fixed_version,
                  not busy_object.timed_out)


def _file_fingerprints_possible(collection) -> bool:
    return bool(getattr(collection, "_filesystem_path", None)) and \
        hasattr(collection, "_list")


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
