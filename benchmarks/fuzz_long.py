"""Long fuzzing run of the pruning engine: the property of tests/test_fuzz.py over thousands of
random networks (issue 6).

    python benchmarks/fuzz_long.py                 # 2000 examples (or $FUZZ_LONG_EXAMPLES)
    python benchmarks/fuzz_long.py 5000 --seed 7   # more, another random stream
    python benchmarks/fuzz_long.py 1000 --no-taylor
    python benchmarks/fuzz_long.py 3000 --shrink "shapes cannot be multiplied"
                                                   # find and shrink one failure of that kind

Unlike the CI test it does not stop at the first failure: every failing example is recorded,
failures are grouped by error signature, and the smallest spec of each group is printed (re-run
``fuzz_models.run_case(spec, ...)`` on it, or let tests/test_fuzz.py shrink it). Prints the number
of examples run, how many pruned something, how many plans were exact / approximate, the failures
and the time. ``--json FILE`` also writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from hypothesis import HealthCheck, given, seed as hseed, settings  # noqa: E402

import fuzz_models as fm  # noqa: E402


def signature(e: BaseException) -> str:
    first = (str(e).splitlines() or [""])[0]
    first = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "#", first)
    tb = traceback.extract_tb(e.__traceback__)
    where = next((f"{os.path.relpath(f.filename, ROOT)}:{f.name}" for f in reversed(tb)
                  if "/core/" in f.filename), "")
    return f"{type(e).__name__}: {first[:160]} [{where}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("examples", nargs="?", type=int,
                    default=int(os.environ.get("FUZZ_LONG_EXAMPLES", "2000")))
    ap.add_argument("--seed", type=int, default=0, help="hypothesis random seed")
    ap.add_argument("--max-ops", type=int, default=12)
    ap.add_argument("--min-ops", type=int, default=3)
    ap.add_argument("--no-taylor", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--shrink", metavar="TEXT",
                    help="stop at the first failure whose signature contains TEXT and let "
                         "hypothesis shrink it (other failures count as passes); print the result")
    args = ap.parse_args(argv)
    if args.shrink:
        return shrink(args)

    criteria = tuple(c for c in fm.CRITERIA if not (args.no_taylor and c == "taylor"))
    stats = collections.Counter()
    ops = collections.Counter()
    fails: dict[str, list] = collections.defaultdict(list)
    t0 = time.perf_counter()

    @hseed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fm.cases(max_ops=args.max_ops, criteria=criteria, min_ops=args.min_ops))
    def run(case):
        spec, ratio, criterion, global_ranking, seed = case
        stats["examples"] += 1
        ops.update({op.name for op in spec.ops})
        try:
            dg, res = fm.run_case(spec, ratio, criterion, global_ranking, seed)
        except Exception as e:  # noqa: BLE001 - every failure is recorded, not raised
            stats["failures"] += 1
            fails[signature(e)].append((len(spec.ops), repr(spec), dict(
                ratio=ratio, criterion=criterion, global_ranking=global_ranking, seed=seed)))
        else:
            stats["pruned"] += res.plan.n_removed > 0
            stats["prunable_groups"] += len(dg.prunable_groups)
            stats["exact" if res.verify.expected_exact else "approximate"] += res.plan.n_removed > 0
        if stats["examples"] % 100 == 0:
            print(f"  {stats['examples']} examples, {stats['failures']} failures, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)

    run()
    secs = time.perf_counter() - t0
    print(f"\nexamples run: {stats['examples']}  (ops {args.min_ops}-{args.max_ops}, seed={args.seed}, "
          f"criteria={','.join(criteria)})")
    print(f"pruned something: {stats['pruned']}  (exact plans {stats['exact']}, approximate by "
          f"design {stats['approximate']}); prunable groups seen: {stats['prunable_groups']}")
    print(f"failures: {stats['failures']} in {len(fails)} distinct signature(s)")
    print(f"time: {secs:.1f} s ({secs / max(stats['examples'], 1) * 1000:.0f} ms/example)")
    print("op coverage (examples containing it): " +
          ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1])))
    for sig, cases in fails.items():
        cases.sort(key=lambda c: c[0])
        print(f"\n=== {len(cases)} x {sig}\nsmallest:\n{cases[0][1]}\n{cases[0][2]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"stats": dict(stats), "seconds": secs, "ops": dict(ops),
                       "failures": {s: {"count": len(c), "smallest": c[0][1], "case": c[0][2]}
                                    for s, c in fails.items()}}, f, indent=1)
    return 1 if stats["failures"] else 0


def shrink(args):
    criteria = tuple(c for c in fm.CRITERIA if not (args.no_taylor and c == "taylor"))
    found = []

    @hseed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(fm.cases(max_ops=args.max_ops, criteria=criteria, min_ops=args.min_ops))
    def run(case):
        try:
            fm.run_case(*case)
        except Exception as e:  # noqa: BLE001
            sig = signature(e)
            if args.shrink in sig:
                found.append((case, sig, f"{type(e).__name__}: {e}"))
                raise AssertionError(sig) from None

    t0 = time.perf_counter()
    try:
        run()
    except AssertionError:
        case, sig, msg = found[-1]
        spec, ratio, criterion, global_ranking, seed = case
        print(f"shrunk ({time.perf_counter() - t0:.0f} s): {sig}\n{msg}\n{spec}\n"
              f"ratio={ratio}, criterion={criterion!r}, global_ranking={global_ranking}, seed={seed}")
        return 1
    print(f"no failure matching {args.shrink!r} in {args.examples} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
