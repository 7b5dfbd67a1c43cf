"""The EWS face: GetUserAvailability for local users, Autodiscover, and
what exchangelib sends before it (ConvertId, GetServerTimeZones).

One real gateway for the module, asked over HTTP: by exchangelib 5.6
(Basic auth, plain HTTP, its own version probe and time-zone request) in
several requester time zones, and with raw SOAP bodies in the shapes
Exchange, exchangelib and DavMail send, for the views exchangelib never
asks for, malformed bodies, limits and the order of per-mailbox errors.
A second gateway with anonymous free/busy on and a tiny request limit
shows what anonymous and throttled callers get.
"""

import datetime
import zoneinfo
from typing import Dict, List, Tuple
from xml.sax.saxutils import escape

import pytest
import requests
from exchangelib import BASIC, Configuration, Credentials
from exchangelib.errors import (ErrorMailRecipientNotFound, ErrorServerBusy,
                                ErrorTimeIntervalTooBig)
from exchangelib.ewsdatetime import EWSDateTime, EWSTimeZone
from exchangelib.protocol import FailFast, Protocol
from lxml import etree
from tzlocal.windows_tz import win_tz

from conftest import Gateway
from gateway.faces.ews import busy_spans, merged_digits
from gateway.model import BUSY_UNAVAILABLE, LookupResult, Period, Window
from icaldata import PRIVATE_WORDS, event

UTC = datetime.timezone.utc
S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
AD_REQUEST = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
              "requestschema/2006")
AD_RESPONSE = ("http://schemas.microsoft.com/exchange/autodiscover/"
               "responseschema/2006")
AD_OUTLOOK = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
              "responseschema/2006a")
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw",
         "dave": "dave-pw", "exchange": "exchange-pw"}
#: Central European time as exchangelib sends it (foreign-apis.md 1).
ROMANCE = ("<t:TimeZone><t:Bias>-60</t:Bias><t:StandardTime><t:Bias>0"
           "</t:Bias><t:Time>03:00:00</t:Time><t:DayOrder>5</t:DayOrder>"
           "<t:Month>10</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek>"
           "</t:StandardTime><t:DaylightTime><t:Bias>-60</t:Bias><t:Time>"
           "02:00:00</t:Time><t:DayOrder>5</t:DayOrder><t:Month>3</t:Month>"
           "<t:DayOfWeek>Sunday</t:DayOfWeek></t:DaylightTime></t:TimeZone>")
#: DavMail's zero-bias zone.
DAVMAIL_UTC = ROMANCE.replace("<t:Bias>-60</t:Bias>", "<t:Bias>0</t:Bias>")


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


#: alice's busy time on Monday 2026-01-05 (UTC) as the face must show it
#: for the window 07:00-17:00: the first event starts before the window.
ALICE_EVENTS = [("Busy", "2026-01-05T07:00", "2026-01-05T07:30"),
                ("Busy", "2026-01-05T09:00", "2026-01-05T10:00"),
                ("Tentative", "2026-01-05T09:30", "2026-01-05T10:30"),
                ("Tentative", "2026-01-05T13:00", "2026-01-05T14:00"),
                ("OOF", "2026-01-05T15:00", "2026-01-05T16:00")]
#: The same in half hours from 07:00: highest status per slot.
ALICE_DIGITS = "20002210000011003300"
#: Events either side of the 2026 daylight-saving switches.
SWITCH_EVENTS = {"Europe/Berlin": ("2026-03-28T12:00", "2026-03-30T12:00", [
    ("2026-03-28T15:00", "2026-03-28T16:00"),
    ("2026-03-30T07:00", "2026-03-30T08:00")]),
    "America/New_York": ("2026-03-07T12:00", "2026-03-09T18:00", [
        ("2026-03-07T20:00", "2026-03-07T21:00"),
        ("2026-03-09T14:00", "2026-03-09T15:00")])}
