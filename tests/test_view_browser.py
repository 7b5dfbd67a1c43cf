"""``GET /.freebusy/view`` in a real headless Chromium, and over HTTP.

Debian's chromium and chromedriver, driven by Selenium
(scripts/install-browser installs them; without them these tests fail
and say so, they are never skipped).  One gateway process for the module
with local users and foreign attendees on emulated systems: a CalConnect
free/busy URL server, a SOGo one whose fixed range ends mid-week (the
fan-out stitches a no-data span), a provider nobody listens for
(unreachable) and one that trickles its answer forever (timed out).

The browser checks what a person sees: every drawn period's left edge
and width in pixels against its time within the visible range, the
errors' reasons, the day and week links, adding and removing attendees,
the remembered time zone, and a phone-width layout.  Screenshots are
kept in tests/artifacts/view/.
"""

import base64
import datetime
import os
import shutil
import urllib.parse

import pytest
import requests

from conftest import ROOT, Gateway, free_port
from emulators.ifb_peer import IfbPeer
from emulators.trickle import TricklingPeer
from icaldata import PRIVATE_WORDS, event

UTC = datetime.timezone.utc
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
ARTIFACTS = ROOT / "tests" / "artifacts" / "view"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
#: Next week's Monday, so the finder's slots (never in the past) are there.
TODAY = datetime.datetime.now(UTC).date()
MONDAY = TODAY + datetime.timedelta(days=7 - TODAY.weekday())
H = datetime.timedelta(hours=1)


def at(day: int, hour: float) -> datetime.datetime:
    """``hour`` UTC on the ``day``-th day from MONDAY."""
    return datetime.datetime.combine(MONDAY, datetime.time(), UTC) + \
        datetime.timedelta(days=day, hours=hour)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


#: The page in Berlin starts at Monday 00:00 there: Sunday 23:00 UTC.
BERLIN_START = at(0, -1)
#: erin's system has data until Tuesday 23:00 UTC (16 of the provider's
#: 3-hour pieces after BERLIN_START), none after.
ERIN_DATA_END = at(1, 23)
EXPECTED = {
    "bob@example.com": [(at(0, 9), at(0, 10), "BUSY"),
                        (at(1, 13), at(1, 15), "BUSY-TENTATIVE")],
    "carol@fb.example.net": [(at(0, 14), at(0, 16), "BUSY-UNAVAILABLE")],
    "erin@sogo.example.net": [],
}


def providers(fb, sogo, slow, down_port) -> str:
    return (
        "[provider:fb]\ntype = ifb\ndomains = fb.example.net\nurl = %s\n"
        "window_params = calconnect\ncache_ttl = 0\n\n"
        "[provider:sogo]\ntype = ifb\ndomains = sogo.example.net\n"
        "url = %s\nwindow_params = none\ncache_ttl = 0\n"
        "max_window_days = 0.125\n\n"
        "[provider:slow]\ntype = ifb\ndomains = slow.example.net\n"
        "url = %s\ntimeout = 1\ncache_ttl = 0\n\n"
        "[provider:down]\ntype = ifb\ndomains = down.example.net\n"
        "url = http://127.0.0.1:%d/freebusy/{address}.ifb\ntimeout = 2\n"
        "cache_ttl = 0\n" % (fb.url_template(), sogo.url_template(),
                             slow.url_template(), down_port))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    fb = IfbPeer("calconnect", {"carol@fb.example.net": [
        (at(0, 14), at(0, 16), "BUSY-UNAVAILABLE")]})
    sogo = IfbPeer("sogo", {"erin@sogo.example.net": []},
                   now=ERIN_DATA_END - datetime.timedelta(days=7))
    slow = TricklingPeer()
    gateway = Gateway(tmp_path_factory.mktemp("view"), USERS, "example.com",
                      providers(fb, sogo, slow, free_port()), None)
    try:
        gateway.start()
        work = gateway.mkcalendar("bob", "work")
        gateway.put(work + "1.ics", event("b1", stamp(at(0, 9)),
                                          stamp(at(0, 10))), "bob")
        gateway.put(work + "2.ics", event(
            "b2", stamp(at(1, 13)), stamp(at(1, 15)),
            "STATUS:TENTATIVE\r\n"), "bob")
        gateway.request("PROPFIND", "/alice/", user="alice",
                        headers={"Depth": "0"})
        yield gateway
    finally:
        gateway.stop()
        fb.close()
        sogo.close()
        slow.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium logged in as alice (Basic, through the DevTools
    protocol, as a browser sends it after the login prompt)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.fail("%s missing: run scripts/install-browser (Debian's "
                    "chromium and chromium-driver)" % ", ".join(missing))
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium missing: run scripts/install-browser")
    os.environ["SE_OFFLINE"] = "true"       # never let Selenium download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--no-proxy-server",
                 "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync",
                 "--lang=en-GB", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {
        "Authorization": "Basic " + base64.b64encode(
            b"alice:alice-pw").decode()}})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, world, request):
    """Open a view URL; a screenshot named after the test is kept."""
    browser.delete_all_cookies()
    browser.set_window_size(1280, 900)

    def open_view(query: str):
        browser.get(world.url + "/.freebusy/view?" + query)
        return browser

    yield open_view
    browser.save_screenshot(str(ARTIFACTS / ("%s.png" % request.node.name)))


