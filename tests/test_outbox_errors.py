"""Outbox POST bodies that are odd, broken or hostile: never a 5xx.

Every refusal is 403 with its RFC 6638 precondition in a DAV:error and a
reason for people (RFC 4791 1.3); nothing a client sends makes the
gateway answer 500.  The named cases are the fuzzer's findings and the
issue's examples, kept as regressions; the fuzz test at the end sends a
seeded, bounded set of mutations of a valid request to one real gateway.

Floating DTSTART/DTEND (what the caldav library sends for naive
datetimes) and DATE values are read in the organizer's calendar-timezone.
"""

import datetime
import random
from xml.sax.saxutils import escape

import caldav
import pytest
import requests
from lxml import etree

from conftest import Gateway
from fbcheck import C, D, assert_same_periods, periods_of, \
    schedule_response, vfreebusy_of
from icaldata import event

UTC = datetime.timezone.utc
MESSAGE = "{urn:x-freebusy-gateway}message"
PRECONDITIONS = {"supported-calendar-data", "valid-calendar-data",
                 "valid-scheduling-message", "valid-organizer",
                 "max-resource-size"}
OUTBOX = "/bob/.schedule-outbox/"
NEW_YORK = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
            "BEGIN:VTIMEZONE\r\nTZID:America/New_York\r\nEND:VTIMEZONE\r\n"
            "END:VCALENDAR\r\n")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One gateway for the module: alice has a calendar with events, bob
    (who asks) has one in America/New_York, carol has none."""
    gateway = Gateway(tmp_path_factory.mktemp("outbox-errors"),
                      {"alice": "alice-pw", "bob": "bob-pw",
                       "carol": "carol-pw"}, "example.com", "", None)
    gateway.start()
    try:
        calendar = gateway.mkcalendar("alice", "work")
        gateway.put(calendar + "1.ics", event(
            "a1", "20260105T150000Z", "20260105T160000Z"), "alice")
        gateway.put(calendar + "2.ics", event(
            "a2", "20260105T090000Z", "20260105T093000Z",
            "RRULE:FREQ=WEEKLY\r\n"), "alice")
        gateway.mkcalendar("bob", "plain")
        gateway.mkcalendar("bob", "zoned", "<C:calendar-timezone>%s"
                           "</C:calendar-timezone>" % escape(NEW_YORK))
        gateway.request("PROPFIND", "/carol/", user="carol",
                        headers={"Depth": "0"})
        yield gateway
    finally:
        gateway.stop()


def request(lines=None, organizer="mailto:bob@example.com",
            start="DTSTART:20260105T000000Z", end="DTEND:20260106T000000Z",
            attendees=("mailto:alice@example.com",), method="REQUEST"):
    """A VFREEBUSY request as a list of content lines (no line ends)."""
    head = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN"]
    if method is not None:
        head.append("METHOD:%s" % method)
    body = ["BEGIN:VFREEBUSY", "UID:fuzz-1", "DTSTAMP:20260101T000000Z"]
    body += [line for line in (start, end) if line]
    body.append("ORGANIZER:%s" % organizer)
    body += ["ATTENDEE:%s" % a for a in attendees]
    return head + (lines or []) + body + ["END:VFREEBUSY", "END:VCALENDAR"]


def text(lines):
    return "".join(line + "\r\n" for line in lines)


def post(gateway, body, content_type="text/calendar; charset=utf-8",
         user="bob", session=None):
    if isinstance(body, list):
        body = text(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    sender = session or requests
    return sender.post(gateway.url + "/%s/.schedule-outbox/" % user,
                       data=body, auth=(user, gateway.users[user]),
                       headers={"Content-Type": content_type}, timeout=60)


def refusal(response):
    """(precondition, message) of a 403 DAV:error answer."""
    assert response.status_code == 403, (response.status_code,
                                         response.text)
    root = etree.fromstring(response.content)
    assert root.tag == D + "error", response.text
    names = [etree.QName(child).localname for child in root
             if child.tag.startswith(C)]
    assert len(names) == 1 and names[0] in PRECONDITIONS, response.text
    message = root.findtext(MESSAGE)
    assert message, response.text
    return names[0], message


# -- named cases: each was a 400 or a 500 once, or is the example ----

def _after(prefix, extra, lines=None):
    """A request with ``extra`` inserted after the line starting with
    ``prefix``."""
    lines = list(lines or request())
    at = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    return lines[:at + 1] + [extra] + lines[at + 1:]


NAMED = {
    # icalendar returns a list for a repeated property
    "dtstart-twice": (request(start="DTSTART:20260105T000000Z\r\n"
                              "DTSTART:20260105T010000Z"),
                      "valid-scheduling-message", "DTSTART appears 2 times"),
    "dtend-twice": (request(end="DTEND:20260106T000000Z\r\n"
                            "DTEND:20260107T000000Z"),
                    "valid-scheduling-message", "DTEND appears 2 times"),
    "method-twice": (request(lines=["METHOD:REQUEST"]),
                     "valid-scheduling-message", "METHOD appears 2 times"),
    "organizer-twice": (_after("ORGANIZER", "ORGANIZER:mailto:bob@"
                               "example.com"), "valid-scheduling-message",
                        "ORGANIZER appears 2 times"),
    "uid-twice": (_after("UID", "UID:another"), "valid-scheduling-message",
                  "UID appears 2 times"),
    # astimezone() overflows below year 1 (Berlin's LMT offset)
    "tzid-date-in-year-1": (request(
        start="DTSTART;TZID=Europe/Berlin:00010101T000000"),
        "valid-scheduling-message", "DTSTART is outside the range"),
    "utc-date-in-year-1": (request(start="DTSTART:00010101T000000Z"),
                           "valid-scheduling-message",
                           "DTSTART must lie between 1800"),
    "year-past-9999": (request(end="DTEND:100000101T000000Z"),
                       "valid-calendar-data", "not iCalendar"),
    "year-9999": (request(start="DTSTART:99991231T000000Z",
                          end="DTEND:99991231T235959Z"),
                  "valid-scheduling-message",
                  "DTSTART must lie between 1800"),
    "unknown-tzid": (request(start="DTSTART;TZID=Mars/Olympus_Mons:"
                             "20260105T000000"),
                     "valid-scheduling-message", "TZID 'Mars/Olympus_Mons'"),
    "garbage-parameter": (request(start='DTSTART;X-A="b:20260105T000000Z'),
                          "valid-calendar-data", "not iCalendar"),
    "not-a-date": (request(start="DTSTART:tomorrow"), "valid-calendar-data",
                   "not iCalendar"),
    "time-value": (request(start="DTSTART;VALUE=TIME:120000"),
                   "valid-scheduling-message", "must be a date-time"),
    "no-dtend": (request(end=None), "valid-scheduling-message",
                 "needs DTEND"),
    "reversed-window": (request(start="DTSTART:20260106T000000Z",
                                end="DTEND:20260105T000000Z"),
                        "valid-scheduling-message", "after its start"),
    "method-publish": (request(method="PUBLISH"), "valid-scheduling-message",
                       "METHOD:REQUEST"),
    "two-vfreebusy": (request()[:-1] + request()[4:-1] + ["END:VCALENDAR"],
                      "valid-scheduling-message", "exactly one VFREEBUSY"),
    "vevent": (request()[:4] + ["BEGIN:VEVENT", "UID:x", "END:VEVENT"] +
               request()[4:], "valid-scheduling-message",
               "only VFREEBUSY requests"),
    "two-calendars": (request() + request(), "valid-calendar-data",
                      "not iCalendar"),
    "no-organizer": ([line for line in request()
                      if not line.startswith("ORGANIZER")],
                     "valid-organizer", "ORGANIZER"),
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_bad_requests_are_403_with_a_reason(gateway, name):
    lines, precondition, words = NAMED[name]
    found, message = refusal(post(gateway, lines))
    assert found == precondition, message
    assert words in message, message


@pytest.mark.parametrize("content_type,body,precondition", [
    ("text/calendar; charset=x-no-such-charset", None,
     "supported-calendar-data"),
    ("text/calendar; charset=base64", None, "supported-calendar-data"),
    ("text/calendar; charset=rot13", None, "supported-calendar-data"),
    ("text/calendar; charset=utf-8", b"\xff\xfe\xfa" * 10,
     "valid-calendar-data"),
    ("application/octet-stream", None, "supported-calendar-data"),
    ("", None, "supported-calendar-data"),
    ("text/calendar", b"X" * (300 * 1024), "max-resource-size"),
])
def test_charset_media_type_and_size(gateway, content_type, body,
                                     precondition):
    found, _ = refusal(post(gateway, body or text(request()),
                            content_type=content_type))
    assert found == precondition


@pytest.mark.parametrize("method,path,charset", [
    ("PUT", "/alice/work/x.ics", "utf-16"),
    ("PUT", "/alice/work/x.ics", "x-no-such-charset"),
    ("PROPFIND", "/alice/", "utf-32"),
    ("REPORT", "/alice/work/", "base64"),
    ("POST", OUTBOX, "utf-16"),
])
def test_charsets_radicale_cannot_read_credentials_with(gateway, method,
                                                       path, charset):
    """Radicale decoded the Basic credentials with the body's charset: a
    500 for an unknown one, garbage (then a 500) for UTF-16.  Never a 5xx,
    and the user is still recognised."""
    response = requests.request(
        method, gateway.url + path, auth=("alice", "alice-pw"),
        data=text(request()).encode("utf-16"), timeout=60,
        headers={"Content-Type": "text/calendar; charset=%s" % charset,
                 "Depth": "0"})
    assert 400 <= response.status_code < 500, response.status_code
    assert response.status_code != 401


@pytest.mark.parametrize("charset", ["utf-16", "utf-32", "latin-1",
                                     "ascii", '"UTF-8"'])
def test_declared_charsets_are_honoured(gateway, charset):
    body = text(request()).encode(charset.strip('"'))
    answers = schedule_response(post(
        gateway, body, content_type="text/calendar; charset=%s" % charset))
    assert answers[0][1] == "2.0"


def test_refusals_leave_no_traceback_in_the_log(gateway):
    for lines, _, _ in NAMED.values():
        assert post(gateway, lines).status_code == 403
    assert schedule_response(post(gateway, request()))[0][1] == "2.0"
    assert "Traceback" not in gateway.log()


# -- floating times, DATE values and TZIDs --------------------------------

def reply_window(answer_data):
    component = vfreebusy_of(answer_data)
    return (component["DTSTART"].dt.astimezone(UTC).strftime(
        "%Y%m%dT%H%M%SZ"), component["DTEND"].dt.astimezone(UTC).strftime(
        "%Y%m%dT%H%M%SZ"))


def test_floating_times_are_read_in_the_organizers_calendar_timezone(
        gateway):
    """bob's first calendar with a calendar-timezone ("zoned", New York;
    "plain" has none) decides: 09:00-12:00 floating is 14:00-17:00Z."""
    answers = schedule_response(post(gateway, request(
        start="DTSTART:20260105T090000", end="DTEND:20260105T120000")))
    assert answers[0][1] == "2.0"
    assert reply_window(answers[0][2]) == ("20260105T140000Z",
                                           "20260105T170000Z")
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T150000Z", "20260105T160000Z")]})


def test_date_values_are_midnight_in_the_organizers_zone(gateway):
    answers = schedule_response(post(gateway, request(
        start="DTSTART;VALUE=DATE:20260105",
        end="DTEND;VALUE=DATE:20260106")))
    assert reply_window(answers[0][2]) == ("20260105T050000Z",
                                           "20260106T050000Z")
    assert_same_periods(periods_of(answers[0][2]), {
        "BUSY": [("20260105T090000Z", "20260105T093000Z"),
                 ("20260105T150000Z", "20260105T160000Z")]})


def test_floating_times_without_a_calendar_timezone_are_utc(gateway):
    answers = schedule_response(post(gateway, request(
        organizer="mailto:carol@example.com",
        start="DTSTART:20260105T090000", end="DTEND:20260105T120000"),
        user="carol"))
    assert reply_window(answers[0][2]) == ("20260105T090000Z",
                                           "20260105T120000Z")


def test_tzid_of_a_vtimezone_in_the_request_and_an_iana_name(gateway):
    zone = ["BEGIN:VTIMEZONE", "TZID:Plus Three", "BEGIN:STANDARD",
            "DTSTART:19700101T000000", "TZOFFSETFROM:+0300",
            "TZOFFSETTO:+0300", "END:STANDARD", "END:VTIMEZONE"]
    answers = schedule_response(post(gateway, request(
        lines=zone, start="DTSTART;TZID=Plus Three:20260105T120000",
        end="DTEND;TZID=Asia/Tokyo:20260106T000000")))
    assert reply_window(answers[0][2]) == ("20260105T090000Z",
                                           "20260105T150000Z")


def test_caldav_library_with_naive_datetimes(gateway):
    """The caldav library writes naive datetimes as floating times."""
    client = caldav.DAVClient(gateway.url + "/", username="bob",
                              password="bob-pw")
    answer = client.principal().freebusy_request(
        datetime.datetime(2026, 1, 5, 9, 0),
        datetime.datetime(2026, 1, 5, 12, 0),
        ["mailto:alice@example.com"])
    data = answer["mailto:alice@example.com"].data
    assert reply_window(data) == ("20260105T140000Z", "20260105T170000Z")
    assert_same_periods(periods_of(data), {
        "BUSY": [("20260105T150000Z", "20260105T160000Z")]})


# -- the fuzz test ----------------------------------------------------------

ODD_TIMES = [
    "00010101T000000Z", "00011231T235959Z", "09991231T235959Z",
    "99991231T235959Z", "100000101T000000Z", "20260230T000000Z",
    "20261301T000000Z", "2026-01-05T00:00:00Z", "20260105", "20260105T25",
    "20260105T000000+0100", "20260105T000060Z", "-20260105T000000Z",
    "9" * 400, "", "20260105T000000ZZ", "20260105T000000\x00",
    "20260105T000000Z,20260106T000000Z",
]
ODD_PREFIXES = [
    "DTSTART;TZID=Europe/Berlin:", "DTEND;TZID=Europe/Berlin:",
    "DTSTART;TZID=Nowhere/City:", "DTSTART;TZID=:", "DTEND;TZID=\"a;b\":",
    "DTSTART;VALUE=DATE:", "DTEND;VALUE=PERIOD:", "DTSTART;VALUE=TIME:",
    "DTSTART;TZID=../../etc/passwd:", "DTSTART;TZID=Plus Three:",
    "DTEND;VALUE=DATE-TIME,DATE:", "DTSTART:", "DTEND:",
]
ODD_PARAMETERS = [';CN="unterminated', ";=x", ";X-Y=\"a\"\"b\"", ";;",
                  ";TZID=Europe/Berlin", ";VALUE=BINARY", ";ENCODING=BASE64",
                  ";CN=\x00", ";X=" + "y" * 5000, ';RSVP=TRUE:mailto:x@y']
ODD_ADDRESSES = ["mailto:", "mailto:@", "mailto:a@b@example.com", "urn:x",
                 "", "mailto:jürgen@example.com", "mailto:../x@example.com",
                 "mailto:%00@example.com", "mailto:alice@EXAMPLE.COM",
                 "MAILTO:alice@example.com", "mailto:alice@example.com/..",
                 "mailto:" + "a" * 3000 + "@example.com",
                 "mailto:alice@example.com\\,bob@example.com",
                 "mailto:bob@example.com", "http://127.0.0.1:1/"]
ODD_LINES = ["BEGIN:VEVENT", "END:VFREEBUSY", "END:VCALENDAR",
             "BEGIN:VCALENDAR", "BEGIN:VTIMEZONE", "TZID:Plus Three",
             "FREEBUSY:20260105T000000Z/PT1H", "DURATION:PT1H",
             "REQUEST-STATUS:2.0;ok", "METHOD:REPLY", " folded",
             "X-" + "Z" * 70000 + ":v", "VERSION:3.0", "BEGIN:", ":",
             "BEGIN:VALARM", "END:VALARM", "RRULE:FREQ=SECONDLY"]
CHARSETS = ["utf-8", "utf-16", "latin-1", "ascii", "utf-7", "cp1252",
            "base64", "nonsense", "", '"utf-8"', "utf-8;x=y", "UTF-32",
            "idna", "rot13"]
PLUS_THREE = ["BEGIN:VTIMEZONE", "TZID:Plus Three", "BEGIN:STANDARD",
              "DTSTART:19700101T000000", "TZOFFSETFROM:+0300",
              "TZOFFSETTO:+0300", "END:STANDARD", "END:VTIMEZONE"]


def _mutate(rng, lines):
    """One random change to a request's content lines."""
    kind = rng.randrange(12)
    index = rng.randrange(len(lines))
    if kind == 0:                                    # duplicate a line
        lines.insert(index, lines[index])
    elif kind == 1 and len(lines) > 1:               # remove a line
        del lines[index]
    elif kind == 2:                                  # garble a line
        line = lines[index]
        at = rng.randrange(len(line) + 1)
        junk = "".join(rng.choice(":;=,\"\\\x00\t é€\U0001F600ZT0123")
                       for _ in range(rng.randrange(1, 6)))
        lines[index] = line[:at] + junk + line[at + rng.randrange(3):]
    elif kind == 3:                                  # odd dates
        prefix = rng.choice(ODD_PREFIXES)
        name = prefix.split(";")[0].split(":")[0]
        lines[:] = [line for line in lines if not line.startswith(name)]
        lines.insert(5, prefix + rng.choice(ODD_TIMES))
    elif kind == 4:                                  # garbage parameters
        line = lines[index]
        colon = line.find(":")
        colon = len(line) if colon < 0 else colon
        lines[index] = line[:colon] + rng.choice(ODD_PARAMETERS) + \
            line[colon:]
    elif kind == 5:                                  # odd attendees
        lines.insert(6, "ATTENDEE:" + rng.choice(ODD_ADDRESSES))
    elif kind == 6:                                  # many attendees
        lines[6:6] = ["ATTENDEE:mailto:u%d@example.com" % i
                      for i in range(rng.choice((50, 150, 400)))]
    elif kind == 7:                                  # random bytes
        lines[index] = "".join(chr(rng.randrange(0, 0x3000))
                               for _ in range(rng.randrange(1, 40)))
    elif kind == 8:                                  # structure
        lines.insert(index, rng.choice(ODD_LINES))
    elif kind == 9:                                  # cut the end off
        del lines[rng.randrange(1, len(lines)):]
    elif kind == 10:                                 # a zone of its own
        lines[3:3] = PLUS_THREE
    else:                                            # huge values
        lines.insert(index, rng.choice(("UID:", "X-A:", "COMMENT:")) +
                     "x" * rng.choice((1000, 100000)))
    return lines


