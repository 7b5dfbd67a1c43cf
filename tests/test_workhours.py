"""Fast tier: working hours as the ini writes them, across DST."""

import datetime

import pytest

from gateway.config import ConfigError
from gateway.faces.access import RequestCounter
from gateway.model import UTC, Window
from gateway.workhours import WorkingHours

from conftest import write_gateway_files


def T(month, day, hour=0, minute=0):
    return datetime.datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_spans_follow_the_zone_across_a_dst_change():
    hours = WorkingHours.parse("Mon-Fri 09:00-17:00 Europe/Berlin")
    # Friday 27 March (UTC+1) to Tuesday 31 March (UTC+2).
    spans = list(hours.spans(Window(T(3, 27), T(3, 31))))
    assert spans == [(T(3, 27, 8), T(3, 27, 16)), (T(3, 30, 7), T(3, 30, 15))]
    assert hours.outside(Window(T(3, 27), T(3, 28))) == [
        (T(3, 27), T(3, 27, 8)), (T(3, 27, 16), T(3, 28))]


def test_day_lists_wrap_and_the_zone_defaults_to_utc():
    hours = WorkingHours.parse("Sat-Mon, Wed 22:00-24:00")
    assert hours.days == frozenset({5, 6, 0, 2})
    assert hours.zone is UTC
    assert list(hours.spans(Window(T(12, 5), T(12, 6)))) == [
        (T(12, 5, 22), T(12, 6))]
    assert WorkingHours.parse("Mon 08:30-09:00").start == \
        datetime.timedelta(hours=8, minutes=30)


def test_spans_are_clipped_to_the_window():
    hours = WorkingHours.parse("Mon-Sun 09:00-17:00")
    assert list(hours.spans(Window(T(1, 5, 12), T(1, 5, 13)))) == [
        (T(1, 5, 12), T(1, 5, 13))]


@pytest.mark.parametrize("text", [
    "", "Mon-Fri", "Mon-Fri 9-5", "Mon-Fri 17:00-09:00", "Mon-Fri 25:00-26:00",
    "Mon-Fro 09:00-17:00", "Mon-Fri 09:00-17:00 Mars/Olympus",
    "Mon-Fri 09:60-17:00"])
def test_bad_working_hours_are_refused(text):
    with pytest.raises(ValueError):
        WorkingHours.parse(text)


def test_the_ini_key_names_section_and_key(tmp_path):
    from gateway.config import load
    path = write_gateway_files(tmp_path, {"alice": "pw"}, None,
                               "example.com",
                               "default_working_hours = Mon-Fri 9 to 5\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert "default_working_hours" in str(info.value)
    assert "[gateway]" in str(info.value)


def test_request_counter_allows_bursts_then_asks_to_wait():
    counter = RequestCounter(3)
    assert [counter.wait_needed("a") for _ in range(3)] == [0, 0, 0]
    wait = counter.wait_needed("a")
    assert 0 < wait <= 20
    assert counter.wait_needed("b") == 0      # callers are counted apart
    assert RequestCounter(0).wait_needed("a") == 0


def test_a_bad_redis_url_is_named_without_its_password(tmp_path):
    from gateway.config import load
    path = write_gateway_files(tmp_path, {"alice": "pw"}, None,
                               "example.com",
                               "cache = redis://:s3cret@host:6379/x y\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert "'cache'" in str(info.value)
    assert "s3cret" not in str(info.value)
