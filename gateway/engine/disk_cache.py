"""The busy indexes on disk, so the first answer after a restart is fast.

One file per calendar collection, beside Radicale's own item cache:
``<collection folder>/.Radicale.cache/freebusy/index.json``.  It holds
what the local engine knew of the collection: each item file's
fingerprint (inode, mtime, size) with its etag and Radicale's time range,
each object's record (busy_index.Record) and the months of recurring
objects already expanded.  After a restart the engine reads it at the
collection's first use and then looks at the files as usual: unchanged
files are not even read, changed ones are read and expanded again, and
only for the months a query asks.

Safety:
- the first line, a header, names the format, the engine (a hash of the
  code that computes busy time and the libraries' versions), the
  expansion limits, the collection path, its time zone, and the SHA-256
  of the rest; a file that differs in any of them, cannot be read, is
  too big or malformed in any way is ignored whole (and replaced at the
  next write), so a flipped bit cannot turn into a wrong answer;
- every record must carry the etag the file's own listing gives, and the
  engine trusts a fingerprint only where the file's inode, mtime and
  size are all unchanged (the racily clean rule applies as before);
- writes go to a temporary file in the same folder and are renamed over
  the old one, so readers (other worker processes too) see the old file
  or the new one, never a mix; the last writer wins, and both wrote a
  consistent view;
- records that a time limit shaped (a busy machine) are not written.

Writes happen in one background thread once the indexes have been
quiet for DELAY (at most MAX_DELAY after a change), and at exit
(``flush_all``); a file larger than MAX_BYTES is not written.
"""

import atexit
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from typing import Dict, List, Optional

import dateutil
import icalendar
import recurring_ical_events

from gateway.engine import busy_index
from gateway.engine.busy_index import CollectionIndex, Record

logger = logging.getLogger(__name__)

FORMAT = 1
FOLDER = os.path.join(".Radicale.cache", "freebusy")
NAME = "index.json"
#: Largest file read or written.
MAX_BYTES = 64 << 20
#: Writes wait until no index changed for this many seconds (a burst of
#: first queries is written once, after it, not in its middle) ...
DELAY = 0.5
#: ... but no longer than this after the first change.
MAX_DELAY = 2.0
#: Temporary files older than this are a crashed writer's and go.
STALE_TMP_SECONDS = 600


def _engine_version() -> str:
    """Changes whenever the code or libraries that compute busy time
    could compute it differently."""
    digest = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("calendar_object.py", "busy_index.py", "disk_cache.py"):
        with open(os.path.join(here, name), "rb") as f:
            digest.update(f.read())
    for module in (icalendar, recurring_ical_events, dateutil):
        digest.update(str(getattr(module, "__version__", "")).encode())
    return digest.hexdigest()[:32]


ENGINE = _engine_version()


def path_of(folder: str) -> str:
    return os.path.join(folder, FOLDER, NAME)


