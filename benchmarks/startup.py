"""Start-up of distdyn's light jobs: wall time of `python -m distdyn.MODULE --help` and the heavy modules it imports.

    python benchmarks/startup.py                         # this checkout
    python benchmarks/startup.py --checkout ../old_tree  # another checkout (e.g. a git worktree of an older commit)

A metric, table, phases, claims or plot job spends its first seconds importing; on the default study most
of a metric job's time. Each module is started `--repeat` times in a fresh interpreter (alternating, so
that a loaded machine slows every module alike) and the best time is printed, with the heavy packages
(timm, torchvision, torch) that importing the module pulls in.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

MODULES = ("metrics", "analysis", "claims", "plots")  # what the light rules run (tables: via metrics)
HEAVY = ("timm", "torchvision", "torch")
PROBE = ("import sys, importlib; importlib.import_module('distdyn.{m}'); "
         "print(' '.join(p for p in {heavy} if p in sys.modules))")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkout", default=str(Path(__file__).resolve().parents[1]), help="the tree to time")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    env = {"PYTHONPATH": str(Path(args.checkout) / "workflow"), "PATH": "/usr/bin:/bin"}
    best = {m: float("inf") for m in MODULES}
    for _ in range(args.repeat):
        for m in MODULES:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", f"distdyn.{m}", "--help"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            best[m] = min(best[m], time.perf_counter() - t0)
    print(f"checkout {args.checkout}, best of {args.repeat}")
    print(f"{'module':<10} {'--help (s)':>10}  imports")
    for m in MODULES:
        heavy = subprocess.run([sys.executable, "-c", PROBE.format(m=m, heavy=HEAVY)], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        print(f"{m:<10} {best[m]:>10.2f}  {heavy or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
