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
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

from common import (TEAM, USER, WINDOWS, Server, busy_union, difference,
                    make_calendar)


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