def query(*attendees, **more) -> str:
    pairs = [("attendee", a) for a in attendees]
    pairs += [(k, str(v)) for k, v in more.items()]
    return urllib.parse.urlencode(pairs)


#: Every drawn element with its track's box and its own, from the page.
GEOMETRY = """
return [...document.querySelectorAll('[data-start], [data-slot-start]')]
  .map(e => { const t = e.closest('.track').getBoundingClientRect();
              const r = e.getBoundingClientRect();
              const row = e.closest('[data-attendee]');
              return {attendee: row ? row.dataset.attendee : null,
                      start: e.dataset.start || e.dataset.slotStart,
                      end: e.dataset.end || e.dataset.slotEnd,
                      fbtype: e.dataset.fbtype || null,
                      state: e.dataset.state || null,
                      slot: 'slotStart' in e.dataset,
                      text: e.textContent,
                      look: getComputedStyle(e).backgroundColor + ' ' +
                            getComputedStyle(e).backgroundImage,
                      left: r.left - t.left, width: r.width,
                      track: t.width}; });
"""


def parse(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC)


def grid_range(driver):
    grid = driver.find_element("css selector", "section.grid")
    return (parse(grid.get_attribute("data-range-start")),
            parse(grid.get_attribute("data-range-end")))


def assert_proportional(item, start, end, range_start, range_end):
    """Left edge and width in px are the element's time in the range."""
    total = (range_end - range_start).total_seconds()
    left = (max(start, range_start) - range_start).total_seconds() / total
    width = (min(end, range_end) - max(start, range_start)
             ).total_seconds() / total
    assert item["left"] == pytest.approx(left * item["track"], abs=1.0), item
    assert item["width"] == pytest.approx(
        max(width * item["track"], 2.0), abs=1.0), item


def test_grid_geometry_matches_the_periods(page):
    driver = page(query(*EXPECTED, start=MONDAY.isoformat(), days=5,
                        tz="Europe/Berlin"))
    range_start, range_end = grid_range(driver)
    assert (range_start, range_end) == (BERLIN_START,
                                        BERLIN_START + 5 * 24 * H)
    items = driver.execute_script(GEOMETRY)
    rows = [e.get_attribute("data-attendee") for e in
            driver.find_elements("css selector", "[data-attendee]")]
    assert rows == list(EXPECTED)
    drawn = {}
    for item in items:
        assert item["track"] > 600
        assert_proportional(item, parse(item["start"]), parse(item["end"]),
                            range_start, range_end)
        if not item["slot"]:
            drawn.setdefault(item["attendee"], []).append(
                (parse(item["start"]), parse(item["end"]),
                 item["fbtype"] or item["state"]))
    expected = {a: sorted(p) for a, p in EXPECTED.items()}
    expected["erin@sogo.example.net"] = [(ERIN_DATA_END, range_end,
                                          "nodata")]
    assert {a: sorted(p) for a, p in drawn.items()} == expected
    # Each kind is drawn in its own way; no data says so in words.
    looks = {(i["fbtype"] or i["state"]): i["look"] for i in items
             if not i["slot"]}
    assert len(set(looks.values())) == len(looks) == 4
    assert [i["text"] for i in items if i["state"] == "nodata"] == [
        "no data"]
    # The best slot: Monday 10:00-11:00 UTC, everyone free in working
    # hours (09-17 UTC by default); erin has no data from Tuesday night.
    slots = [i for i in items if i["slot"]]
    assert slots and slots[0]["start"] == iso(at(0, 10)), slots
    assert all(parse(s["end"]) <= ERIN_DATA_END for s in slots
               if s["text"] == "1")
    source = driver.page_source
    for word in PRIVATE_WORDS:
        assert word not in source