BOB_AVAILABILITY = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//t//EN
BEGIN:VAVAILABILITY
UID:bob-hours
DTSTAMP:20260101T000000Z
DTSTART;TZID=America/New_York:20250106T000000
BEGIN:AVAILABLE
UID:bob-weekdays
DTSTAMP:20260101T000000Z
DTSTART;TZID=America/New_York:20250106T090000
DTEND;TZID=America/New_York:20250106T170000
RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR
END:AVAILABLE
BEGIN:AVAILABLE
UID:bob-saturday
DTSTAMP:20260101T000000Z
DTSTART;TZID=America/New_York:20250111T100000
DTEND;TZID=America/New_York:20250111T120000
RRULE:FREQ=WEEKLY;BYDAY=SA
END:AVAILABLE
END:VAVAILABILITY
END:VCALENDAR
""".replace("\n", "\r\n")
#: carol's hours: bob's, in Tokyo.
CAROL_AVAILABILITY = BOB_AVAILABILITY.replace("America/New_York",
                                              "Asia/Tokyo")
OPT_OUT = ('<G:freebusy-opt-out xmlns:G="urn:freebusy-gateway">true'
           '</G:freebusy-opt-out>')


def _stamp(text: str) -> str:
    return text.replace("-", "").replace(":", "") + "00Z"


def _oof(uid: str, start: str, end: str) -> str:
    """A stored VFREEBUSY: how a calendar holds out-of-office time."""
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "BEGIN:VFREEBUSY\r\nUID:%s\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:%s\r\nDTEND:%s\r\nFREEBUSY;FBTYPE=BUSY-UNAVAILABLE:"
            "%s/%s\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n" % (
                uid, start, end, start, end))


def _populate(gateway: Gateway) -> None:
    calendar = gateway.mkcalendar("alice", "work")
    items = [("early", "2026-01-05T06:30", "2026-01-05T07:30", ""),
             ("busy", "2026-01-05T09:00", "2026-01-05T10:00", ""),
             ("maybe", "2026-01-05T09:30", "2026-01-05T10:30",
              "STATUS:TENTATIVE\r\n"),
             ("later", "2026-01-05T13:00", "2026-01-05T14:00",
              "STATUS:TENTATIVE\r\n")]
    for zone, (_, _, spans) in SWITCH_EVENTS.items():
        for index, (start, end) in enumerate(spans):
            items.append(("%s-%d" % (zone.split("/")[1], index), start, end,
                          ""))
    for uid, start, end, extra in items:
        gateway.put(calendar + uid + ".ics", event(uid, _stamp(start),
                                                   _stamp(end), extra),
                    "alice")
    gateway.put(calendar + "away.ics", _oof(
        "away", "20260105T150000Z", "20260105T160000Z"), "alice")
    for user in ("bob", "carol", "dave", "exchange"):
        gateway.request("PROPFIND", "/%s/" % user, user=user,
                        headers={"Depth": "0"})
    for user, hours in (("bob", BOB_AVAILABILITY),
                        ("carol", CAROL_AVAILABILITY)):
        response = gateway.proppatch(
            "/%s/.schedule-inbox/" % user, "<C:calendar-availability>%s"
            "</C:calendar-availability>" % escape(hours), user)
        assert response.status_code == 207, response.text
    response = gateway.proppatch("/carol/", OPT_OUT, "carol")
    assert response.status_code == 207 and "200 OK" in response.text


def _started(gateway: Gateway) -> Gateway:
    """Start without Radicale's one-second pause before every 5xx
    answer ([server] delay_on_error), which SOAP faults would get."""
    text = gateway.config_path.read_text()
    gateway.config_path.write_text(text.replace(
        "[server]\n", "[server]\ndelay_on_error = 0\n", 1))
    return gateway.start()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """alice has events, bob working hours (VAVAILABILITY), carol opted
    out, dave nothing; the default working hours are not the built-in
    default, so the answer shows they come from the ini."""
    gateway = _started(Gateway(
        tmp_path_factory.mktemp("ews-face"), USERS, "example.com",
        "default_working_hours = Mon-Thu 08:00-16:30 Europe/Berlin\n",
        None))
    try:
        _populate(gateway)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory):
    """anonymous_freebusy = yes and 4 requests a minute per caller."""
    gateway = _started(Gateway(
        tmp_path_factory.mktemp("ews-face-open"), USERS, "example.com",
        "anonymous_freebusy = yes\nrequests_per_minute = 4\n", None))
    try:
        _populate(gateway)
        yield gateway
    finally:
        gateway.stop()


# -- talking SOAP -------------------------------------------------------------


def envelope(operation: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="%s" '
            'xmlns:m="%s" xmlns:t="%s"><s:Header><t:RequestServerVersion '
            'Version="Exchange2016"/></s:Header><s:Body>%s</s:Body>'
            '</s:Envelope>' % (S, M, T, operation))


def mailbox(address: str, routing: str = "<t:RoutingType>SMTP</t:RoutingType>",
            attendee: str = "Required") -> str:
    return ("<t:MailboxData><t:Email><t:Address>%s</t:Address>%s</t:Email>"
            "<t:AttendeeType>%s</t:AttendeeType><t:ExcludeConflicts>false"
            "</t:ExcludeConflicts></t:MailboxData>" % (address, routing,
                                                       attendee))


def availability(addresses, start: str, end: str, view: str = "FreeBusy",
                 interval: str = "30", zone: str = ROMANCE,
                 extra: str = "") -> str:
    """A GetUserAvailabilityRequest (addresses are bare or MailboxData)."""
    boxes = "".join(a if a.startswith("<") else mailbox(a)
                    for a in addresses)
    return envelope(
        "<m:GetUserAvailabilityRequest>%s<m:MailboxDataArray>%s"
        "</m:MailboxDataArray><t:FreeBusyViewOptions><t:TimeWindow>"
        "<t:StartTime>%s</t:StartTime><t:EndTime>%s</t:EndTime>"
        "</t:TimeWindow><t:MergedFreeBusyIntervalInMinutes>%s"
        "</t:MergedFreeBusyIntervalInMinutes><t:RequestedView>%s"
        "</t:RequestedView></t:FreeBusyViewOptions>%s"
        "</m:GetUserAvailabilityRequest>" % (zone, boxes, start, end,
                                             interval, view, extra))


def post(gateway: Gateway, body, user="bob", path="/EWS/Exchange.asmx",
         **kwargs) -> requests.Response:
    return gateway.request("POST", path, body, user=user, headers={
        "Content-Type": "text/xml; charset=utf-8"}, **kwargs)


def soap_body(response: requests.Response):
    """The Body's one child; every answer has a ServerVersionInfo."""
    assert response.headers["Content-Type"].startswith("text/xml")
    root = etree.fromstring(response.content)
    info = root.find("{%s}Header/{%s}ServerVersionInfo" % (S, T))
    assert info is not None and info.get("MajorVersion") == "15"
    return root.find("{%s}Body" % S)[0]


