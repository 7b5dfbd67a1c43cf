#!/usr/bin/env python3
"""One outbox POST mixing local, EWS, Graph and Exchange 2003 attendees.

Starts the project's emulators of the three Exchange interfaces (the same
ones the tests use: SOAP GetUserAvailability with Basic auth, Graph
getSchedule over TLS with OAuth2 client credentials from a token endpoint,
OWA's cmd=freebusy with Basic auth), each answering after ``--delay``
seconds (Graph and OWA a little more and less, so one is the slowest), and
a gateway with one provider section for each.  It times a POST asking for
a local user and one mailbox on each system, against a POST for the
slowest system alone, as medians over ``--repeat`` fresh POSTs (caching
off).  A serial gateway would need about the sum of the delays; the ratio
printed is (all in one POST) / (slowest alone), ideally close to 1.

Usage:  .venv/bin/python bench/outbox_mixed.py [--delay 1] [--repeat 5]
"""

import argparse
import datetime
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from emulators import ews_server, graph_server, owa_freebusy  # noqa: E402
from emulators.tls import Pki  # noqa: E402
from emulators.token_endpoint import IdentityProvider  # noqa: E402

UTC = datetime.timezone.utc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def delayed(answer, seconds: float):
    def slow(handler):
        time.sleep(seconds)
        return answer(handler)
    return slow


def request_body(attendees, start, end) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//bench//EN",
             "METHOD:REQUEST", "BEGIN:VFREEBUSY", "UID:bench",
             "DTSTAMP:20260101T000000Z", "DTSTART:" + start, "DTEND:" + end,
             "ORGANIZER:mailto:bob@example.com"]
    lines += ["ATTENDEE:mailto:" + a for a in attendees]
    lines += ["END:VFREEBUSY", "END:VCALENDAR"]
    return ("\r\n".join(lines) + "\r\n").encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="fbmixed-"))
    today = datetime.datetime.now(UTC).replace(hour=0, minute=0, second=0,
                                               microsecond=0)
    start, end = today, today + datetime.timedelta(days=7)
    stamp = "%Y%m%dT%H%M%SZ"
    busy = (start + datetime.timedelta(hours=9),
            start + datetime.timedelta(hours=10))

    pki = Pki(work / "pki")
    idp = IdentityProvider(pki)
    ews = ews_server.EwsServer(
        {"carol@ews.example": ews_server.Mailbox(
            events=[(busy[0], busy[1], "Busy")])},
        users={"fbsync": "Secret-1"})
    ews.script = [("slow", args.delay)] * (4 * args.repeat + 10)
    graph = graph_server.GraphServer(
        pki, {"finder@graph.example": graph_server.Mailbox([]),
              "dave@graph.example": graph_server.Mailbox([
                  graph_server.Event(busy[0].strftime(stamp),
                                     busy[1].strftime(stamp), "busy")])},
        idp=idp)
    graph.script = [("slow", args.delay * 1.2)] * (4 * args.repeat + 10)
    owa = owa_freebusy.OwaFreeBusy([owa_freebusy.Mailbox(
        "erin@owa.example", "Erin", events=[(busy[0], busy[1], "2")])])
    owa.answer = delayed(owa.answer, args.delay * 0.8)

    port = free_port()
    (work / "users").write_text("alice:alice\nbob:bob\n")
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
        level = warning
        [gateway]
        domains = example.com
        timeout = 20
        [provider:ews]
        type = ews
        domains = ews.example
        url = %s
        username = fbsync
        password = Secret-1
        timeout = 15
        cache_ttl = 0
        [provider:graph]
        type = graph
        domains = graph.example
        url = %s
        ca_file = %s
        auth = oauth2
        authority = %s
        tenant = %s
        client_id = %s
        client_secret = %s
        mailbox = finder@graph.example
        timeout = 15
        cache_ttl = 0
        [provider:owa]
        type = exchange2003
        domains = owa.example
        url = %s/public/
        username = CORP\\fbsync
        password = pw
        timeout = 15
        cache_ttl = 0
        """) % (port, ews.url, graph.url, pki.ca_file, idp.authority,
                idp.tenant, idp.client_id, idp.client_secret, owa.base))
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config",
         str(work / "gw.ini")], cwd=str(ROOT), stdout=subprocess.DEVNULL,
        stderr=open(work / "server.log", "wb"))
    url = "http://127.0.0.1:%d" % port
    try:
        for _ in range(200):
            try:
                requests.options(url + "/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        session = requests.Session()
        session.auth = ("alice", "alice")
        session.request("MKCALENDAR", url + "/alice/cal/")
        session.put(url + "/alice/cal/a.ics", data=(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//b//EN\r\n"
            "BEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:%s\r\nDTEND:%s\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n" % (
                busy[0].strftime(stamp), busy[1].strftime(stamp))).encode(),
            headers={"Content-Type": "text/calendar"})

        def post(attendees):
            began = time.monotonic()
            response = requests.post(
                url + "/bob/.schedule-outbox/", auth=("bob", "bob"),
                data=request_body(attendees, start.strftime(stamp),
                                  end.strftime(stamp)),
                headers={"Content-Type": "text/calendar"}, timeout=60)
            took = time.monotonic() - began
            statuses = [line.split(">")[1].split(";")[0] for line in
                        response.text.split("<C:request-status")[1:]] \
                if "<C:request-status" in response.text else []
            return took, response.status_code, response.text, statuses

        everyone = ["alice@example.com", "carol@ews.example",
                    "dave@graph.example", "erin@owa.example"]
        _, status, text, _ = post(everyone)      # warm-up: tokens, sessions
        assert status == 200, text
        assert text.count("2.0;Success") == 4, text
        alone = [post(["dave@graph.example"])[0]
                 for _ in range(args.repeat)]
        mixed = [post(everyone)[0] for _ in range(args.repeat)]
    finally:
        process.terminate()
        process.wait(20)
        for server in (ews, graph, owa, idp):
            server.close()
    slowest, both = statistics.median(alone), statistics.median(mixed)
    serial = args.delay * (1 + 1.2 + 0.8)
    print("local + EWS (%.2f s) + Graph (%.2f s) + Exchange 2003 (%.2f s),"
          " medians of %d POSTs:" % (args.delay, args.delay * 1.2,
                                     args.delay * 0.8, args.repeat))
    print("  slowest (Graph) alone    %.3f s" % slowest)
    print("  all four in one POST     %.3f s  (x%.2f of alone; serial "
          "would be about %.1f s)" % (both, both / slowest, serial))
    return 0


if __name__ == "__main__":
    os.environ.pop("http_proxy", None)
    sys.exit(main())