def test_failing_and_timed_out_providers_are_errors(page):
    """An unreachable system and one that never finishes its answer are
    errors across the whole row, with the reason in words; the others'
    rows are drawn as usual."""
    driver = page(query("down@down.example.net", "trickle@slow.example.net",
                        "bob@example.com", "nobody@fb.example.net",
                        start=MONDAY.isoformat(), days=3, tz="UTC"))
    range_start, range_end = grid_range(driver)
    items = driver.execute_script(GEOMETRY)
    errors = {i["attendee"]: i for i in items if i["state"] == "error"}
    assert set(errors) == {"down@down.example.net",
                           "trickle@slow.example.net",
                           "nobody@fb.example.net"}
    for item in errors.values():
        assert (parse(item["start"]), parse(item["end"])) == (range_start,
                                                              range_end)
        assert item["left"] == pytest.approx(0, abs=1)
        assert item["width"] == pytest.approx(item["track"], abs=1)
    assert errors["trickle@slow.example.net"]["text"].startswith(
        "timed out")
    assert errors["down@down.example.net"]["text"].startswith("unavailable")
    assert errors["nobody@fb.example.net"]["text"].startswith(
        "unknown user")
    assert sorted(i["fbtype"] for i in items
                  if i["attendee"] == "bob@example.com") == [
        "BUSY", "BUSY-TENTATIVE"]
    # bob's working hours (the default, 09-17 UTC) are left unshaded.
    shaded = driver.execute_script("""
        return [...document.querySelectorAll(
            '[data-attendee="bob@example.com"] .offhours')].map(e => {
            const t = e.parentElement.getBoundingClientRect();
            const r = e.getBoundingClientRect();
            return [(r.left - t.left) / t.width, r.width / t.width]; });""")
    hours = [(0, 9), (17, 33), (41, 57), (65, 72)]
    assert shaded == [pytest.approx((a / 72, (b - a) / 72), abs=0.002)
                      for a, b in hours]


def test_day_and_week_links_move_the_range(page):
    driver = page(query("bob@example.com", start=MONDAY.isoformat(),
                        days=1, tz="UTC"))
    first = grid_range(driver)
    assert first == (at(0, 0), at(1, 0))
    moves = [("next-day", 1), ("next-week", 8), ("prev-day", 7),
             ("prev-week", 0)]
    for link, day in moves:
        driver.find_element("css selector",
                            'a[data-nav="%s"]' % link).click()
        assert grid_range(driver) == (at(day, 0), at(day + 1, 0)), link
        assert driver.find_element(
            "css selector", "[data-attendee]").get_attribute(
                "data-attendee") == "bob@example.com"
    # Tuesday has bob's tentative meeting, Monday his busy one.
    driver.find_element("css selector", 'a[data-nav="next-day"]').click()
    fbtypes = [e.get_attribute("data-fbtype") for e in driver.find_elements(
        "css selector", "[data-fbtype]")]
    assert fbtypes == ["BUSY-TENTATIVE"]


def test_attendees_are_added_and_removed_with_the_form(page):
    driver = page(query("bob@example.com", start=MONDAY.isoformat(),
                        days=2, tz="UTC"))
    field = driver.find_element("id", "add-attendee")
    field.send_keys("carol@fb.example.net")
    field.submit()
    rows = lambda: [e.get_attribute("data-attendee") for e in  # noqa: E731
                    driver.find_elements("css selector", "[data-attendee]")]
    assert rows() == ["bob@example.com", "carol@fb.example.net"]
    carol = driver.find_element(
        "css selector", '[data-attendee="carol@fb.example.net"]')
    assert [e.get_attribute("data-fbtype") for e in carol.find_elements(
        "css selector", "[data-fbtype]")] == ["BUSY-UNAVAILABLE"]
    # The other settings survive the form.
    assert grid_range(driver) == (at(0, 0), at(2, 0))
    driver.find_element(
        "css selector",
        '[data-attendee="bob@example.com"] a.remove').click()
    assert rows() == ["carol@fb.example.net"]
    driver.find_element(
        "css selector",
        '[data-attendee="carol@fb.example.net"] a.remove').click()
    assert rows() == []
    assert "Add attendees" in driver.find_element(
        "css selector", "p.empty").text


def test_the_time_zone_choice_is_remembered(page):
    """Choosing a zone redraws the page at once (the one line of script)
    and a cookie keeps it: a later URL without ``tz`` uses it."""
    from selenium.webdriver.support.ui import Select, WebDriverWait
    driver = page(query("bob@example.com", start=MONDAY.isoformat(),
                        days=1))
    Select(driver.find_element("id", "tz")).select_by_value("Asia/Tokyo")
    WebDriverWait(driver, 30).until(lambda d: d.find_element(
        "tag name", "body").get_attribute("data-tz") == "Asia/Tokyo")
    tokyo_midnight = at(0, -9)
    assert grid_range(driver) == (tokyo_midnight, tokyo_midnight + 24 * H)
    driver.get(driver.current_url.split("?")[0] + "?" + query(
        "bob@example.com", start=MONDAY.isoformat(), days=1))
    assert driver.find_element("tag name", "body").get_attribute(
        "data-tz") == "Asia/Tokyo"
    assert grid_range(driver) == (tokyo_midnight, tokyo_midnight + 24 * H)
    assert "Asia/Tokyo" in driver.find_element(
        "css selector", ".range-label").text
    items = driver.execute_script(GEOMETRY)
    busy = [i for i in items if i["fbtype"] == "BUSY"]
    assert len(busy) == 1
    assert_proportional(busy[0], at(0, 9), at(0, 10), tokyo_midnight,
                        tokyo_midnight + 24 * H)


