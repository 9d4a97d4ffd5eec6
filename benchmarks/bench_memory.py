"""Start-up time and peak memory of the command line (issue 14's goals), each in a fresh process.

    python benchmarks/bench_memory.py            # --help time; prune resnet50 peak RSS vs baseline
    python benchmarks/bench_memory.py --repeat 3 --model resnet50

* ``--help``: wall time of ``python main.py --help`` (parsing happens before torch is imported).
* peak RSS: ``main.py prune torchvision:MODEL --ratio 0.5 --no-latency`` against the baseline the
  issue names: a process that imports torch and torchvision and builds the same model. Both are
  read from the kernel's accounting of the finished child (``os.wait4``'s ``ru_maxrss``), so
  nothing in the measured process changes what it measures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one child process; its output is discarded."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.returncode:
        sys.exit(f"{' '.join(argv[1:3])} failed ({p.returncode}): {err.strip().splitlines()[-1:]}")
    return wall, usage.ru_maxrss * 1024  # Linux reports kilobytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50", help="torchvision classifier (default resnet50)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median)")
    a = ap.parse_args()
    py = sys.executable
    helps = [_run([py, "main.py", "--help"])[0] for _ in range(a.repeat)]
    print(f"main.py --help: median {statistics.median(helps):.2f} s "
          f"(runs: {', '.join(f'{h:.2f}' for h in helps)})")
    base_code = (f"import torch, torchvision; torch.manual_seed(0); "
                 f"torchvision.models.{a.model}(weights=None).eval()")
    with tempfile.TemporaryDirectory() as tmp:
        bases, prunes = [], []
        for i in range(a.repeat):  # alternating, so a change in the machine hits both
            bases.append(_run([py, "-c", base_code])[1])
            prunes.append(_run([py, "main.py", "prune", f"torchvision:{a.model}", "--input-shape",
                                "1,3,224,224", "--ratio", "0.5", "--no-latency",
                                "-o", os.path.join(tmp, f"pruned{i}.pt")])[1])
    b, p = statistics.median(bases), statistics.median(prunes)
    print(f"import torch + torchvision + build {a.model}: peak RSS {b / 1e9:.3f} GB")
    print(f"prune torchvision:{a.model} --ratio 0.5 --no-latency: peak RSS {p / 1e9:.3f} GB "
          f"= {p / b:.2f}x the baseline (goal <= 1.2x)")


if __name__ == "__main__":
    main()
