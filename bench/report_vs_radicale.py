#!/usr/bin/env python3
"""Free-busy REPORT: the gateway against plain Radicale 3.9, same data.

Generates a seeded synthetic dataset, loads it into a gateway and into a
plain Radicale (each with its own storage folder, both on this machine),
then times the same RFC 4791 free-busy-query against both:

- one calendar of 2,000 events, windows of 42 and 365 days;
- a calendar home of 20 calendars of 500 events: the gateway answers one
  REPORT on the home (Depth: 1), Radicale answers the 20 calendars one by
  one (it has no aggregate).

"Cold" is the first query after both servers start (the gateway's
in-memory cache empty; Radicale's on-disk item cache is there for both,
they share the storage code).  "Warm" is the median of --repeat queries
after that.  Every answer pair is checked to cover the same busy time
(BUSY, BUSY-TENTATIVE and BUSY-UNAVAILABLE together; Radicale's
FBTYPE=FREE lines for cancelled events are not busy time).  The exit
status is 1 when any pair differs.

Usage:  .venv/bin/python bench/report_vs_radicale.py [--quick] [--json F]
"""

import argparse
import datetime
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import icalendar
import requests

UTC = datetime.timezone.utc
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD = "bench", "bench-pw"
#: The 20 calendars live in their own home, so that the gateway's home
#: REPORT and Radicale's 20 calendar REPORTs cover the same calendars.
TEAM = "team"
ZONES = {
    "Europe/Berlin": (
        "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:DAYLIGHT\r\n"
        "TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\n"
        "DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n"
        "END:DAYLIGHT\r\nBEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\n"
        "TZOFFSETTO:+0100\r\nTZNAME:CET\r\nDTSTART:19701025T030000\r\n"
        "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
        "END:VTIMEZONE\r\n"),
    "America/New_York": (
        "BEGIN:VTIMEZONE\r\nTZID:America/New_York\r\nBEGIN:DAYLIGHT\r\n"
        "TZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r\nTZNAME:EDT\r\n"
        "DTSTART:20070311T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\r\n"
        "END:DAYLIGHT\r\nBEGIN:STANDARD\r\nTZOFFSETFROM:-0400\r\n"
        "TZOFFSETTO:-0500\r\nTZNAME:EST\r\nDTSTART:20071104T020000\r\n"
        "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\r\nEND:STANDARD\r\n"
        "END:VTIMEZONE\r\n"),
}
DATA_START = datetime.datetime(2025, 7, 1)
DATA_DAYS = 730
WINDOWS = {"42d": (datetime.datetime(2026, 3, 2, tzinfo=UTC), 42),
           "365d": (datetime.datetime(2026, 1, 1, tzinfo=UTC), 365)}


# -- data -------------------------------------------------------------------

def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