class DiskCache:
    """Reads and writes the index files of one engine."""

    def __init__(self, limits, delay: float = DELAY,
                 max_bytes: int = MAX_BYTES) -> None:
        self.limits = [limits.max_occurrences, limits.seconds]
        self.delay = delay
        self.max_bytes = max_bytes
        self._pending: Dict[str, object] = {}
        self._lock = threading.Lock()
        #: when the first and the last pending change were scheduled
        self._first = self._last = 0.0
        #: held while writing, so flush() returns after a write the
        #: background thread had begun
        self._writing = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        _ALL.add(self)

    def _header(self, collection_path: str, zone_text: str) -> Dict:
        return {"format": FORMAT, "engine": ENGINE, "limits": self.limits,
                "path": collection_path,
                "zone": hashlib.sha256(zone_text.encode()).hexdigest()}

    # -- reading ------------------------------------------------------------

    def load(self, collection, listing) -> bool:
        """Fill a fresh ``listing`` (fingerprints, etags, ranges, index)
        from the collection's file; False when there is none to use."""
        path = path_of(collection._filesystem_path)
        try:
            data = self._read(path, self._header(collection.path,
                                                 listing.zone_text or ""),
                              quiet=False)
            if data is None:
                return False
            restore(data, listing)
        except Exception as e:  # any garbage: ignored, rebuilt, rewritten
            logger.warning("Ignoring the busy index cache %s (%s: %s)", path,
                           type(e).__name__, str(e)[:200])
            listing.fingerprints, listing.etags, listing.ranges = {}, {}, {}
            listing.index = CollectionIndex()
            return False
        return True

    def _read(self, path: str, header: Dict,
              quiet: bool = True) -> Optional[Dict]:
        """The body of the file at ``path`` when its header is
        ``header`` and its checksum holds; None when there is no such
        file or it was written for something else.  Damage raises,
        unless ``quiet``."""
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > self.max_bytes:
                    raise ValueError("larger than %d bytes" % self.max_bytes)
                head = json.loads(f.readline(4096))
                body = f.read(self.max_bytes + 1)
            if not isinstance(head, dict) or any(
                    head.get(k) != v for k, v in header.items()):
                if not quiet:
                    logger.info("Ignoring %s: written for another engine, "
                                "limits, path or time zone", path)
                return None
            if head.get("sha256") != hashlib.sha256(body).hexdigest():
                raise ValueError("its checksum does not match")
            return json.loads(body)
        except FileNotFoundError:
            return None
        except Exception:
            if quiet:
                return None
            raise

    # -- writing ------------------------------------------------------------

    def schedule(self, collection_path: str, listing) -> None:
        """Write ``listing``'s index soon (one thread writes for all)."""
        with self._lock:
            now = time.monotonic()
            if not self._pending:
                self._first = now
            self._last = now
            self._pending[collection_path] = listing
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fb-index-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """Write what is pending once the indexes have been quiet for
        ``delay`` (or MAX_DELAY after the first change); end when nothing
        is pending."""
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                now = time.monotonic()
                wait = min(self._last + self.delay,
                           self._first + MAX_DELAY) - now
            if wait > 0:
                time.sleep(min(wait, self.delay))
                continue
            self.flush()

    def flush(self) -> None:
        """Write every pending index now."""
        with self._writing:
            with self._lock:
                pending, self._pending = self._pending, {}
            for collection_path, listing in pending.items():
                try:
                    self.write(collection_path, listing)
                except Exception:  # a cache: never fails an answer or exit
                    logger.exception("Could not write the busy index cache "
                                     "of /%s", collection_path)

    def write(self, collection_path: str, listing) -> None:
        folder = listing.folder
        if not folder:
            return
        with listing.lock:
            if not listing.index.dirty:
                return
            head = self._header(collection_path, listing.zone_text or "")
            data = snapshot(listing)
            etags = dict(listing.etags)
            listing.index.dirty = False
        target = path_of(folder)
        # Other worker processes may have written months or records this
        # one never computed: keep those that are still current.
        merge_existing(self._read(target, head), data, etags)
        text = _file_text(head, data)
        if len(text) > self.max_bytes:
            # Months are the bulk; records and files alone still spare
            # every single event's parsing.
            data["months"] = []
            text = _file_text(head, data)
            if len(text) > self.max_bytes:
                logger.info("Not writing the busy index cache of /%s: "
                            "over %d bytes", collection_path, self.max_bytes)
                return
        directory = os.path.dirname(target)
        # One level at a time: a collection deleted meanwhile must not
        # come back as an empty folder.
        for part in (os.path.dirname(directory), directory):
            try:
                os.mkdir(part)
            except FileExistsError:
                pass
            except FileNotFoundError:
                return
        _remove_stale(directory)
        tmp = "%s.%d.%d.tmp" % (target, os.getpid(), threading.get_ident())
        try:
            with open(tmp, "wb") as f:
                f.write(text)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _file_text(head: Dict, data: Dict) -> bytes:
    """The header line (with the body's checksum) and the body."""
    body = json.dumps(data, separators=(",", ":")).encode()
    head = dict(head, sha256=hashlib.sha256(body).hexdigest())
    return json.dumps(head).encode() + b"\n" + body


#: Every DiskCache alive, flushed at exit.
_ALL: "weakref.WeakSet[DiskCache]" = weakref.WeakSet()


@atexit.register
def flush_all() -> None:
    """Write every pending index of this process now: at exit, and
    before a worker process leaves by ``os._exit`` (which skips
    atexit)."""
    for cache in list(_ALL):
        cache.flush()


def _remove_stale(directory: str) -> None:
    now = time.time()
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".tmp") and \
                        now - entry.stat().st_mtime > STALE_TMP_SECONDS:
                    os.unlink(entry.path)
    except OSError:
        pass


# -- the file's content ------------------------------------------------------

def snapshot(listing) -> Dict:
    """The parts of ``listing`` worth keeping, as JSON values (the caller
    holds ``listing.lock``)."""
    index = listing.index
    files = [[href, fp[0], fp[1], fp[2], listing.etags[href],
              listing.ranges[href][0], listing.ranges[href][1]]
             for href, fp in listing.fingerprints.items()
             if fp is not None and href in listing.etags]
    kept = {href: r for href, r in index.records.items()
            if r.persist and listing.etags.get(href) == r.etag}
    records = [_record_json(href, r) for href, r in kept.items()]
    recurring = [href for href, r in kept.items() if r.recurring]
    months = []
    for key, month in index.months.items():
        parts = []
        for href in recurring:
            if href in month.pending or not busy_index._reaches(
                    listing.ranges[href], key, month.end):
                continue
            parts.append([href, list(month.parts.get(href, ())),
                          _declined_json(month.declined.get(href, ()))])
        months.append([key, parts])
    return {"files": files, "records": records, "months": months}


class _Scratch:
    """A listing's fields, to read another process's file into."""

    def __init__(self) -> None:
        self.fingerprints: Dict = {}
        self.etags: Dict = {}
        self.ranges: Dict = {}
        self.index = CollectionIndex()


