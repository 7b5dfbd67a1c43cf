"""Memory of a gateway process under hostile windows and degenerate rules.

Starts a real gateway (``python -m gateway serve``) on a loopback port with
one calendar that holds the objects the base issue named as memory
hazards, then reads the process's resident set size (VmRSS) while it:

1. walks 1,830-day windows 40 years apart across the answered years
   (1800-3000), forward and back, over a weekly, an hourly, a minutely
   and a FREQ=SECONDLY event and 500 ordinary ones;
2. replaces every ordinary object 5 times (the cache must drop replaced
   objects), asking a 42-day window after each round;
3. asks 20 new 42-day windows, ten years apart, on a calendar of 2,000
   weekly events.

Prints RSS after start, after each phase, and the peak; ``--json FILE``
writes the same.  The process is stopped by its own pid.  Run:

    .venv/bin/python bench/memory_walk.py
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
FB = ('<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
      '<C:time-range start="%s" end="%s"/></C:free-busy-query>')


def event(uid, *lines):
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\n"
            "BEGIN:VEVENT\r\nUID:%s\r\nDTSTAMP:20260101T000000Z\r\n" % uid +
            "\r\n".join(lines) + "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    for line in pathlib.Path("/proc/%d/status" % pid).read_text() \
            .splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="fbgw-mem-"))
    port = free_port()
    (work / "users").write_text("alice:alice\n")
    (work / "rights").write_text((ROOT / "config" / "rights").read_text())
    (work / "gw.ini").write_text(textwrap.dedent("""\
        [server]
        hosts = 127.0.0.1:%d
        [auth]
        type = htpasswd
        htpasswd_filename = users
        htpasswd_encryption = plain
        delay = 0
        [rights]
        type = from_file
        file = rights
        [storage]
        filesystem_folder = collections
        [logging]
        level = error
        [gateway]
        domains = example.com
        """ % port))
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config",
         str(work / "gw.ini")], cwd=str(ROOT),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d" % port
    session = requests.Session()
    session.auth = ("alice", "alice")
    figures = {}
    peak = 0.0
    try:
        for _ in range(200):
            try:
                session.options(url + "/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)

        def put(path, text):
            response = session.put(url + path, data=text.encode(),
                                   headers={"Content-Type": "text/calendar"})
            assert response.status_code in (201, 204), response.text

        def report(path, start, end):
            nonlocal peak
            response = session.request(
                "REPORT", url + path, data=FB % (start, end),
                headers={"Depth": "1", "Content-Type": "application/xml"})
            assert response.status_code == 200, response.text
            peak = max(peak, rss_mb(process.pid))

        assert session.request("MKCALENDAR", url + "/alice/h/") \
            .status_code == 201
        assert session.request("MKCALENDAR", url + "/alice/w/") \
            .status_code == 201
        for uid, rule, length in (("weekly", "FREQ=WEEKLY", "1100"),
                                  ("hourly", "FREQ=HOURLY", "1015"),
                                  ("minutely", "FREQ=MINUTELY;INTERVAL=5",
                                   "1001"),
                                  ("secondly", "FREQ=SECONDLY", "1000")):
            put("/alice/h/%s.ics" % uid, event(
                uid, "DTSTART:18000101T100000Z",
                "DTEND:18000101T%s01Z" % length[:4], "RRULE:" + rule))
        for n in range(500):
            put("/alice/h/e%d.ics" % n, event(
                "e%d" % n, "DTSTART:2026%02d%02dT090000Z" % (
                    n % 12 + 1, n % 28 + 1),
                "DTEND:2026%02d%02dT100000Z" % (n % 12 + 1, n % 28 + 1)))
        for n in range(2000):
            put("/alice/w/w%d.ics" % n, event(
                "w%d" % n, "DTSTART:2020%02d%02dT%02d0000Z" % (
                    n % 12 + 1, n % 28 + 1, n % 10 + 8),
                "DTEND:2020%02d%02dT%02d3000Z" % (
                    n % 12 + 1, n % 28 + 1, n % 10 + 8),
                "RRULE:FREQ=WEEKLY"))
        report("/alice/h/", "20260101T000000Z", "20260212T000000Z")
        figures["after start and load"] = rss_mb(process.pid)
        print("loaded: %.1f MB" % figures["after start and load"],
              flush=True)
        began = time.monotonic()
        years = list(range(1800, 2995, 40))
        for year in years + years[::-1]:
            report("/alice/h/", "%d0101T000000Z" % year,
                   "%d0101T000000Z" % (year + 5))
        figures["after 1830-day walks (%d REPORTs, %.0f s)" % (
            2 * len(years), time.monotonic() - began)] = rss_mb(process.pid)
        for round_ in range(5):
            for n in range(500):
                put("/alice/h/e%d.ics" % n, event(
                    "e%d" % n, "DTSTART:2026%02d%02dT%02d0000Z" % (
                        n % 12 + 1, n % 28 + 1, round_ + 9),
                    "DTEND:2026%02d%02dT%02d3000Z" % (
                        n % 12 + 1, n % 28 + 1, round_ + 9)))
            report("/alice/h/", "20260101T000000Z", "20260212T000000Z")
        figures["after replacing 500 objects 5 times"] = rss_mb(process.pid)
        for year in range(2020, 2220, 10):
            report("/alice/w/", "%d0301T000000Z" % year,
                   "%d0412T000000Z" % year)
        figures["after 20 new 42-day windows on 2,000 weekly events"] = \
            rss_mb(process.pid)
        figures["peak"] = peak
    finally:
        process.terminate()
        process.wait(20)
    for name, value in figures.items():
        print("%-60s %7.1f MB" % (name, value))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    os.environ.pop("http_proxy", None)
    main()
