"""Longer fuzzing of REPORT and PUT, run by hand.

    .venv/bin/python tests/fuzz/fuzz_report_put.py [--seeds 200]
        [--first-seed 1000] [--cases 300] [--kind report|put|both]

Runs the same mutators as tests/test_fuzz_report_put.py over many more
seeds, in-process, and does not stop at the first finding: it prints
each distinct finding (5xx answer, request over the 20 s deadline, a
refused PUT that changed the calendar, a broken normal REPORT) once, with
its seed and the exact request, and exits 1 if there was any.  Turn each
new finding into a named case in tests/test_fuzz_report_put.py.
"""

import argparse
import pathlib
import random
import re
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

import test_fuzz_report_put as fuzz  # noqa: E402


def signature(error: BaseException) -> str:
    """What makes two findings the same: the first line, numbers out."""
    lines = str(error).splitlines() or [type(error).__name__]
    logged = [line for line in lines if line.startswith("server log:")]
    first = lines[0]
    if logged:
        # The exception the server logged, without the request path.
        first = re.sub(r"request on '[^']*'", "request", logged[0])
        first = re.sub(r"^(\S+ )\S+ (answered)", r"\1\2", first)
    return re.sub(r"\d+", "N", type(error).__name__ + ": " + first)[:200]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--kind", choices=("report", "put", "both"),
                        default="both")
    args = parser.parse_args(argv)
    findings = {}
    target = fuzz.Target()
    started = time.monotonic()
    runs = 0
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            kinds = ("report", "put") if args.kind == "both" else (
                args.kind,)
            for kind in kinds:
                rng = random.Random("%s-%d" % (kind, seed))
                for number in range(args.cases):
                    runs += 1
                    try:
                        if kind == "report":
                            path, user, headers, body = fuzz.report_case(rng)
                            target.request("REPORT", path, body, user=user,
                                           headers=headers)
                        else:
                            text = fuzz.ical_case(rng, "fz-%d-%d" % (
                                seed, number))
                            fuzz.check_put(target, fuzz.put_body(rng, text),
                                           rng.choice(fuzz.PUT_TYPES))
                        target.assert_alive()
                    except (AssertionError, Exception) as e:
                        key = signature(e)
                        if key not in findings:
                            findings[key] = (kind, seed, number, str(e))
                            print("FINDING %s seed %d case %d:\n%s\n" % (
                                kind, seed, number, str(e)[:3000]),
                                flush=True)
                        if isinstance(e, fuzz.RequestHung):
                            # The hung thread may hold locks: start over.
                            target = fuzz.Target()
    finally:
        print("%d cases in %.0f s, %d distinct findings" % (
            runs, time.monotonic() - started, len(findings)))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