def make_event(rng: random.Random, uid: str) -> str:
    """One VEVENT of the mix the issue asks for."""
    day = DATA_START + datetime.timedelta(days=rng.randrange(DATA_DAYS))
    lines = ["BEGIN:VEVENT", "UID:%s" % uid, "DTSTAMP:20250101T000000Z",
             "SUMMARY:event %s" % uid]
    all_day = rng.random() < 0.05
    if all_day:
        lines.append("DTSTART;VALUE=DATE:%s" % day.strftime("%Y%m%d"))
        lines.append("DTEND;VALUE=DATE:%s" % (
            day + datetime.timedelta(days=rng.choice((1, 1, 2)))
        ).strftime("%Y%m%d"))
        start = day
    else:
        start = day.replace(hour=rng.randrange(7, 19),
                            minute=rng.choice((0, 15, 30, 45)))
        end = start + datetime.timedelta(minutes=rng.choice(
            (30, 45, 60, 60, 90, 120, 180)))
        zone = rng.random()
        if zone < 0.6:
            lines.append("DTSTART:%sZ" % _stamp(start))
            lines.append("DTEND:%sZ" % _stamp(end))
        else:
            tzid = "Europe/Berlin" if zone < 0.8 else "America/New_York"
            lines.append("DTSTART;TZID=%s:%s" % (tzid, _stamp(start)))
            lines.append("DTEND;TZID=%s:%s" % (tzid, _stamp(end)))
    # All-day series would fill every day and make the comparison blind.
    if rng.random() < 0.30 and not all_day:                   # weekly
        kind = rng.random()
        rule = "FREQ=WEEKLY"
        if kind < 0.4:
            pass                                              # endless
        elif kind < 0.7:
            rule += ";COUNT=%d" % rng.randrange(5, 60)
        else:
            until = start + datetime.timedelta(weeks=rng.randrange(4, 52))
            rule += ";UNTIL=%sZ" % _stamp(until.replace(hour=23, minute=59))
        lines.append("RRULE:" + rule)
        if rng.random() < 0.1:
            skipped = start + datetime.timedelta(weeks=rng.randrange(1, 4))
            value = lines[4].split(":", 1)
            lines.append(value[0].replace("DTSTART", "EXDATE") + ":" +
                         _stamp(skipped) + ("Z" if value[1].endswith("Z")
                                            else ""))
    status = rng.random()
    if status < 0.08:
        lines.append("STATUS:TENTATIVE")
    elif status < 0.11:
        lines.append("STATUS:CANCELLED")
    if rng.random() < 0.04:
        lines.append("TRANSP:TRANSPARENT")
    lines.append("END:VEVENT")
    return "\r\n".join(lines) + "\r\n"


def make_calendar(rng: random.Random, prefix: str, count: int
                  ) -> Dict[str, str]:
    """{file name: calendar object text}, one event per object."""
    objects = {}
    for i in range(count):
        uid = "%s-%05d" % (prefix, i)
        event = make_event(rng, uid)
        zones = "".join(text for tzid, text in ZONES.items()
                        if "TZID=%s" % tzid in event)
        objects[uid + ".ics"] = (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"
            "PRODID:-//fbgateway bench//EN\r\n%s%sEND:VCALENDAR\r\n"
            % (zones, event))
    return objects


# -- servers ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A gateway or a plain Radicale on its own storage folder."""

    def __init__(self, kind: str, directory: str) -> None:
        self.kind = kind
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "users"), "w") as f:
            f.write("%s:%s\n%s:%s\n" % (USER, PASSWORD, TEAM, PASSWORD))
        self.config = os.path.join(directory, "server.ini")
        self.process = None
        self.port = 0

    def start(self) -> None:
        self.port = free_port()
        text = ("[server]\nhosts = 127.0.0.1:%d\n[auth]\ntype = htpasswd\n"
                "htpasswd_filename = %s\nhtpasswd_encryption = plain\n"
                "delay = 0\n[rights]\ntype = owner_only\n[storage]\n"
                "filesystem_folder = %s\n[logging]\nlevel = warning\n"
                "[reporting]\nmax_freebusy_occurrence = 1000000\n" % (
                    self.port, os.path.join(self.directory, "users"),
                    os.path.join(self.directory, "collections")))
        if self.kind == "gateway":
            text += "[gateway]\ndomains = example.com\n"
            command = [sys.executable, "-m", "gateway", "serve", "--config",
                       self.config]
        else:
            command = [sys.executable, "-m", "radicale", "--config",
                       self.config]
        with open(self.config, "w") as f:
            f.write(text)
        self.log = open(os.path.join(self.directory, "log"), "ab")
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("%s did not start; see %s" % (self.kind,
                                                         self.directory))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)
        self.log.close()

    def url(self, path: str) -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    @staticmethod
    def _auth(path: str) -> Tuple[str, str]:
        return (path.strip("/").split("/")[0], PASSWORD)

    def store(self, path: str, objects: Dict[str, str]) -> None:
        """Write a calendar straight into Radicale's file storage layout.

        Uploading 12,000 objects over HTTP takes Radicale tens of minutes
        (one fsync per object); the files are what a PUT would leave.
        Radicale's item cache is then built by a first pass of REPORTs
        (see ``prime``), so neither server pays for it when timed.
        """
        folder = os.path.join(self.directory, "collections",
                              "collection-root", *path.strip("/").split("/"))
        os.makedirs(folder)
        with open(os.path.join(folder, ".Radicale.props"), "w") as f:
            json.dump({"tag": "VCALENDAR"}, f)
        for name, text in objects.items():
            with open(os.path.join(folder, name), "w", newline="") as f:
                f.write(text)

    def report(self, path: str, start: datetime.datetime, days: int,
               depth: str = "1") -> Tuple[float, bytes]:
        end = start + datetime.timedelta(days=days)
        body = ('<?xml version="1.0" encoding="utf-8"?><C:free-busy-query '
                'xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range '
                'start="%s" end="%s"/></C:free-busy-query>' % (
                    start.strftime("%Y%m%dT%H%M%SZ"),
                    end.strftime("%Y%m%dT%H%M%SZ")))
        began = time.perf_counter()
        response = requests.request(
            "REPORT", self.url(path), data=body, auth=self._auth(path),
            headers={"Depth": depth, "Content-Type": "application/xml"},
            timeout=600)
        elapsed = time.perf_counter() - began
        if response.status_code != 200:
            raise RuntimeError("%s REPORT %s: %d %s" % (
                self.kind, path, response.status_code, response.text[:300]))
        return elapsed, response.content


