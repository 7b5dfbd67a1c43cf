#!/usr/bin/env python3
"""Throughput: the 42-day REPORT and a mixed load, over worker processes
and instances, on this machine.

Loads:

- **report** (8 clients): the 42-day free/busy of the seeded
  2,000-event calendar (bench/common.py, the data of
  report_vs_radicale.py and three_way.py), again and again;
- **mixed** (32 clients, because a third of their time is spent waiting
  on the foreign system): per request, drawn at random (seeded), 60 %
  that REPORT, 20 % an RFC 6638 outbox POST for two foreign attendees
  (a free/busy URL server, the tests' ifb peer emulator, answering after
  a fixed delay; ``cache_ttl = 0``, so every POST asks it) and one local
  attendee, 20 % a PUT of a new event into a writer's calendar;
- **outbox** (32 clients, one worker only): that POST alone, for the
  CPU it costs (docs/deployment.md's arithmetic);
- **put** (8 clients, one and two workers): that PUT alone: writes hold
  Radicale's one storage lock;
- **lookups** (only with ``--loads lookups``; 32 clients, one and two
  workers): the mixed load without its PUTs (75 % REPORT, 25 % POST);
- **cold**: the first REPORT of the 2,000 events after a restart (the
  busy index on disk, nothing in memory): a user no worker holds.

Set-ups:

- ``[gateway] workers`` = 1, 2 and 4 (one instance);
- 2 instances of one worker each on one storage folder and one Redis
  (redis-server, scripts/install-redis; without it they share only the
  folder), the clients taking turns between them as a load balancer
  would.

Every request is on a fresh connection; every answer is checked (REPORT:
the same busy time as the first answer; POST: 2.0 for each attendee;
PUT: 201).  For each run it prints requests per second, latency
percentiles per kind, the CPU seconds the gateway processes used per
request (so requests per core-second), and their memory.

Usage:  .venv/bin/python bench/throughput.py [--quick] [--json F]
            [--loads report,mixed,outbox,put,lookups]
"""

import argparse
import datetime
import json
import multiprocessing
import os
import pathlib
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from typing import Dict, List, Optional

from common import (PASSWORD, USER, WINDOWS, Server, basic, free_busy_query,
                    fresh_request, make_calendar, process_tree)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from emulators.ifb_peer import IfbPeer  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa

#: Where gateway worker processes add up their metrics (gateway.metrics).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: The data of report_vs_radicale.py: same seed, same calendar.
SEED = 20261124
BIG = "/%s/big/" % USER
WRITERS = ["writer%d" % n for n in range(8)]
PEER_DOMAIN = "peer.example.net"
FOREIGN = 500
#: Share of each kind of request in each load.
LOADS = {"report": (("report", 1.0),),
         "mixed": (("report", 0.6), ("post", 0.2), ("put", 0.2)),
         "outbox": (("post", 1.0),),
         "put": (("put", 1.0),),
         "lookups": (("report", 0.75), ("post", 0.25))}
START, DAYS = WINDOWS["42d"]
END = START + datetime.timedelta(days=DAYS)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


# -- the foreign system -------------------------------------------------------


class DelayedPeer(IfbPeer):
    """The ifb peer emulator, answering every request after ``delay``
    seconds, as a foreign system across a network does."""

    def __init__(self, delay: float, busy) -> None:
        self.delay = delay
        super().__init__("calconnect", busy)

    def _handle(self, handler) -> None:
        time.sleep(self.delay)
        super()._handle(handler)


def foreign_busy() -> Dict[str, list]:
    """One busy hour for each foreign address, on its own day."""
    busy = {}
    for n in range(FOREIGN):
        start = START + datetime.timedelta(days=n % DAYS, hours=9 + n % 8)
        busy["p%d@%s" % (n, PEER_DOMAIN)] = [
            (start, start + datetime.timedelta(hours=1), "BUSY")]
    return busy


def _serve_peer(delay: float, pipe) -> None:
    peer = DelayedPeer(delay, foreign_busy())
    pipe.send(peer.url_template())
    pipe.recv()                 # anything: stop
    peer.close()


class PeerProcess:
    """The emulator in a process of its own, so that its work is not
    counted as the load generator's nor slowed by its threads."""

    def __init__(self, delay: float) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=_serve_peer,
                                               args=(delay, child),
                                               daemon=True)
        self.process.start()
        self.url_template = self.pipe.recv()

    def close(self) -> None:
        self.pipe.send("stop")
        self.process.join(10)