def test_readable_at_a_phone_width(page, browser):
    browser.set_window_size(390, 844)
    driver = page(query(*EXPECTED, start=MONDAY.isoformat(), days=3,
                        tz="Europe/Berlin"))
    width = driver.execute_script("return window.innerWidth")
    assert driver.execute_script(
        "return document.documentElement.scrollWidth") <= width
    range_start, range_end = grid_range(driver)
    items = driver.execute_script(GEOMETRY)
    assert items
    for item in items:
        # The name sits above the track, which takes the whole width.
        assert item["track"] > width * 0.8
        assert_proportional(item, parse(item["start"]), parse(item["end"]),
                            range_start, range_end)


# -- over HTTP: refusals, bad parameters, neighbours ------------------------

def test_bad_parameters_are_400_and_logins_401(world):
    def get(params, user="alice"):
        return world.request("GET", "/.freebusy/view?" + params, user=user)

    assert get(query("bob@example.com"), user=None).status_code == 401
    for bad, words in [
            (query("bob@example.com", tz="Mars/Olympus"), "tz"),
            (query("bob@example.com", start="next monday"), "start"),
            (query("bob@example.com", days=0), "days"),
            (query("bob@example.com", days=15), "days"),
            (query("bob@example.com", duration="long"), "duration"),
            (query("x" * 300 + "@example.com"), "attendee"),
            ("start=2026-12-07&start=2026-12-08", "start")]:
        response = get(bad)
        assert response.status_code == 400, (bad, response.status_code)
        assert response.headers["Content-Type"].startswith("text/html")
        assert words in response.text
    # A hostile address is shown as text, never as markup.
    response = get(query('<script>alert(1)</script>"@example.com',
                         days=1))
    assert response.status_code == 200
    assert "<script>alert" not in response.text
    assert "&lt;script&gt;" in response.text
    assert "script-src 'nonce-" in response.headers[
        "Content-Security-Policy"]


def test_addresses_that_start_with_view_are_read_urls(world):
    """/.freebusy/view is a prefix of the read URL of an address such as
    viewer@example.com; that path still gets the read URL's answer."""
    response = world.request(
        "GET", "/.freebusy/viewer@example.com?start=%s&end=%s" % (
            iso(at(0, 0)), iso(at(1, 0))), user="alice")
    assert response.status_code == 404     # no such user: the read URL
    response = world.request(
        "GET", "/.freebusy/bob@example.com?start=%s&end=%s" % (
            iso(at(0, 0)), iso(at(1, 0))), user="alice")
    assert response.status_code == 200
    assert "BEGIN:VFREEBUSY" in response.text
    head = requests.head(world.url + "/.freebusy/view?" + query(
        "bob@example.com"), auth=("alice", "alice-pw"), timeout=30)
    assert head.status_code == 200
    assert head.headers["Content-Type"].startswith("text/html")



def test_anonymous_visitors_see_local_busy_time_only(gateway_factory):
    """With anonymous free/busy on, the page needs no login and shows
    local busy periods; an unknown local or a foreign address looks free
    (no error that would tell it apart), as the access policy says."""
    gateway = gateway_factory(users=USERS,
                              extra="anonymous_freebusy = yes\n")
    gateway.put(gateway.mkcalendar("bob", "work") + "1.ics", event(
        "b1", stamp(at(0, 9)), stamp(at(0, 10))), "bob")
    response = gateway.request("GET", "/.freebusy/view?" + query(
        "bob@example.com", "ghost@example.com", "carol@corp.example",
        start=MONDAY.isoformat(), days=1, tz="UTC"))
    assert response.status_code == 200, response.text
    assert response.text.count('data-fbtype="BUSY"') == 1
    assert 'data-start="%s" data-end="%s" data-fbtype="BUSY"' % (
        iso(at(0, 9)), iso(at(0, 10))) in response.text
    assert "data-state=" not in response.text
    for address in ("bob@example.com", "ghost@example.com",
                    "carol@corp.example"):
        assert 'data-attendee="%s"' % address in response.text