# -- comparing --------------------------------------------------------------

Intervals = List[Tuple[datetime.datetime, datetime.datetime]]


def busy_union(answers: List[bytes]) -> Dict[str, Intervals]:
    """Busy time of the answers per FBTYPE, as merged UTC intervals.

    Both servers keep the types apart (RFC 4791 7.10), so the unions per
    type must match; FBTYPE=FREE is not busy time."""
    by_type: Dict[str, list] = {}
    for data in answers:
        for component in icalendar.Calendar.from_ical(data).walk("VFREEBUSY"):
            values = component.get("FREEBUSY", [])
            values = values if isinstance(values, list) else [values]
            for prop in values:
                fbtype = str(prop.params.get("FBTYPE", "BUSY")).upper()
                if fbtype == "FREE":
                    continue
                periods = prop.dt if isinstance(prop.dt, list) else [prop.dt]
                for start, end in periods:
                    if isinstance(end, datetime.timedelta):
                        end = start + end
                    by_type.setdefault(fbtype, []).append(
                        (start.astimezone(UTC), end.astimezone(UTC)))
    result = {}
    for fbtype, intervals in by_type.items():
        intervals.sort()
        merged: List[List[datetime.datetime]] = []
        for start, end in intervals:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        result[fbtype] = [(s, e) for s, e in merged]
    return result


def difference(a: Dict[str, Intervals], b: Dict[str, Intervals]) -> str:
    """A short description of where two answers differ."""
    notes = []
    for fbtype in sorted(set(a) | set(b)):
        only_a = [i for i in a.get(fbtype, []) if i not in b.get(fbtype, [])]
        only_b = [i for i in b.get(fbtype, []) if i not in a.get(fbtype, [])]
        if only_a or only_b:
            notes.append("%s gateway only: %s; radicale only: %s" % (
                fbtype, ["%s..%s" % (s.isoformat(), e.isoformat())
                         for s, e in only_a[:3]],
                ["%s..%s" % (s.isoformat(), e.isoformat())
                 for s, e in only_b[:3]]))
    return " | ".join(notes)


# -- the run ----------------------------------------------------------------