# -- the gateway processes ----------------------------------------------------


def processes(servers: List[Server]) -> List[int]:
    """Each instance's process and its workers."""
    pids = []
    for server in servers:
        pids.extend(process_tree(server.process.pid))
    return pids


def cpu_seconds(pids: List[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])      # utime, stime
    return total / ticks


def memory_mb(pids: List[int]) -> float:
    """Resident memory of the processes, MB (shared pages counted in
    each: an upper bound for forked workers)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# -- the requests -------------------------------------------------------------


class Load:
    """The requests of one load against some gateway instances."""

    def __init__(self, ports: List[int], reference: Optional[List[str]],
                 name: str) -> None:
        self.ports = ports
        self.reference = reference
        self.shares = LOADS[name]
        #: requests answered as they should be, by kind, warm-up included
        self.answered: Dict[str, int] = {}
        self.query = free_busy_query(START, DAYS)

    @staticmethod
    def busy_lines(data: bytes) -> List[str]:
        return sorted(line for line in data.decode().splitlines()
                      if line.startswith("FREEBUSY"))

    def first_report(self, port: int) -> None:
        """The busy time every later REPORT must give."""
        _, status, data = fresh_request(port, "REPORT", BIG, self.query, {
            "Depth": "1", "Content-Type": "application/xml",
            "Authorization": basic(USER, PASSWORD)})
        self.reference = self.busy_lines(data)
        if status != 200 or not self.reference:
            raise RuntimeError("the first REPORT: %d, %d busy lines" % (
                status, len(self.reference)))
        self.answered["report"] = self.answered.get("report", 0) + 1

    def report(self, port: int, rng: random.Random) -> float:
        elapsed, status, data = fresh_request(
            port, "REPORT", BIG, self.query, {
                "Depth": "1", "Content-Type": "application/xml",
                "Authorization": basic(USER, PASSWORD)})
        if status != 200:
            raise RuntimeError("REPORT: %d %s" % (status, data[:200]))
        if self.busy_lines(data) != self.reference:
            raise RuntimeError("REPORT: other busy time than the first")
        return elapsed

    def post(self, port: int, rng: random.Random) -> float:
        writer = rng.choice(WRITERS)
        attendees = ["p%d@%s" % (n, PEER_DOMAIN)
                     for n in rng.sample(range(FOREIGN), 2)] + [
            "%s@example.com" % rng.choice(WRITERS)]
        body = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\n"
                "METHOD:REQUEST\r\nBEGIN:VFREEBUSY\r\nUID:%s\r\n"
                "DTSTAMP:20260101T000000Z\r\nDTSTART:%s\r\nDTEND:%s\r\n"
                "ORGANIZER:mailto:%s@example.com\r\n%sEND:VFREEBUSY\r\n"
                "END:VCALENDAR\r\n" % (
                    uuid.uuid4(), stamp(START), stamp(END), writer,
                    "".join("ATTENDEE:mailto:%s\r\n" % a
                            for a in attendees)))
        elapsed, status, data = fresh_request(
            port, "POST", "/%s/.schedule-outbox/" % writer, body, {
                "Content-Type": "text/calendar; charset=utf-8",
                "Authorization": basic(writer, PASSWORD)})
        answers = re.findall(rb"<C:recipient><D:href>mailto:([^<]*)</D:href>"
                             rb"</C:recipient><C:request-status>([^<]*)<",
                             data)
        if status != 200 or [a[1][:4] for a in answers] != [b"2.0;"] * len(
                attendees):
            raise RuntimeError("POST: %d %s" % (status, answers or data[:300]))
        return elapsed

    def put(self, port: int, rng: random.Random) -> float:
        writer = rng.choice(WRITERS)
        start = START + datetime.timedelta(days=rng.randrange(DAYS),
                                           hours=rng.randrange(8, 18))
        uid = str(uuid.uuid4())
        body = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\n"
                "BEGIN:VEVENT\r\nUID:%s\r\nDTSTAMP:20260101T000000Z\r\n"
                "DTSTART:%s\r\nDTEND:%s\r\nSUMMARY:bench\r\nEND:VEVENT\r\n"
                "END:VCALENDAR\r\n" % (uid, stamp(start), stamp(
                    start + datetime.timedelta(minutes=30))))
        elapsed, status, data = fresh_request(
            port, "PUT", "/%s/cal/%s.ics" % (writer, uid), body, {
                "Content-Type": "text/calendar; charset=utf-8",
                "Authorization": basic(writer, PASSWORD)})
        if status != 201:
            raise RuntimeError("PUT: %d %s" % (status, data[:200]))
        return elapsed

    def kind(self, rng: random.Random) -> str:
        draw, total = rng.random(), 0.0
        for kind, share in self.shares:
            total += share
            if draw < total:
                return kind
        return self.shares[-1][0]

    def run(self, clients: int, seconds: float, seed: int) -> Dict:
        """``clients`` threads for ``seconds``: latencies per kind and
        failures."""
        stop = time.monotonic() + seconds
        latencies: Dict[str, List[float]] = {}
        failures: List[str] = []
        lock = threading.Lock()

        def client(number: int) -> None:
            rng = random.Random(seed * 1000 + number)
            turn = number
            while time.monotonic() < stop:
                kind = self.kind(rng)
                port = self.ports[turn % len(self.ports)]
                turn += 1
                try:
                    elapsed = getattr(self, kind)(port, rng)
                except (OSError, RuntimeError) as e:
                    with lock:
                        failures.append("%s: %s" % (kind, e))
                    continue
                with lock:
                    latencies.setdefault(kind, []).append(elapsed)
                    self.answered[kind] = self.answered.get(kind, 0) + 1

        threads = [threading.Thread(target=client, args=(n,))
                   for n in range(clients)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"seconds": time.monotonic() - began,
                "latencies": latencies, "failures": failures}


def scrape(port: int) -> Dict:
    """The instance's metrics: {(name, labels): [values]}."""
    _, status, data = fresh_request(port, "GET", "/.freebusy/metrics")
    if status != 200:
        raise RuntimeError("metrics: %d %s" % (status, data[:200]))
    found: Dict = {}
    for family in text_string_to_metric_families(data.decode()):
        for sample in family.samples:
            found.setdefault((sample.name, tuple(sorted(
                sample.labels.items()))), []).append(sample.value)
    return found


