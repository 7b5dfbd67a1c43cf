"""The meeting-time finder's own cost, after the lookups have returned.

    .venv/bin/python bench/finder.py                  # 20 attendees, 4 weeks
    .venv/bin/python bench/finder.py --attendees 100 --days 62

In-process: seeded LookupResults (meetings of 30 minutes to 3 hours in
working hours, all three busy types, a few no-data spans, one attendee
whose lookup failed) and each attendee's working hours from
gateway.workhours, handed to gateway.engine.finder.find_slots for a
one-hour meeting.  Prints the median and the slowest of ``--repeat``
calls per case; docs/benchmarks.md records the figures.
"""

import argparse
import datetime
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.engine.finder import FinderAttendee, find_slots  # noqa: E402
from gateway.model import (BUSY, BUSY_TENTATIVE, BUSY_UNAVAILABLE,  # noqa
                           UTC, LookupResult, Period, Reason, Window)
from gateway.workhours import WorkingHours  # noqa: E402

ZONES = ("Europe/Berlin", "Europe/London", "America/New_York", "UTC")


def attendees(count: int, window: Window, seed: int):
    """``count`` attendees with 2-6 meetings a working day each."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        hours = WorkingHours.parse("Mon-Fri 09:00-17:00 %s" %
                                   ZONES[index % len(ZONES)])
        working = list(hours.spans(window))
        if index == count - 1:
            result = LookupResult.failed(Reason.TIMED_OUT, "bench")
        else:
            periods, nodata = [], []
            for start, end in working:
                for _ in range(rng.randint(2, 6)):
                    begin = start + datetime.timedelta(
                        minutes=15 * rng.randrange(32))
                    length = datetime.timedelta(
                        minutes=30 * rng.randint(1, 6))
                    periods.append(Period(begin, min(begin + length, end),
                                          rng.choice((BUSY, BUSY, BUSY,
                                                      BUSY_TENTATIVE,
                                                      BUSY_UNAVAILABLE))))
                if rng.random() < 0.05:
                    nodata.append((start, start + datetime.timedelta(
                        hours=2)))
            result = LookupResult.busy(periods, window, nodata)
        out.append(FinderAttendee("user%d@example.com" % index,
                                  index % 4 != 3, result, working))
    return out


def timed(repeat: int, call):
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        found = call()
        times.append(time.perf_counter() - began)
    return statistics.median(times), max(times), found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attendees", type=int, default=20)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    start = datetime.datetime(2026, 12, 7, tzinfo=UTC)
    window = Window(start, start + datetime.timedelta(days=args.days))
    people = attendees(args.attendees, window, args.seed)
    periods = sum(len(p.result.periods) for p in people)
    hour = datetime.timedelta(hours=1)
    cases = [
        ("working hours, 30-minute step", people, None),
        ("working hours, 15-minute step", people,
         datetime.timedelta(minutes=15)),
        ("unrestricted, 15-minute step",
         [p._replace(working=None) for p in people],
         datetime.timedelta(minutes=15)),
    ]
    print("%d attendees, %d days, %d periods, one-hour meeting" % (
        args.attendees, args.days, periods))
    figures = []
    for name, group, step in cases:
        median, slowest, found = timed(args.repeat, lambda: find_slots(
            group, hour, window, step, 10, 50.0))
        best = found[0].confidence if found else None
        print("%-32s median %7.1f ms  slowest %7.1f ms  best %s %%" % (
            name, median * 1000, slowest * 1000, best))
        figures.append({"case": name, "median_ms": round(median * 1000, 2),
                        "slowest_ms": round(slowest * 1000, 2),
                        "suggestions": len(found), "best": best})
    if args.json:
        Path(args.json).write_text(json.dumps({
            "attendees": args.attendees, "days": args.days,
            "periods": periods, "cases": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