def measure(gateway: Server, radicale: Server, case: str, paths_gw: List[str],
            paths_rad: List[str], window: str, repeat: int) -> Dict:
    start, days = WINDOWS[window]

    def once(server: Server, paths: List[str]) -> Tuple[float, List[bytes]]:
        """One answer: the summed time of the REPORTs on ``paths``."""
        elapsed, body = 0.0, []
        for path in paths:
            seconds, data = server.report(path, start, days)
            elapsed += seconds
            body.append(data)
        return elapsed, body

    for server in (gateway, radicale):
        server.start()
    try:
        gw_cold, gw_answer = once(gateway, paths_gw)
        rad_cold, rad_answer = once(radicale, paths_rad)
        gw_warm = statistics.median(once(gateway, paths_gw)[0]
                                    for _ in range(repeat))
        rad_warm = statistics.median(once(radicale, paths_rad)[0]
                                     for _ in range(max(1, repeat // 2)))
    finally:
        for server in (gateway, radicale):
            server.stop()
    gw_busy, rad_busy = busy_union(gw_answer), busy_union(rad_answer)
    same = gw_busy == rad_busy
    return {"case": case, "window": window, "radicale_cold_ms":
            rad_cold * 1000, "gateway_cold_ms": gw_cold * 1000,
            "radicale_warm_ms": rad_warm * 1000,
            "gateway_warm_ms": gw_warm * 1000,
            "cold_ratio": rad_cold / gw_cold, "warm_ratio": rad_warm / gw_warm,
            "busy_intervals": {t: len(v) for t, v in gw_busy.items()},
            "same_busy": same,
            "difference": "" if same else difference(gw_busy, rad_busy)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--events", type=int, default=2000,
                        help="events in the single calendar")
    parser.add_argument("--calendars", type=int, default=20)
    parser.add_argument("--per-calendar", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7,
                        help="warm queries per case (median is reported)")
    parser.add_argument("--quick", action="store_true",
                        help="small data, for a smoke run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.events, args.calendars, args.per_calendar = 200, 4, 50
        args.repeat = 3

    rng = random.Random(args.seed)
    big = make_calendar(rng, "big", args.events)
    small = [make_calendar(rng, "c%02d" % n, args.per_calendar)
             for n in range(args.calendars)]
    with tempfile.TemporaryDirectory(prefix="fbbench-") as tmp:
        gateway = Server("gateway", os.path.join(tmp, "gateway"))
        radicale = Server("radicale", os.path.join(tmp, "radicale"))
        began = time.monotonic()
        homes = ["/%s/cal%02d/" % (TEAM, n) for n in range(args.calendars)]
        for server in (gateway, radicale):
            server.store("/%s/big/" % USER, big)
            for path, objects in zip(homes, small):
                server.store(path, objects)
            # Both read through Radicale's storage, which builds its
            # on-disk item cache on first read: build it before timing.
            server.start()
            try:
                for path in ["/%s/big/" % USER] + homes:
                    server.report(path, *WINDOWS["42d"])
            finally:
                server.stop()
        print("data: %d events in one calendar, %d calendars of %d; "
              "stored and primed in both in %.1f s" % (
                  args.events, args.calendars, args.per_calendar,
                  time.monotonic() - began), flush=True)
        results = []
        for window in WINDOWS:
            results.append(measure(gateway, radicale, "1 calendar, %d events"
                                   % args.events, ["/%s/big/" % USER],
                                   ["/%s/big/" % USER], window, args.repeat))
            print_row(results[-1])
            results.append(measure(
                gateway, radicale, "home of %d calendars x %d" % (
                    args.calendars, args.per_calendar),
                ["/%s/" % TEAM], homes, window, args.repeat))
            print_row(results[-1])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(),
                       "cpus": os.cpu_count(), "args": vars(args),
                       "results": results}, f, indent=2)
    different = [r for r in results if not r["same_busy"]]
    for r in different:
        print("DIFFERENT busy time in %s %s: %s" % (r["case"], r["window"],
                                                    r["difference"]))
    return 1 if different else 0


def print_row(r: Dict) -> None:
    print("%-28s %5s  cold: radicale %8.1f ms  gateway %7.1f ms  x%-6.1f "
          "warm: radicale %8.1f ms  gateway %6.1f ms  x%-7.1f same busy: %s "
          "(%s)"
          % (r["case"], r["window"], r["radicale_cold_ms"],
             r["gateway_cold_ms"], r["cold_ratio"], r["radicale_warm_ms"],
             r["gateway_warm_ms"], r["warm_ratio"],
             "yes" if r["same_busy"] else "NO",
             ", ".join("%d %s" % (n, t) for t, n in sorted(
                 r["busy_intervals"].items()))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