def value(found: Dict, name: str, **labels) -> float:
    """The largest sample of ``name`` whatever its other labels (pid)."""
    values = [v for (n, found_labels), samples in found.items()
              if n == name and set(labels.items()) <= set(found_labels)
              for v in samples]
    return max(values, default=0.0)


def counts_differ(answered: Dict[str, int], counted: List[Dict]
                  ) -> List[str]:
    """The gateway's own count of lookups (its metrics, every worker
    added up) against what the clients had answered."""
    wanted = {"report": answered.get("report", 0),
              "outbox": 3 * answered.get("post", 0)}
    problems = []
    for face, count in wanted.items():
        seen = sum(value(found, "fbgateway_lookups_total", face=face,
                         result="ok") for found in counted)
        if seen != count:
            problems.append("metrics: %d %s lookups counted, %d made" % (
                seen, face, count))
    return problems


def percentile(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# -- one set-up ---------------------------------------------------------------


class Setup:
    """Gateway instances on copies of the primed data."""

    def __init__(self, name: str, workers: int, instances: int) -> None:
        self.name = name
        self.workers = workers
        self.instances = instances


SETUPS = [Setup("1 worker", 1, 1), Setup("2 workers", 2, 1),
          Setup("4 workers", 4, 1),
          Setup("2 instances x 1 worker, one folder", 1, 2)]


def redis_server(directory: str):
    """A redis-server for instances that share state (the tests' own
    runner), or None when the machine has none."""
    if shutil.which("redis-server") is None:
        return None
    from redis_fixture import RedisServer
    return RedisServer(pathlib.Path(directory)).start()


def options(peer_template: str, workers: int, cache_url: str = "") -> str:
    """The [gateway] keys and the foreign system's provider section; its
    ``max_parallel`` is above what the clients can ask at once, so the
    runs measure the gateway, not that bound."""
    return ("workers = %d\ntimeout = 10\n%s\n[provider:peer]\ntype = ifb\n"
            "domains = %s\nurl = %s\nwindow_params = calconnect\n"
            "timeout = 5\ncache_ttl = 0\nmax_parallel = 64\n" % (
                workers, "cache = %s\n" % cache_url if cache_url else "",
                PEER_DOMAIN, peer_template))


def run_setup(setup: Setup, template: str, tmp: str, peer: PeerProcess,
              args, reference: Optional[List[str]], load_name: str,
              clients: int, number: int):
    folder = os.path.join(tmp, "run%d" % number)
    redis = None
    servers = []
    try:
        cache_url = ""
        if setup.instances > 1:
            redis = redis_server(os.path.join(folder, "redis"))
            cache_url = redis.url if redis is not None else ""
        for n in range(setup.instances):
            server = Server("gateway", os.path.join(folder, "gw%d" % n),
                            users=[USER] + WRITERS,
                            gateway_options=options(
                                peer.url_template, setup.workers,
                                cache_url))
            storage = os.path.join(server.directory, "collections")
            if n == 0:
                shutil.copytree(template, storage)
            else:           # one folder, as on a shared file system
                os.symlink(os.path.join(folder, "gw0", "collections"),
                           storage)
            # Each instance's workers add up their metrics in a folder.
            os.environ[MULTIPROC_ENV] = os.path.join(server.directory,
                                                     "metrics")
            os.makedirs(os.environ[MULTIPROC_ENV])
            server.start()
            servers.append(server)
        load = Load([s.port for s in servers], reference, load_name)
        if load.reference is None:
            load.first_report(servers[0].port)
        # Warm every worker's caches (connections land on any of them).
        warm = load.run(clients, args.warm_up, number)
        pids = processes(servers)
        cpu_before = cpu_seconds(pids)
        own_before = time.process_time()
        measured = load.run(clients, args.seconds, number + 100)
        cpu = cpu_seconds(pids) - cpu_before
        own = time.process_time() - own_before
        memory = memory_mb(processes(servers))
        counted = [scrape(server.port) for server in servers]
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        for server in servers:
            server.stop()
        if redis is not None:
            redis.stop()
    failures = warm["failures"] + measured["failures"]
    if not failures:
        failures = counts_differ(load.answered, counted)
    count = sum(len(v) for v in measured["latencies"].values())
    result = {
        "setup": setup.name, "load": load_name,
        "workers": setup.workers, "instances": setup.instances,
        "redis": bool(cache_url), "clients": clients,
        "requests": count, "per_second": count / measured["seconds"],
        "gateway_cpu_per_request_ms": 1000 * cpu / max(1, count),
        "per_core_second": count / cpu if cpu else 0.0,
        "client_cpu_share": own / measured["seconds"],
        "gateway_memory_mb": memory,
        "local_cache_cost_per_worker": max(
            value(found, "fbgateway_local_cache_cost") for found in counted),
        "failures": failures,
        "kinds": {kind: {"count": len(values),
                         "p50_ms": 1000 * statistics.median(values),
                         "p90_ms": 1000 * percentile(values, 0.9),
                         "p99_ms": 1000 * percentile(values, 0.99)}
                  for kind, values in sorted(
                      measured["latencies"].items())}}
    return result, load.reference


def cold_report(template: str, tmp: str, peer: PeerProcess,
                times: int = 5) -> Dict:
    """The first 42-day REPORT of the 2,000-event calendar after a
    restart (the busy index on disk, nothing in memory), after a REPORT
    of another calendar has warmed the process itself: what a lookup of
    a user no worker has in memory costs.  Medians of ``times`` restarts
    on one folder (a copied folder has new inodes, which the index does
    not trust: one run first settles it)."""
    server = Server("gateway", os.path.join(tmp, "cold"),
                    users=[USER] + WRITERS,
                    gateway_options=options(peer.url_template, 1))
    shutil.copytree(template, os.path.join(server.directory, "collections"))
    seconds, cpu = [], []
    for n in range(times + 1):
        server.start()
        try:
            server.report("/%s/cal/" % WRITERS[0], START, DAYS)
            before = cpu_seconds([server.process.pid])
            elapsed, _ = server.report(BIG, START, DAYS)
            if n:
                cpu.append(cpu_seconds([server.process.pid]) - before)
                seconds.append(elapsed)
            else:
                time.sleep(2)       # the index goes to disk
        finally:
            server.stop()
    return {"median_ms": 1000 * statistics.median(seconds),
            "cpu_ms": 1000 * statistics.median(cpu)}


def print_result(r: Dict) -> None:
    print("%-6s %2d clients, %-44s %6.1f req/s  gateway CPU %4.1f ms/req "
          "(%4.0f req per core-second)  memory %4.0f MB  client CPU %3.0f "
          "%%%s" % (
              r["load"], r["clients"],
              r["setup"] + (" + Redis" if r["redis"] else ""),
              r["per_second"], r["gateway_cpu_per_request_ms"],
              r["per_core_second"], r["gateway_memory_mb"],
              100 * r["client_cpu_share"],
              "  FAILURES: %d" % len(r["failures"]) if r["failures"]
              else ""))
    print("        local engine cache of one worker: %.0f units (about %.0f "
          "MB)" % (r["local_cache_cost_per_worker"],
                   r["local_cache_cost_per_worker"] * 400 / 1e6))
    for kind, k in r["kinds"].items():
        print("        %-6s %6d  p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms"
              % (kind, k["count"], k["p50_ms"], k["p90_ms"], k["p99_ms"]))
    sys.stdout.flush()


def prime(template: str, events: int) -> None:
    """The seeded calendar, writers' calendars, and Radicale's item cache
    and the gateway's busy index on disk built once by a REPORT, so no
    run pays for them."""
    server = Server("gateway", os.path.dirname(template) + "/prime",
                    users=[USER] + WRITERS)
    server.store(BIG, make_calendar(random.Random(SEED), "big", events))
    for writer in WRITERS:
        server.store("/%s/cal/" % writer, {})
    server.start()
    try:
        server.report(BIG, START, DAYS)
        server.report(BIG, START, DAYS)
        time.sleep(2)       # the busy index goes to disk
    finally:
        server.stop()
    shutil.copytree(os.path.join(server.directory, "collections"), template)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8,
                        help="clients of the REPORT load")
    parser.add_argument("--mixed-clients", type=int, default=32,
                        help="clients of the mixed and outbox loads, "
                        "whose POSTs wait on the foreign system")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="measured time per run")
    parser.add_argument("--warm-up", type=float, default=5.0)
    parser.add_argument("--peer-delay", type=float, default=0.1,
                        help="seconds the foreign system takes to answer")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--loads", default="report,mixed,outbox,put",
                        type=lambda text: text.split(","),
                        help="which loads to run (also: lookups, the mixed "
                        "load without its PUTs)")
    parser.add_argument("--quick", action="store_true",
                        help="short runs, for a smoke test")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warm_up = 3.0, 1.0
    load_before = os.getloadavg()
    results = []
    peer = PeerProcess(args.peer_delay)
    try:
        with tempfile.TemporaryDirectory(prefix="fbthroughput-") as tmp:
            template = os.path.join(tmp, "template")
            prime(template, args.events)
            print("%.0f s per run after %.0f s warm-up, %d CPUs, load "
                  "average before %.2f; the foreign system answers after "
                  "%.0f ms" % (args.seconds, args.warm_up, os.cpu_count(),
                               load_before[0], 1000 * args.peer_delay),
                  flush=True)
            reference = None
            runs = [(name, clients, setup)
                    for name, clients, setups in (
                        ("report", args.clients, SETUPS),
                        ("mixed", args.mixed_clients, SETUPS),
                        ("outbox", args.mixed_clients, SETUPS[:1]),
                        ("put", args.clients, SETUPS[:2]),
                        ("lookups", args.mixed_clients, SETUPS[:2]))
                    for setup in setups if name in args.loads]
            for number, (name, clients, setup) in enumerate(runs, 1):
                result, reference = run_setup(
                    setup, template, tmp, peer, args, reference, name,
                    clients, number)
                results.append(result)
                print_result(result)
            cold = cold_report(template, tmp, peer)
            print("cold   the first 42-day REPORT of the 2,000 events after "
                  "a restart: %.1f ms, %.1f ms CPU (median of 5)" % (
                      cold["median_ms"], cold["cpu_ms"]), flush=True)
    finally:
        peer.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(),
                       "cpus": os.cpu_count(), "load_before": load_before,
                       "args": vars(args), "results": results,
                       "cold_report": cold}, f, indent=2)
    failed = [r for r in results if r["failures"]]
    for r in failed:
        print("FAILED in %s %s: %s" % (r["load"], r["setup"],
                                       r["failures"][:3]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