def fault_code(response: requests.Response) -> Tuple[str, str]:
    """(faultcode, detail ResponseCode) of a SOAP 1.1 fault."""
    assert response.status_code == 500, response.text
    fault = soap_body(response)
    assert fault.tag == "{%s}Fault" % S, response.text
    assert fault.findtext("faultstring")
    return fault.findtext("faultcode"), fault.findtext(
        "detail/{%s}ResponseCode" % E)


def mailbox_answers(response: requests.Response) -> List[Dict]:
    """One dict per FreeBusyResponse, in order."""
    assert response.status_code == 200, response.text
    answer = soap_body(response)
    assert answer.tag == "{%s}GetUserAvailabilityResponse" % M
    out = []
    for element in answer.iterfind("{%s}FreeBusyResponseArray/"
                                   "{%s}FreeBusyResponse" % (M, M)):
        message = element.find("{%s}ResponseMessage" % M)
        view = element.find("{%s}FreeBusyView" % M)
        out.append({
            "class": message.get("ResponseClass"),
            "code": message.findtext("{%s}ResponseCode" % M),
            "type": view.findtext("{%s}FreeBusyViewType" % T),
            "merged": view.findtext("{%s}MergedFreeBusy" % T),
            "events": [(e.findtext("{%s}BusyType" % T),
                        e.findtext("{%s}StartTime" % T),
                        e.findtext("{%s}EndTime" % T))
                       for e in view.iterfind("{%s}CalendarEventArray/"
                                              "{%s}CalendarEvent" % (T, T))],
            "hours": view.find("{%s}WorkingHours" % T),
            "view": view})
    return out


def hours_of(answer) -> Tuple[str, List[Tuple[str, str, str]]]:
    """(zone Bias, [(days, start, end)]) of an answer's WorkingHours."""
    hours = answer["hours"]
    return hours.findtext("{%s}TimeZone/{%s}Bias" % (T, T)), [
        tuple(p.findtext("{%s}%s" % (T, name)) for name in (
            "DayOfWeek", "StartTimeInMinutes", "EndTimeInMinutes"))
        for p in hours.iter("{%s}WorkingPeriod" % T)]


def romance(events):
    """UTC (kind, start, end) -> naive Central European winter time."""
    return [(kind, (utc(s) + datetime.timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%S"), (utc(e) + datetime.timedelta(hours=1)
                               ).strftime("%Y-%m-%dT%H:%M:%S"))
            for kind, s, e in events]


# -- exchangelib as the client ------------------------------------------------


def protocol(gateway: Gateway, user: str = "bob",
             url: str = None) -> Protocol:
    """exchangelib's own Protocol: it probes the version (ConvertId) and
    asks GetServerTimeZones before GetUserAvailability."""
    return Protocol(config=Configuration(
        service_endpoint=url or gateway.url + "/EWS/Exchange.asmx",
        credentials=Credentials(user, gateway.users[user]),
        auth_type=BASIC, retry_policy=FailFast()))


def ask(proto: Protocol, addresses, zone: str, start: str, end: str,
        interval: int = 30, view: str = "DetailedMerged"):
    tz = EWSTimeZone(zone)

    def moment(text):
        return EWSDateTime.fromisoformat(text).replace(
            tzinfo=EWSTimeZone("UTC")).astimezone(tz)

    return list(proto.get_free_busy_info(
        [(a, "Required", False) for a in addresses], moment(start),
        moment(end),
        merged_free_busy_interval=interval, requested_view=view))