def _encode(rng, body):
    """(bytes, content type) with an odd charset or line ends now and
    then."""
    ends = rng.random()
    if ends < 0.1:
        body = body.replace("\r\n", "\n")
    elif ends < 0.15:
        body = body.replace("\r\n", "\r")
    charset = rng.choice(CHARSETS) if rng.random() < 0.3 else "utf-8"
    try:
        data = body.encode(charset.strip('"').split(";")[0] or "utf-8",
                           "surrogatepass")
    except (LookupError, UnicodeError, ValueError):
        data = body.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    return data, "text/calendar; charset=%s" % charset


CASES = 1200
SEED = 20261206


def test_fuzzed_outbox_posts_never_get_a_5xx(gateway):
    """Seeded mutations of a valid request against one real gateway: every
    answer is a 200 schedule-response or a 403 naming its precondition."""
    rng = random.Random(SEED)
    session = requests.Session()
    findings = []
    counts = {}
    for case in range(CASES):
        lines = request(attendees=("mailto:alice@example.com",
                                   "mailto:nobody@example.com"))
        for _ in range(rng.choice((1, 1, 2, 3))):
            _mutate(rng, lines)
        data, content_type = _encode(rng, text(lines))
        try:
            response = post(gateway, data, content_type, session=session)
        except requests.RequestException as e:
            findings.append((case, "no answer: %s" % e, data[:300]))
            continue
        counts[response.status_code] = counts.get(response.status_code,
                                                  0) + 1
        try:
            if response.status_code == 200:
                for _, status, _ in schedule_response(response):
                    assert status[:1] in "235", status
            else:
                refusal(response)
        except AssertionError as e:
            findings.append((case, "%d: %s" % (response.status_code,
                                               str(e)[:300]), data[:300]))
    assert not findings, findings[:5]
    # The mutations reach both sides: answers and refusals.
    assert counts.get(200, 0) > CASES // 20, counts
    assert counts.get(403, 0) > CASES // 4, counts
    assert "Traceback" not in gateway.log()
