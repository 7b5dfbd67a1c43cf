#!/usr/bin/env python3
"""Free/busy: the gateway, a plain Radicale 3.9 and Cyrus 3.6, same data.

Loads one seeded dataset into all three (the gateway and Radicale by
writing Radicale's file layout, Cyrus by CalDAV PUTs) and prints, in one
run, median times over fresh connections for:

- REPORT on one calendar of 2,000 events, 42 and 365 days;
- 20 calendars one by one, 365 days (the sum of 20 REPORTs);
- the calendar home of those 20 calendars, one REPORT (Depth: 1), 365 d
  (Radicale has no aggregate: its 20 calendars' union is compared);
- the first REPORT after a restart, 365 days;
- 8 clients asking for the 2,000-event calendar over 42 days at once:
  requests per second;
- the RFC 6638 outbox POST for 1 attendee (the 2,000 events) and for 20
  attendees (500 events each), 42 and 365 days (Radicale has no outbox);

with the ratios the issue sets as targets, a check that all servers
report the same busy time, and the gateway's memory after the run.  The
exit status is 1 when any answer differs.

Usage:  .venv/bin/python bench/three_way.py [--quick] [--json F]
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from typing import Callable, Dict, List, Optional, Tuple

from common import (PASSWORD, TEAM, USER, WINDOWS, Intervals, Server,
                    busy_union, difference, make_calendar, process_tree)
from cyrus import Cyrus

#: Who sends the outbox POSTs (the home of the 20 calendars).
ASKER = TEAM
BIG = "/%s/big/" % USER
CALDAV = "{urn:ietf:params:xml:ns:caldav}"
DAV = "{DAV:}"


# -- data -------------------------------------------------------------------

class Data:
    """The seeded calendars: {calendar path: {file name: text}}."""

    def __init__(self, seed: int, events: int, calendars: int,
                 per_calendar: int, attendees: int, per_attendee: int
                 ) -> None:
        rng = random.Random(seed)
        # The first two in the order bench/report_vs_radicale.py makes
        # them, so both benchmarks answer for the same events.
        self.calendars: Dict[str, Dict[str, str]] = {
            BIG: make_calendar(rng, "big", events)}
        self.team = ["/%s/cal%02d/" % (TEAM, n) for n in range(calendars)]
        for n, path in enumerate(self.team):
            self.calendars[path] = make_calendar(rng, "c%02d" % n,
                                                 per_calendar)
        self.people = ["p%02d" % n for n in range(attendees)]
        for user in self.people:
            self.calendars["/%s/work/" % user] = make_calendar(
                rng, user, per_attendee)
        self.users = [USER, TEAM] + self.people
        self.description = (
            "seed %d: %d events in one calendar, %d calendars of %d, %d "
            "attendees of %d" % (seed, events, calendars, per_calendar,
                                 attendees, per_attendee))


# -- answers ----------------------------------------------------------------

def clipped(busy: Dict[str, Intervals], window: Tuple[datetime.datetime,
                                                        int]
            ) -> Dict[str, Intervals]:
    """Busy time inside the window only: Cyrus does not clip a period
    that starts before the window to its start (RFC 4791 7.10 asks for
    periods within the time-range); the gateway and Radicale do."""
    start, days = window
    end = start + datetime.timedelta(days=days)
    result = {}
    for fbtype, intervals in busy.items():
        inside = [(max(s, start), min(e, end)) for s, e in intervals
                  if s < end and e > start]
        if inside:
            result[fbtype] = inside
    return result


def schedule_answers(body: bytes) -> Dict[str, Tuple[str, bytes]]:
    """{recipient: (request-status code, calendar data)} of a
    schedule-response."""
    answers = {}
    for response in ET.fromstring(body).iter(CALDAV + "response"):
        recipient = response.find(CALDAV + "recipient/" + DAV + "href")
        status = response.find(CALDAV + "request-status")
        data = response.find(CALDAV + "calendar-data")
        answers[recipient.text.strip().lower()] = (
            status.text.split(";")[0].strip(),
            (data.text or "").encode("utf-8") if data is not None else b"")
    return answers


def outbox_request(attendees: List[str], window) -> str:
    start, days = window
    end = start + datetime.timedelta(days=days)
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//fbgateway bench//EN"
            "\r\nMETHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:bench-%d\r\n"
            "DTSTAMP:20260101T000000Z\r\nDTSTART:%s\r\nDTEND:%s\r\n"
            "ORGANIZER:mailto:%s@example.com\r\n%sEND:VFREEBUSY\r\n"
            "END:VCALENDAR\r\n" % (
                len(attendees), start.strftime("%Y%m%dT%H%M%SZ"),
                end.strftime("%Y%m%dT%H%M%SZ"), ASKER, "".join(
                    "ATTENDEE:mailto:%s@example.com\r\n" % a
                    for a in attendees)))


# -- one server's measurements ------------------------------------------------

class Measured:
    """One server under its name, with the requests the rows make; each
    returns (seconds, answer)."""

    def __init__(self, name: str, server) -> None:
        self.name = name
        self.server = server

    def report(self, path: str, window, depth: str = "1"
               ) -> Tuple[float, bytes]:
        return self.server.report(path, *window, depth=depth)

    def reports(self, paths: List[str], window) -> Tuple[float, List[bytes]]:
        """The summed time of one REPORT on each path, one by one."""
        total, answers = 0.0, []
        for path in paths:
            seconds, data = self.report(path, window)
            total += seconds
            answers.append(data)
        return total, answers

    def post(self, attendees: List[str], window) -> Tuple[float, bytes]:
        return self.server.request(
            "POST", "/%s/.schedule-outbox/" % ASKER,
            outbox_request(attendees, window),
            {"Content-Type": "text/calendar; charset=utf-8"})


def median_of(repeat: int, warm_up: int, once: Callable[[], Tuple[float,
                                                                  object]]
              ) -> Tuple[float, object]:
    """(median seconds, last answer) of ``repeat`` timed calls after
    ``warm_up`` untimed ones."""
    answer = None
    for _ in range(warm_up):
        answer = once()[1]
    times = []
    for _ in range(repeat):
        seconds, answer = once()
        times.append(seconds)
    return statistics.median(times), answer


def throughput(once: Callable[[], object], clients: int, seconds: float
               ) -> Tuple[float, int, int]:
    """(requests per second, answered, failed) of ``clients`` threads,
    each calling ``once`` (one request on a fresh connection) for
    ``seconds``."""
    stop = time.monotonic() + seconds
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def client() -> None:
        while time.monotonic() < stop:
            try:
                once()
                outcome = "ok"
            except (OSError, RuntimeError):
                outcome = "failed"
            with lock:
                counts[outcome] += 1

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    return counts["ok"] / elapsed, counts["ok"], counts["failed"]


# -- memory -----------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid``, its live children and the
    children it has waited for (Cyrus's httpd processes that ended)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for one in process_tree(pid):
        try:
            with open("/proc/%d/stat" % one) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of proc(5)
        total += sum(int(value) for value in fields[11:15])
    return total / tick


def memory_kb(pid: int) -> Dict[str, int]:
    """Rss and Pss (shared pages counted once) over the process tree."""
    total = {"Rss": 0, "Pss": 0, "processes": 0}
    for one in process_tree(pid):
        try:
            with open("/proc/%d/smaps_rollup" % one) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("Rss", "Pss"):
                        total[key] += int(value.split()[0])
            total["processes"] += 1
        except OSError:
            continue
    return total


# -- the run ----------------------------------------------------------------

class Run:
    """All rows of the table, server by server within each row."""

    def __init__(self, args, data: Data, gateway: Measured,
                 radicale: Measured, cyrus: Measured) -> None:
        self.args = args
        self.data = data
        self.gateway, self.radicale, self.cyrus = gateway, radicale, cyrus
        self.rows: List[Dict] = []
        self.differences: List[str] = []

    def servers(self, radicale: bool = True) -> List[Measured]:
        return [self.gateway] + ([self.radicale] if radicale else []) + \
            [self.cyrus]

    def warm_up(self, measured: Measured) -> int:
        """Untimed calls first: the gateway's workers each warm their own
        memory; the others have nothing to warm but get the same."""
        return 2 * self.args.workers + 1 if measured is self.gateway else 1

    def repeat(self, measured: Measured) -> int:
        # Radicale's answers take seconds: fewer of them.
        return max(1, self.args.repeat // 2) if measured is self.radicale \
            else self.args.repeat

    def same(self, row: str, answers: Dict[str, List[bytes]],
             window) -> Dict[str, int]:
        """Compare every server's busy time with the gateway's (per
        FBTYPE, clipped to the window); note differences."""
        busy = {name: clipped(busy_union(data), window)
                for name, data in answers.items()}
        reference = busy["gateway"]
        for name, other in busy.items():
            if other != reference:
                self.differences.append("%s: %s" % (row, difference(
                    reference, other, ("gateway", name))))
        return {fbtype: len(v) for fbtype, v in reference.items()}

    def add(self, row: str, unit: str, values: Dict[str, float],
            busy: Optional[Dict[str, int]] = None) -> None:
        entry = {"row": row, "unit": unit, "values": values,
                 "busy_periods": busy}
        self.rows.append(entry)
        shown = "  ".join("%s %s" % (name, _show(value, unit))
                          for name, value in values.items())
        print("%-44s %s" % (row, shown), flush=True)

    # -- rows --------------------------------------------------------------

    def report_rows(self) -> None:
        for label, window_name in (("2,000 events, 42 d", "42d"),
                                   ("2,000 events, 365 d", "365d")):
            window = WINDOWS[window_name]
            values, answers = {}, {}
            for measured in self.servers():
                seconds, answer = median_of(
                    self.repeat(measured), self.warm_up(measured),
                    lambda: measured.report(BIG, window))
                values[measured.name] = seconds
                answers[measured.name] = [answer]
            self.add(label.replace("2,000", "{:,}".format(
                self.args.events)), "ms", values,
                self.same(label, answers, window))

    def calendar_rows(self) -> None:
        window = WINDOWS["365d"]
        values, answers = {}, {}
        for measured in self.servers():
            seconds, answer = median_of(
                max(1, self.repeat(measured) // 2), self.warm_up(measured),
                lambda: measured.reports(self.data.team, window))
            values[measured.name] = seconds
            answers[measured.name] = answer
        label = "%d calendars one by one, 365 d" % len(self.data.team)
        self.add(label, "ms", values, self.same(label, answers, window))
        radicale_union = answers["radicale"]
        values, answers = {}, {"radicale": radicale_union}
        for measured in self.servers(radicale=False):
            seconds, answer = median_of(
                self.repeat(measured), self.warm_up(measured),
                lambda: measured.report("/%s/" % TEAM, window))
            values[measured.name] = seconds
            answers[measured.name] = [answer]
        label = "calendar home (%d calendars), 365 d" % len(self.data.team)
        self.add(label, "ms", values, self.same(label, answers, window))

    def restart_row(self) -> None:
        window = WINDOWS["365d"]
        values, answers = {}, {}
        for measured in self.servers():
            times = []
            for _ in range(self.args.restarts):
                measured.server.stop()
                measured.server.start()
                seconds, answer = measured.report(BIG, window)
                times.append(seconds)
            values[measured.name] = statistics.median(times)
            answers[measured.name] = [answer]
        label = "first REPORT after restart, 365 d"
        self.add(label, "ms", values, self.same(label, answers, window))

    def throughput_row(self) -> None:
        """Requests per second of ``--clients`` clients, and the server's
        own CPU time per request (processes and their children, from
        /proc): the second does not depend on what else the machine
        runs."""
        values, cpu = {}, {}
        for measured in self.servers():
            values[measured.name], cpu[measured.name] = \
                self._throughput(measured)
        label = "%d clients, %s events, 42 d" % (
            self.args.clients, "{:,}".format(self.args.events))
        self.add(label, "req/s", values)
        self.rows[-1]["cpu_ms_per_request"] = cpu
        print("%-44s %s" % ("  server CPU per request", "  ".join(
            "%s %.2f ms" % (name, ms) for name, ms in cpu.items())))

    def _throughput(self, measured: Measured) -> Tuple[float, float]:
        window = WINDOWS["42d"]

        def once() -> Tuple[float, bytes]:
            return measured.report(BIG, window)

        for _ in range(self.warm_up(measured)):
            once()
        pid = measured.server.process.pid
        cpu_before = cpu_seconds(pid)
        per_second, ok, failed = throughput(once, self.args.clients,
                                            self.args.seconds)
        cpu = (cpu_seconds(pid) - cpu_before) * 1000 / max(1, ok + failed)
        if failed:
            self.differences.append("%d clients: %s: %d of %d failed" % (
                self.args.clients, measured.name, failed, ok + failed))
        return per_second, cpu

    def one_worker_throughput(self) -> None:
        """The throughput row again for a gateway with one worker, to
        show what the workers add."""
        server = self.gateway.server
        options = server.gateway_options
        server.gateway_options = "workers = 1\n"
        server.stop()
        server.start()
        try:
            per_second, cpu = self._throughput(self.gateway)
        finally:
            server.gateway_options = options
            server.stop()
            server.start()
        row = [r for r in self.rows if r["unit"] == "req/s"][0]
        row["gateway_one_worker"] = per_second
        row["cpu_ms_per_request"]["gateway, 1 worker"] = cpu
        print("%-44s gateway %9.1f req/s (server CPU %.2f ms per request)"
              % ("  the same, gateway with 1 worker", per_second, cpu))

    def outbox_rows(self) -> None:
        for attendees in ([USER], self.data.people):
            for window_name in ("42d", "365d"):
                window = WINDOWS[window_name]
                values, answers = {}, {}
                for measured in self.servers(radicale=False):
                    seconds, answer = median_of(
                        self.repeat(measured), self.warm_up(measured),
                        lambda: measured.post(attendees, window))
                    values[measured.name] = seconds
                    answers[measured.name] = schedule_answers(answer)
                label = "outbox POST, %d attendee%s, %s" % (
                    len(attendees), "s" if len(attendees) > 1 else "",
                    window_name.replace("d", " d"))
                busy = {}
                for attendee in attendees:
                    address = "mailto:%s@example.com" % attendee
                    per_server = {}
                    for name, answer in answers.items():
                        status, data = answer.get(address, ("missing", b""))
                        if status != "2.0":
                            self.differences.append("%s: %s answered %s for"
                                                    " %s" % (label, name,
                                                             status, address))
                        per_server[name] = [data] if data else []
                    counts = self.same("%s (%s)" % (label, attendee),
                                       per_server, window)
                    for fbtype, count in counts.items():
                        busy[fbtype] = busy.get(fbtype, 0) + count
                self.add(label, "ms", values, busy)


def _show(value: float, unit: str) -> str:
    if unit == "ms":
        return "%9.1f ms" % (value * 1000)
    return "%9.1f req/s" % value


#: Rows whose gateway time must be at most this share of Cyrus's.
WARM_TARGET = 0.5
RESTART_TARGET = 3.0
CLIENTS_TARGET = 10.0


def verdicts(rows: List[Dict]) -> List[Dict]:
    """Each row's ratios and its target (design: the issue's table)."""
    out = []
    for row in rows:
        values = row["values"]
        gateway, cyrus = values["gateway"], values["cyrus"]
        radicale = values.get("radicale")
        entry = dict(row)
        if row["unit"] == "req/s":
            entry["gateway_vs_cyrus"] = gateway / cyrus
            entry["target"] = "gateway >= %.0fx Cyrus" % CLIENTS_TARGET
            entry["met"] = gateway >= CLIENTS_TARGET * cyrus
        elif row["row"].startswith("first REPORT"):
            entry["gateway_vs_cyrus"] = gateway / cyrus
            entry["radicale_vs_gateway"] = radicale / gateway
            entry["target"] = "Radicale / gateway >= %.0f" % RESTART_TARGET
            entry["met"] = radicale >= RESTART_TARGET * gateway
        else:
            entry["gateway_vs_cyrus"] = gateway / cyrus
            if radicale:
                entry["radicale_vs_gateway"] = radicale / gateway
            entry["target"] = "gateway / Cyrus <= %.1f" % WARM_TARGET
            entry["met"] = gateway <= WARM_TARGET * cyrus
        out.append(entry)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--calendars", type=int, default=20)
    parser.add_argument("--per-calendar", type=int, default=500)
    parser.add_argument("--attendees", type=int, default=20)
    parser.add_argument("--per-attendee", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7,
                        help="timed requests per row and server (median)")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15,
                        help="how long the clients ask, per server")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="the gateway's [gateway] workers")
    parser.add_argument("--quick", action="store_true",
                        help="small data, for a smoke run")
    parser.add_argument("--folder", help="keep servers' data here (default:"
                        " a temporary folder, removed afterwards)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.events, args.calendars, args.per_calendar = 200, 4, 50
        args.attendees, args.per_attendee = 4, 50
        args.repeat, args.restarts, args.seconds = 3, 1, 3
    data = Data(args.seed, args.events, args.calendars, args.per_calendar,
                args.attendees, args.per_attendee)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fbbench3-") as tmp:
        folder = args.folder or tmp
        gateway = Server("gateway", os.path.join(folder, "gateway"),
                         data.users, "workers = %d\n" % args.workers)
        radicale = Server("radicale", os.path.join(folder, "radicale"),
                          data.users)
        cyrus = Cyrus(os.path.join(folder, "cyrus"),
                      {user: PASSWORD for user in data.users})
        began = time.monotonic()
        try:
            load(data, gateway, radicale, cyrus, folder)
            print("%s; loaded and primed in %.0f s; gateway: %d workers; "
                  "load average %.1f %.1f %.1f" % ((
                      data.description, time.monotonic() - began,
                      args.workers) + load_before), flush=True)
            run = Run(args, data, Measured("gateway", gateway),
                      Measured("radicale", radicale),
                      Measured("cyrus", cyrus))
            run.report_rows()
            run.calendar_rows()
            run.outbox_rows()
            run.throughput_row()
            memory = memory_kb(gateway.process.pid)
            if args.workers > 1:
                run.one_worker_throughput()
            run.restart_row()
        finally:
            for server in (gateway, radicale, cyrus):
                server.stop()
    load_after = os.getloadavg()
    results = verdicts(run.rows)
    print("gateway memory after the run: %d processes, Rss %.0f MB, Pss %.0f"
          " MB; load average now %.1f %.1f %.1f" % ((
              memory["processes"], memory["Rss"] / 1024,
              memory["Pss"] / 1024) + load_after))
    for entry in results:
        print("%-44s gateway/Cyrus %5.2f%s  target %s: %s" % (
            entry["row"], entry["gateway_vs_cyrus"],
            "  Radicale/gateway %6.1f" % entry["radicale_vs_gateway"]
            if "radicale_vs_gateway" in entry else "",
            entry["target"], "met" if entry["met"] else "NOT met"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(),
                       "cpus": os.cpu_count(), "args": vars(args),
                       "data": data.description,
                       "load_before": load_before, "load_after": load_after,
                       "gateway_memory_kb": memory, "rows": results,
                       "differences": run.differences}, f, indent=2,
                      default=str)
    for note in run.differences:
        print("DIFFERENT: %s" % note)
    return 1 if run.differences else 0


def load(data: Data, gateway: Server, radicale: Server, cyrus: Cyrus,
         folder: str) -> None:
    """The same calendars in all three; one REPORT per calendar in each
    (Radicale's item cache, which the gateway reads too, is built then).
    A folder that already holds this data (``--folder``, a marker file
    names it) is used as it is."""
    marker = os.path.join(folder, "loaded")
    try:
        with open(marker) as f:
            loaded = f.read() == data.description
    except OSError:
        loaded = False
    if not loaded:
        for server in (gateway, radicale):
            for path, objects in data.calendars.items():
                server.store(path, objects)
    cyrus.start()
    if not loaded:
        refused = cyrus.store(data.calendars)
        if refused:
            raise RuntimeError("Cyrus refused %d objects: %s" % (
                len(refused), refused[:3]))
    for server in (gateway, radicale):
        server.start()
    window = WINDOWS["42d"]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda server: [server.report(path, *window)
                                      for path in data.calendars],
                      (gateway, radicale, cyrus)))
    with open(marker, "w") as f:
        f.write(data.description)


if __name__ == "__main__":
    sys.exit(main())
