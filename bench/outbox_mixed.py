#!/usr/bin/env python3
"""One outbox POST mixing a local user with attendees of every foreign system.

Starts the tests' own emulators of the seven systems the built-in
providers speak to, each answering after a fixed delay of its own (a
multiple of ``--delay``): EWS (SOAP, Basic), Graph (TLS, OAuth2 client
credentials from a token endpoint), Exchange 2003 OWA (Basic), Google
(TLS, a service account's JWT grant at the same token endpoint), Nylas
(TLS, API key), Zonio (TLS, client certificate) and Domino (TLS, Basic);
and a gateway with one provider section each.  Every answer is checked:
each attendee 2.0 with exactly the busy hour its source holds (a
different hour per system, so answers cannot be swapped unnoticed).

It times a POST for each system alone and one for all eight attendees,
as medians over ``--repeat`` fresh POSTs (caching off).  A serial
gateway would need about the sum of the alone times; the gateway asks
every provider in parallel, so the mixed POST should take about as long
as the slowest system alone.

Usage:  .venv/bin/python bench/outbox_mixed.py [--delay 1] [--repeat 5]
"""

import argparse
import datetime
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import Gateway  # noqa: E402
from emulators import (domino_server, ews_server, google_server,  # noqa: E402
                       graph_server, nylas_server, owa_freebusy, zonio_server)
from emulators.tls import Pki  # noqa: E402
from emulators.token_endpoint import (IdentityProvider,  # noqa: E402
                                      service_account_key_file)
from fbcheck import assert_same_periods, periods_of  # noqa: E402
from fbcheck import schedule_response  # noqa: E402
from icaldata import event, freebusy_request  # noqa: E402

UTC = datetime.timezone.utc
STAMP = "%Y%m%dT%H%M%SZ"
#: the scope a Google Workspace admin grants the service account
GOOGLE_FREEBUSY_SCOPE = "https://www.googleapis.com/auth/calendar.freebusy"
NYLAS_API_KEY = "nyk_v0_bench"
NYLAS_GRANT = "grant-of-the-bench-mailbox"


class System(NamedTuple):
    name: str
    attendee: str
    #: its emulator answers after this many times --delay (0: local)
    share: float


SYSTEMS = [System("local", "alice@example.com", 0.0),
           System("EWS", "carol@ews.example", 1.0),
           System("Graph", "dave@graph.example", 1.2),
           System("Exchange 2003", "erin@owa.example", 0.8),
           System("Google", "frank@gws.example", 1.1),
           System("Nylas", "grace@nylas.example", 0.9),
           System("Zonio", "heidi@zonio.example", 0.7),
           System("Domino", "ivan@domino.example", 0.6)]


def delayed(answer, seconds: float):
    """OWA's answer function held back by ``seconds`` (its emulator has
    no script of its own)."""
    def slow(handler):
        time.sleep(seconds)
        return answer(handler)
    return slow


def busy_hour(day: datetime.datetime, index: int):
    """System ``index``'s one busy hour: 09:00 UTC plus ``index`` hours."""
    start = day + datetime.timedelta(hours=9 + index)
    return start, start + datetime.timedelta(hours=1)