def utc_events(view) -> List[Tuple[str, str, str]]:
    as_utc = EWSTimeZone("UTC")
    return [(e.busy_type, e.start.astimezone(as_utc).strftime(
        "%Y-%m-%dT%H:%M"), e.end.astimezone(as_utc).strftime("%Y-%m-%dT%H:%M"))
            for e in view.calendar_events or ()]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York",
                                  "Asia/Kolkata", "Australia/Sydney", "UTC"])
def test_exchangelib_sees_local_free_busy_in_its_time_zone(gateway, zone):
    views = ask(protocol(gateway), ["alice@example.com",
                                    "nobody@example.com", "dave@example.com",
                                    "someone@elsewhere.example"],
                zone, "2026-01-05T07:00", "2026-01-05T17:00")
    assert len(views) == 4
    alice, nobody, dave, elsewhere = views
    assert isinstance(nobody, ErrorMailRecipientNotFound)
    assert isinstance(elsewhere, ErrorMailRecipientNotFound)
    # Details were asked for; the answer says it has none, and has none.
    assert alice.view_type == "FreeBusyMerged"
    assert alice.merged == ALICE_DIGITS
    assert utc_events(alice) == sorted(ALICE_EVENTS, key=lambda e: e[1:])
    assert all(e.details is None for e in alice.calendar_events)
    # dave is free, with the ini's default working hours.
    assert dave.merged == "0" * 20 and not dave.calendar_events
    assert [(p.weekdays, p.start, p.end) for p in dave.working_hours] == [
        ([1, 2, 3, 4], datetime.time(8), datetime.time(16, 30))]
    assert dave.working_hours_timezone.bias == -60
    assert dave.working_hours_timezone.daylight_time.bias == -60
    assert dave.working_hours_timezone.daylight_time.iso_month == 3