def merge_existing(existing: Optional[Dict], data: Dict,
                   etags: Dict[str, str]) -> None:
    """Add to ``data`` (a snapshot) the records and months of the file
    another process wrote, where they are for the objects ``etags``
    (this process's listing) still names, and this process lacks them.
    Anything malformed in it adds nothing."""
    if not existing:
        return
    scratch = _Scratch()
    try:
        restore(existing, scratch)
    except Exception:  # its writer's problem; this write replaces it
        return
    records = scratch.index.records
    current = {href for href, record in records.items()
               if etags.get(href) == record.etag}
    have = {entry[0] for entry in data["records"]}
    for href in sorted(current - have):
        record = records[href]
        data["records"].append(_record_json(href, record))
    mine = {entry[0] for entry in data["records"]}
    have_months = {entry[0] for entry in data["months"]}
    for key, month in scratch.index.months.items():
        if key in have_months:
            continue
        parts = [[href, list(month.parts.get(href, ())),
                  _declined_json(month.declined.get(href, ()))]
                 for href, record in records.items()
                 if record.recurring and href in current and href in mine
                 and href not in month.pending and busy_index._reaches(
                     scratch.ranges[href], key, month.end)]
        data["months"].append([key, parts])


def _record_json(href: str, record: Record) -> List:
    return [href, record.etag, int(record.recurring),
            int(record.availability), list(record.fixed),
            _declined_json(record.declined)]


def _declined_json(declined) -> List:
    return [[s, e, c, sorted(who)] for s, e, c, who in declined]


def _ints(values, count: Optional[int] = None) -> List[int]:
    if not isinstance(values, list) or (count is not None and
                                        len(values) != count):
        raise ValueError("not a list of %s integers" % (count or "n"))
    for value in values:
        if type(value) is not int:
            raise ValueError("not an integer: %r" % (value,))
    return values


def _triples(values) -> "busy_index.array.array":
    values = _ints(values)
    if len(values) % 3:
        raise ValueError("periods are not triples")
    for i in range(0, len(values), 3):
        if values[i + 2] not in (0, 1, 2) or values[i + 1] <= values[i]:
            raise ValueError("bad period %r" % (values[i:i + 3],))
    return busy_index.array.array("q", values)


def _declined(values) -> List:
    if not isinstance(values, list):
        raise ValueError("declined periods are not a list")
    out = []
    for value in values:
        if not isinstance(value, list) or len(value) != 4:
            raise ValueError("bad declined period")
        start, end, code = _ints(value[:3], 3)
        who = value[3]
        if code not in (0, 1, 2) or end <= start or not isinstance(
                who, list) or not all(isinstance(w, str) for w in who):
            raise ValueError("bad declined period")
        out.append((start, end, code, frozenset(who)))
    return out


def restore(data: Dict, listing) -> None:
    """Fill ``listing`` from a file's content; raises ValueError (or
    TypeError, KeyError) on anything malformed, leaving the listing to be
    reset by the caller."""
    fingerprints, etags, ranges = {}, {}, {}
    for entry in data["files"]:
        if not isinstance(entry, list) or len(entry) != 7:
            raise ValueError("bad file entry")
        href, etag = entry[0], entry[4]
        if not isinstance(href, str) or not isinstance(etag, str):
            raise ValueError("bad file entry")
        ino, mtime, size = _ints(entry[1:4], 3)
        low, high = _ints(entry[5:7], 2)
        fingerprints[href] = (ino, mtime, size)
        etags[href] = etag
        ranges[href] = (low, high)
    index = CollectionIndex()
    for entry in data["records"]:
        if not isinstance(entry, list) or len(entry) != 6:
            raise ValueError("bad record")
        href, etag, recurring, availability = entry[:4]
        if not isinstance(href, str) or not isinstance(etag, str):
            raise ValueError("bad record")
        record = Record(etag, _triples(entry[4]), _declined(entry[5]),
                        bool(recurring), bool(availability), version=-1)
        if href not in etags:
            # Its file was too fresh to be vouched for by its fingerprint:
            # usable once the file, read again, shows this etag.
            index.candidates[href] = record
        elif etags[href] == etag:
            index.add_record(href, record)
    for entry in data["months"]:
        key, parts = entry
        key = _ints([key], 1)[0]
        if busy_index.seconds(busy_index.moment(key).replace(
                day=1, hour=0, minute=0, second=0)) != key:
            raise ValueError("not a month start: %r" % key)
        month = index.month(key, ranges)
        for href, part, declined in parts:
            record = index.records.get(href)
            if record is None or not record.recurring or \
                    href not in month.pending:
                continue
            chunk = _triples(part)
            for i in range(0, len(chunk), 3):
                if chunk[i] < key or chunk[i + 1] > month.end:
                    raise ValueError("period outside its month")
            month.put(href, chunk, _declined(declined))
            month.pending.discard(href)
    index.dirty = False
    listing.fingerprints, listing.etags, listing.ranges = (fingerprints,
                                                           etags, ranges)
    listing.index = index