def start_emulators(work: pathlib.Path, day: datetime.datetime,
                    delay: float, calls: int):
    """The seven emulators, their provider sections, and the scripts that
    slow each call down (to check afterwards that none ran out)."""
    seconds = {s.name: s.share * delay for s in SYSTEMS}
    busy = {s.name: busy_hour(day, i) for i, s in enumerate(SYSTEMS)}
    text = {name: (a.strftime(STAMP), b.strftime(STAMP))
            for name, (a, b) in busy.items()}
    pki = Pki(work / "pki")
    idp = IdentityProvider(pki)
    idp.google_scope = GOOGLE_FREEBUSY_SCOPE

    ews = ews_server.EwsServer(
        {"carol@ews.example": ews_server.Mailbox(
            events=[busy["EWS"] + ("Busy",)])},
        users={"fbsync": "Secret-1"})
    graph = graph_server.GraphServer(
        pki, {"finder@graph.example": graph_server.Mailbox([]),
              "dave@graph.example": graph_server.Mailbox([
                  graph_server.Event(*text["Graph"], "busy")])}, idp=idp)
    owa = owa_freebusy.OwaFreeBusy([owa_freebusy.Mailbox(
        "erin@owa.example", "Erin", events=[busy["Exchange 2003"] + ("2",)])])
    owa.answer = delayed(owa.answer, seconds["Exchange 2003"])
    google = google_server.GoogleServer(pki, {
        "frank@gws.example": google_server.Calendar([text["Google"]])},
        idp=idp)
    key_file = service_account_key_file(
        work / "service-account.json", "bench@gateway.iam.example",
        token_uri=idp.google_token_uri, register=idp)
    nylas = nylas_server.NylasServer(pki, {
        "grace@nylas.example": nylas_server.Person([text["Nylas"] +
                                                    ("busy",)])},
        api_key=NYLAS_API_KEY, grants=[NYLAS_GRANT])
    zonio = zonio_server.ZonioServer(pki, {
        "heidi@zonio.example": [zonio_server.Interval(*text["Zonio"])]},
        delay=seconds["Zonio"])
    domino = domino_server.DominoServer(
        pki, {"ivan@domino.example": [text["Domino"]]},
        delay=seconds["Domino"])
    scripted = {"EWS": ews, "Graph": graph, "Google": google,
                "Nylas": nylas}
    for name, server in scripted.items():
        server.script = [("slow", seconds[name])] * calls

    common = "timeout = 15\ncache_ttl = 0\n"
    sections = "".join([
        "[provider:ews]\ntype = ews\ndomains = ews.example\nurl = %s\n"
        "username = fbsync\npassword = Secret-1\n%s" % (ews.url, common),
        "[provider:graph]\ntype = graph\ndomains = graph.example\nurl = %s\n"
        "ca_file = %s\nauth = oauth2\nauthority = %s\ntenant = %s\n"
        "client_id = %s\nclient_secret = %s\nmailbox = finder@graph.example"
        "\n%s" % (graph.url, pki.ca_file, idp.authority, idp.tenant,
                  idp.client_id, idp.client_secret, common),
        "[provider:owa]\ntype = exchange2003\ndomains = owa.example\n"
        "url = %s/public/\nusername = CORP\\fbsync\npassword = pw\n%s"
        % (owa.base, common),
        "[provider:google]\ntype = google\ndomains = gws.example\nurl = %s\n"
        "ca_file = %s\nauth = google\nservice_account_file = %s\n"
        "subject = admin@gws.example\n%s" % (google.url, pki.ca_file,
                                             key_file, common),
        "[provider:nylas]\ntype = nylas\ndomains = nylas.example\nurl = %s\n"
        "ca_file = %s\ntoken = %s\ngrant_id = %s\n%s"
        % (nylas.url, pki.ca_file, NYLAS_API_KEY, NYLAS_GRANT, common),
        "[provider:zonio]\ntype = zonio\ndomains = zonio.example\nurl = %s\n"
        "ca_file = %s\nclient_cert = %s\nclient_key = %s\n%s"
        % (zonio.url, pki.ca_file, pki.client_cert, pki.client_key, common),
        "[provider:domino]\ntype = domino\ndomains = domino.example\n"
        "url = %s\nca_file = %s\nusername = %s\npassword = %s\n%s"
        % (domino.url, pki.ca_file, domino.username, domino.password,
           common)])
    servers = [ews, graph, owa, google, nylas, zonio, domino, idp]
    return servers, sections, scripted, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="fbmixed-"))
    day = datetime.datetime.now(UTC).replace(hour=0, minute=0, second=0,
                                             microsecond=0)
    window = (day.strftime(STAMP),
              (day + datetime.timedelta(days=7)).strftime(STAMP))
    # each system is asked by the warm-up, its own POSTs and the mixed ones
    calls = 2 * args.repeat + 1 + 10
    servers, sections, scripted, busy = start_emulators(
        work, day, args.delay, calls)
    gateway = Gateway(work / "gateway", {"alice": "alice", "bob": "bob"},
                      "example.com", "timeout = 20\n" + sections, None)
    expected = {"mailto:" + s.attendee: {"BUSY": [busy[s.name]]}
                for s in SYSTEMS}

    def post(attendees: List[str]) -> float:
        """One POST by bob; its time, after checking every answer."""
        began = time.monotonic()
        response = gateway.post("/bob/.schedule-outbox/", freebusy_request(
            attendees, *window, organizer="mailto:bob@example.com"), "bob")
        took = time.monotonic() - began
        answers = schedule_response(response)
        assert [a[0] for a in answers] == ["mailto:" + a for a in attendees]
        for recipient, status, data in answers:
            assert status == "2.0", (recipient, status, response.text)
            assert_same_periods(periods_of(data), expected[recipient])
        return took

    alone: Dict[str, List[float]] = {s.name: [] for s in SYSTEMS}
    mixed: List[float] = []
    everyone = [s.attendee for s in SYSTEMS]
    try:
        gateway.start()
        calendar = gateway.mkcalendar("alice", "cal")
        gateway.put(calendar + "a.ics", event("a", *busy["local"]), "alice")
        post(everyone)                  # warm-up: tokens, TLS sessions
        for _ in range(args.repeat):
            for system in SYSTEMS:
                alone[system.name].append(post([system.attendee]))
            mixed.append(post(everyone))
    finally:
        gateway.stop()
        for server in servers:
            server.close()
    for name, server in scripted.items():
        assert server.script, "%s answered some calls without delay" % name

    medians = {name: statistics.median(times)
               for name, times in alone.items()}
    for system in SYSTEMS:
        assert medians[system.name] >= system.share * args.delay, \
            "%s answered before its emulator's delay" % system.name
    slowest = max(SYSTEMS, key=lambda s: medians[s.name])
    together, serial = statistics.median(mixed), sum(medians.values())
    print("One outbox POST over a local user and seven foreign systems, "
          "medians of %d POSTs, caching off:" % args.repeat)
    print("  %-24s %8s %9s" % ("POST", "delay", "time"))
    for system in SYSTEMS:
        print("  %-24s %8s %7.3f s" % (
            system.name + " alone", "%.2f s" % (system.share * args.delay)
            if system.share else "-", medians[system.name]))
    print("  %-24s %8s %7.3f s  (x%.2f of the slowest alone, %s)" % (
        "all eight in one POST", "", together,
        together / medians[slowest.name], slowest.name))
    print("  %-24s %8s %7.3f s  (one system after another)" % (
        "sum of the alone times", "", serial))
    return 0


if __name__ == "__main__":
    # the gateway and the emulators talk over loopback only
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ.pop(key, None)
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    sys.exit(main())