@pytest.mark.parametrize("zone", sorted(SWITCH_EVENTS))
def test_windows_across_a_daylight_saving_switch(gateway, zone):
    start, end, spans = SWITCH_EVENTS[zone]
    view, = ask(protocol(gateway), ["alice@example.com"], zone, start, end,
                interval=60, view="FreeBusyMerged")
    assert utc_events(view) == [("Busy", s, e) for s, e in spans]
    busy_hours = [i for i, digit in enumerate(view.merged) if digit == "2"]
    assert busy_hours == [int((utc(s) - utc(start)).total_seconds() // 3600)
                          for s, _ in spans]


def test_working_hours_come_from_the_users_vavailability(gateway):
    view, = ask(protocol(gateway, "dave"), ["bob@example.com"],
                "Europe/Berlin", "2026-01-05T00:00", "2026-01-06T00:00",
                view="FreeBusy")
    periods = sorted((p.weekdays, p.start, p.end) for p in view.working_hours)
    assert periods == [([1, 2, 3, 4, 5], datetime.time(9), datetime.time(17)),
                       ([6], datetime.time(10), datetime.time(12))]
    zone = view.working_hours_timezone
    assert (zone.bias, zone.standard_time.bias, zone.daylight_time.bias) == (
        300, 0, -60)
    assert (zone.daylight_time.iso_month, zone.daylight_time.occurrence,
            zone.standard_time.iso_month, zone.standard_time.occurrence) == (
        3, 2, 11, 1)


def test_a_window_longer_than_42_days_is_refused(gateway):
    with pytest.raises(ErrorTimeIntervalTooBig):
        ask(protocol(gateway), ["alice@example.com"], "UTC",
            "2026-01-01T00:00", "2026-02-12T00:01")
    view, = ask(protocol(gateway), ["alice@example.com"], "UTC",
                "2026-01-01T00:00", "2026-02-12T00:00", interval=1440)
    assert view.merged == "00003" + "0" * 37


def _iana_changes(zone, year: int):
    """(local date and time in the old offset, old, new offset) of every
    change of ``zone``'s UTC offset in ``year``, to the second."""
    def offset(moment):
        return int(moment.astimezone(zone).utcoffset().total_seconds() // 60)

    out = []
    day = datetime.datetime(year, 1, 1, tzinfo=UTC) - datetime.timedelta(
        days=1)
    while day.year <= year:
        low, high = day, day + datetime.timedelta(days=1)
        before, after = offset(low), offset(high)
        if before != after:
            while high - low > datetime.timedelta(seconds=1):
                middle = (low + (high - low) / 2).replace(microsecond=0)
                low, high = (middle, high) if offset(middle) == before \
                    else (low, middle)
            local = (high + datetime.timedelta(minutes=before)).replace(
                tzinfo=None)
            if local.year == year:
                out.append((local, before, after))
        day += datetime.timedelta(days=1)
    return out


def test_server_time_zones_follow_the_iana_rules(gateway):
    """Every definition, read by exchangelib for 2026, switches when the
    IANA zone does, with its offsets."""
    definitions = list(protocol(gateway).get_timezones(
        return_full_timezone_data=True))
    assert len(definitions) == len(win_tz) > 100
    for definition in definitions:
        zone = zoneinfo.ZoneInfo(win_tz[definition.id])
        changes = _iana_changes(zone, 2026)
        standard, daylight, period = definition.get_std_and_dst(2026)
        if len(changes) != 2:
            assert standard.bias == daylight.bias, definition.id
            assert period.bias_in_minutes == -int(datetime.datetime(
                2026, 7, 1, tzinfo=UTC).astimezone(zone).utcoffset(
                ).total_seconds() // 60), definition.id
            continue
        low = min(new for _, _, new in changes)
        high = max(new for _, _, new in changes)
        assert period.bias_in_minutes == -low, definition.id
        assert daylight.bias == low - high, definition.id
        for rule, into in ((daylight, high), (standard, low)):
            local = next(when for when, _, new in changes if new == into)
            last = (local + datetime.timedelta(days=7)).month != local.month
            assert (rule.iso_month, rule.weekday, rule.time,
                    rule.occurrence) == (
                local.month, local.isoweekday(), local.time(),
                5 if last else (local.day - 1) // 7 + 1), definition.id


# -- raw SOAP -----------------------------------------------------------------

WINDOW = ("2026-01-05T08:00:00", "2026-01-05T18:00:00")   # Romance: 07-17Z


@pytest.mark.parametrize("view,answered,merged,events", [
    ("MergedOnly", "MergedOnly", True, False),
    ("FreeBusy", "FreeBusy", False, True),
    ("FreeBusyMerged", "FreeBusyMerged", True, True),
    ("Detailed", "FreeBusy", False, True),
    ("DetailedMerged", "FreeBusyMerged", True, True)])
def test_every_view_without_details(gateway, view, answered, merged, events):
    response = post(gateway, availability(["alice@example.com"], *WINDOW,
                                          view=view))
    answer, = mailbox_answers(response)
    assert (answer["class"], answer["code"], answer["type"]) == (
        "Success", "NoError", answered)
    assert answer["merged"] == (ALICE_DIGITS if merged else None)
    assert answer["events"] == (romance(ALICE_EVENTS) if events else [])
    assert (answer["hours"] is not None) == (view != "MergedOnly")
    for word in PRIVATE_WORDS + ("CalendarEventDetails", "Subject",
                                 "Location"):
        assert word not in response.text


def test_times_with_an_offset_are_absolute(gateway):
    """The same window written in UTC, asked in Central European time:
    the answer is still naive local time."""
    response = post(gateway, availability(
        ["alice@example.com"], "2026-01-05T07:00:00Z",
        "2026-01-05T16:00:00-01:00", view="FreeBusyMerged"))
    answer, = mailbox_answers(response)
    assert answer["merged"] == ALICE_DIGITS
    assert answer["events"] == romance(ALICE_EVENTS)


def test_davmail_request_shape(gateway):
    """MergedOnly, 15 minutes, a zero-bias zone, no RoutingType."""
    response = post(gateway, availability(
        [mailbox("alice@example.com", routing="")], "2026-01-05T09:00:00Z",
        "2026-01-05T11:00:00Z", view="MergedOnly", interval="15",
        zone=DAVMAIL_UTC))
    answer, = mailbox_answers(response)
    assert answer["merged"] == "22221100"
    assert answer["events"] == [] and answer["hours"] is None


def test_failures_keep_request_order(gateway):
    response = post(gateway, availability([
        "alice@example.com", "ghost@example.com", "carol@example.com",
        "someone@elsewhere.example",
        mailbox("/o=Org/cn=alice",
                routing="<t:RoutingType>EX</t:RoutingType>"),
        "not an address", "SMTP:dave@EXAMPLE.com", "alice@example.com"],
        *WINDOW, view="FreeBusyMerged"))
    answers = mailbox_answers(response)
    assert [(a["class"], a["code"]) for a in answers] == [
        ("Success", "NoError"), ("Error", "ErrorMailRecipientNotFound"),
        ("Error", "ErrorNoFreeBusyAccess"),
        ("Error", "ErrorMailRecipientNotFound"),
        ("Error", "ErrorMailRecipientNotFound"),
        ("Error", "ErrorInvalidSmtpAddress"), ("Success", "NoError"),
        ("Success", "NoError")]
    assert [a["type"] for a in answers] == [
        "FreeBusyMerged", "None", "None", "None", "None", "None",
        "FreeBusyMerged", "FreeBusyMerged"]
    assert answers[0]["merged"] == answers[7]["merged"] == ALICE_DIGITS
    assert answers[6]["merged"] == "0" * 20


def test_carol_sees_herself_though_opted_out(gateway):
    answer, = mailbox_answers(post(gateway, availability(
        ["carol@example.com"], *WINDOW), user="carol"))
    assert answer["code"] == "NoError"
    assert hours_of(answer) == ("-540", [
        ("Monday Tuesday Wednesday Thursday Friday", "540", "1020"),
        ("Saturday", "600", "720")])


@pytest.mark.parametrize("body,expected", [
    (b"not xml at all", ("s:Client", "ErrorSchemaValidation")),
    (b"", ("s:Client", "ErrorSchemaValidation")),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
     ("s:Client", "ErrorSchemaValidation")),
    (envelope("").replace(S, "http://www.w3.org/2003/05/soap-envelope"),
     ("s:VersionMismatch", "ErrorSchemaValidation")),
    (envelope(""), ("s:Client", "ErrorSchemaValidation")),
    (envelope("<m:FindItem/>"), ("s:Client", "ErrorInvalidOperation")),
    (availability(["alice@example.com"], *WINDOW).replace(ROMANCE, ""),
     ("s:Client", "ErrorSchemaValidation")),
    (availability(["alice@example.com"], *WINDOW).replace(
        "Sunday</t:DayOfWeek></t:StandardTime>",
        "Sonntag</t:DayOfWeek></t:StandardTime>"),
     ("s:Client", "ErrorSchemaValidation")),
    (availability(["alice@example.com"], *WINDOW, zone=ROMANCE.replace(
        "<t:Bias>-60</t:Bias><t:StandardTime>",
        "<t:Bias>-6000</t:Bias><t:StandardTime>")),
     ("s:Client", "ErrorSchemaValidation")),
    (availability([mailbox("alice@example.com", attendee="Boss")], *WINDOW),
     ("s:Client", "ErrorSchemaValidation")),
    (availability([], *WINDOW), ("s:Client", "ErrorMailboxDataArrayEmpty")),
    (availability(["alice@example.com"], "yesterday", WINDOW[1]),
     ("s:Client", "ErrorSchemaValidation")),
    (availability(["alice@example.com"], WINDOW[1], WINDOW[0]),
     ("s:Client", "ErrorInvalidTimeInterval")),
    (availability(["alice@example.com"], "0001-01-01T00:00:00",
                  "0001-01-02T00:00:00"),
     ("s:Client", "ErrorSchemaValidation")),
    (availability(["alice@example.com"], "1700-01-01T00:00:00Z",
                  "1700-01-02T00:00:00Z"),
     ("s:Client", "ErrorInvalidTimeInterval")),
    (availability(["alice@example.com"], *WINDOW, interval="4"),
     ("s:Client", "ErrorInvalidMergedFreeBusyInterval")),
    (availability(["alice@example.com"], *WINDOW, view="None"),
     ("s:Client", "ErrorInvalidFreeBusyViewType")),
])
def test_malformed_requests_are_soap_faults(gateway, body, expected):
    assert fault_code(post(gateway, body)) == expected


def test_at_most_100_mailboxes(gateway):
    addresses = ["user%d@example.com" % i for i in range(100)]
    answers = mailbox_answers(post(gateway, availability(addresses,
                                                         *WINDOW)))
    assert [a["code"] for a in answers] == ["ErrorMailRecipientNotFound"
                                            ] * 100
    assert fault_code(post(gateway, availability(
        addresses + ["alice@example.com"], *WINDOW))) == (
        "s:Client", "ErrorMailboxDataArrayTooBig")


def test_window_limit_is_42_days(gateway):
    ok = availability(["alice@example.com"], "2026-01-01T00:00:00Z",
                      "2026-02-12T00:00:00Z", interval="1440",
                      view="MergedOnly")
    answer, = mailbox_answers(post(gateway, ok))
    assert len(answer["merged"]) == 42
    assert fault_code(post(gateway, ok.replace("02-12T00:00:00",
                                               "02-12T00:00:01"))) == (
        "s:Client", "ErrorTimeIntervalTooBig")


def test_a_body_over_a_mebibyte_is_refused(gateway):
    response = post(gateway, b" " * ((1 << 20) + 1))
    assert response.status_code == 413


def test_suggestions_are_not_made_here(gateway):
    answer = soap_body(post(gateway, availability(
        ["alice@example.com"], *WINDOW,
        extra="<t:SuggestionsViewOptions><t:GoodThreshold>25"
              "</t:GoodThreshold></t:SuggestionsViewOptions>")))
    assert answer.find("{%s}FreeBusyResponseArray" % M) is not None
    message = answer.find("{%s}SuggestionsResponse/{%s}ResponseMessage"
                          % (M, M))
    assert message.get("ResponseClass") == "Error"
    assert "findMeetingTimes" in message.findtext("{%s}MessageText" % M)


def test_version_probe_and_other_methods(gateway):
    convert = envelope(
        '<m:ConvertId DestinationFormat="EntryId"><m:SourceIds>'
        '<t:AlternateId Format="EwsId" Id="DUMMY" Mailbox="DUMMY"/>'
        '</m:SourceIds></m:ConvertId>')
    answer = soap_body(post(gateway, convert))
    message, = answer.iter("{%s}ConvertIdResponseMessage" % M)
    assert message.findtext("{%s}ResponseCode" % M) == "ErrorItemNotFound"
    for path in ("/ews/exchange.asmx", "/EWS/exchange.asmx"):
        assert post(gateway, convert, path=path).status_code == 200
    assert gateway.request("GET", "/EWS/Exchange.asmx",
                           user="bob").status_code == 405
    # Not the EWS URL (routes end at a path segment): Radicale's answer.
    assert post(gateway, convert,
                path="/EWS/Exchange.asmx2").status_code in (404, 405)


def test_time_zones_by_id(gateway):
    ask_for = ('<m:GetServerTimeZones ReturnFullTimeZoneData="%s"><m:Ids>%s'
               '</m:Ids></m:GetServerTimeZones>')
    ids = "".join("<t:Id>%s</t:Id>" % i for i in (
        "India Standard Time", "W. Europe Standard Time"))
    answer = soap_body(post(gateway, envelope(ask_for % ("false", ids))))
    definitions = list(answer.iter("{%s}TimeZoneDefinition" % T))
    assert [d.get("Id") for d in definitions] == [
        "India Standard Time", "W. Europe Standard Time"]
    assert definitions[0].get("Name") == "(UTC+05:30) Asia/Calcutta"
    assert all(len(d) == 0 for d in definitions)
    answer = soap_body(post(gateway, envelope(ask_for % (
        "true", ids + "<t:Id>Atlantis Standard Time</t:Id>"))))
    message, = answer.iter("{%s}GetServerTimeZonesResponseMessage" % M)
    assert message.get("ResponseClass") == "Error"
    assert message.findtext("{%s}ResponseCode" % M) == "ErrorTimeZone"
    assert "Atlantis" in message.findtext("{%s}MessageText" % M)


def test_no_data_is_digit_4_and_never_free():
    """Local users always have data, so this is drawn in-process: spans a
    source had no data for are NoData events and digit 4, never OOF or
    free, beside real out-of-office time."""
    window = Window(utc("2026-01-05T00:00"), utc("2026-01-05T04:00"))
    result = LookupResult.busy(
        [Period(utc("2026-01-05T01:00"), utc("2026-01-05T02:00"),
                BUSY_UNAVAILABLE)], window,
        nodata=[(utc("2026-01-05T01:30"), utc("2026-01-05T03:00"))])
    spans = busy_spans(result)
    assert spans["OOF"] == [(utc("2026-01-05T01:00"),
                             utc("2026-01-05T01:30"))]
    assert spans["NoData"] == [(utc("2026-01-05T01:30"),
                                utc("2026-01-05T03:00"))]
    assert merged_digits(spans, window, datetime.timedelta(minutes=30)) \
        == "00344400"


# -- who may ask --------------------------------------------------------------


def test_anonymous_and_wrong_credentials_get_401(gateway):
    body = availability(["alice@example.com"], *WINDOW)
    for auth in (None, ("bob", "wrong")):
        response = requests.post(gateway.url + "/EWS/Exchange.asmx",
                                 data=body, auth=auth, timeout=30, headers={
                                     "Content-Type": "text/xml"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert "alice" not in response.text


def test_anonymous_callers_see_busy_time_but_learn_no_users(open_gateway):
    response = requests.post(
        open_gateway.url + "/EWS/Exchange.asmx", timeout=30,
        data=availability(["alice@example.com", "ghost@example.com",
                           "carol@example.com", "x@elsewhere.example"],
                          *WINDOW, view="FreeBusyMerged"),
        headers={"Content-Type": "text/xml"})
    answers = mailbox_answers(response)
    assert [a["code"] for a in answers] == [
        "NoError", "NoError", "NoError", "ErrorMailRecipientNotFound"]
    assert answers[0]["merged"] == ALICE_DIGITS
    assert answers[1]["merged"] == answers[2]["merged"] == "0" * 20
    assert answers[1]["events"] == answers[2]["events"] == []
    # Nor carol's own working hours: she looks like anyone unknown.
    assert hours_of(answers[2]) == hours_of(answers[1]) == ("0", [
        ("Monday Tuesday Wednesday Thursday Friday", "540", "1020")])


def test_throttled_callers_get_server_busy(open_gateway):
    body = availability(["alice@example.com"], *WINDOW)
    codes = [post(open_gateway, body, user="dave").status_code
             for _ in range(4)]
    assert codes == [200] * 4
    response = post(open_gateway, body, user="dave")
    assert fault_code(response) == ("s:Server", "ErrorServerBusy")
    wait = int(response.headers["Retry-After"])
    value = soap_body(response).find(".//{%s}Value" % T)
    assert value.get("Name") == "BackOffMilliseconds"
    assert int(value.text) == wait * 1000 and 0 < wait <= 60
    with pytest.raises(ErrorServerBusy) as info:
        ask(protocol(open_gateway, "dave"), ["alice@example.com"], "UTC",
            "2026-01-05T07:00", "2026-01-05T17:00")
    assert info.value.back_off and info.value.back_off > 0


# -- Autodiscover -------------------------------------------------------------


def autodiscover(address: str, schema: str = AD_OUTLOOK) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="%s">'
            '<Request><EMailAddress>%s</EMailAddress><AcceptableResponseSchema>'
            '%s</AcceptableResponseSchema></Request></Autodiscover>' % (
                AD_REQUEST, address, schema))


def discover(gateway, body, user="exchange", headers=None):
    response = gateway.request(
        "POST", "/autodiscover/autodiscover.xml", body, user=user,
        headers=dict({"Content-Type": "text/xml"}, **(headers or {})))
    root = etree.fromstring(response.content)
    assert root.tag == "{%s}Autodiscover" % AD_RESPONSE
    return response.status_code, root


def urls(root) -> Dict[str, Tuple[str, str]]:
    o = "{%s}" % AD_OUTLOOK
    return {p.findtext(o + "Type"): (p.findtext(o + "EwsUrl"),
                                     p.findtext(o + "ASUrl"))
            for p in root.iter(o + "Protocol")}


def test_autodiscover_points_at_the_ews_url_exchangelib_then_uses(gateway):
    status, root = discover(gateway, autodiscover("alice@example.com"))
    url = gateway.url + "/EWS/Exchange.asmx"
    assert status == 200
    assert urls(root) == {"EXCH": (url, url), "EXPR": (url, url)}
    found = urls(root)["EXPR"][0]
    view, = ask(protocol(gateway, "exchange", url=found),
                ["alice@example.com"], "UTC", "2026-01-05T07:00",
                "2026-01-05T17:00")
    assert view.merged == ALICE_DIGITS
    # The same answer for a user who does not exist: nothing to harvest.
    _, other = discover(gateway, autodiscover("ghost@example.com"))
    assert urls(other) == urls(root)


def test_autodiscover_url_is_the_one_the_request_reached(gateway):
    """Host and Radicale's X-Script-Name make the URL; X-Forwarded-*
    from a peer that is no trusted proxy are dropped by waitress."""
    _, root = discover(gateway, autodiscover("alice@example.com"), headers={
        "Host": "fb.example.com:8443", "X-Script-Name": "/gw",
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    assert urls(root)["EXPR"][0] == \
        "http://fb.example.com:8443/gw/EWS/Exchange.asmx"
    assert root.find(".//{%s}SSL" % AD_OUTLOOK).text == "Off"
    # A forged Host never makes a broken URL.
    _, root = discover(gateway, autodiscover("alice@example.com"),
                       headers={"Host": "a/b@evil.example"})
    url = urls(root)["EXPR"][0]
    assert url.startswith("http://") and "evil" not in url
    assert url.endswith(":%d/EWS/Exchange.asmx" % gateway.port)


@pytest.mark.parametrize("body,status,code", [
    (autodiscover("x@elsewhere.example"), 200, "500"),
    (autodiscover("alice@example.com", schema="http://schemas.microsoft.com"
                  "/exchange/autodiscover/mobilesync/responseschema/2006"),
     200, "601"),
    ("<Autodiscover/>", 400, "600"),
    ("no xml", 400, "600")])
def test_autodiscover_errors(gateway, body, status, code):
    got, root = discover(gateway, body)
    assert got == status
    assert [e.text for e in root.iter() if isinstance(e.tag, str)
            and e.tag.endswith("}ErrorCode")] == [code]


def test_autodiscover_needs_a_login(gateway):
    response = requests.post(gateway.url + "/autodiscover/autodiscover.xml",
                             data=autodiscover("alice@example.com"),
                             timeout=30)
    assert response.status_code == 401
    assert gateway.request("GET", "/Autodiscover/Autodiscover.xml",
                           user="bob").status_code == 405
