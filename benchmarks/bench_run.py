"""Wall time of ``skh2t run`` (the README's main command), against an earlier commit in one run.

Runs ``python -m skh2t run --quiet`` with this checkout, once per ``--n-jobs``
value, and, with ``--baseline REF``, the same command from a temporary git
worktree of ``REF`` (e.g. the commit before a change), one after the other on
the same machine. Prints every run's wall time, its stage timings from
``results.json`` and its table, then the ratios to the baseline. Extra
arguments after ``--`` go to every ``skh2t run``.

Run: ``python benchmarks/bench_run.py --baseline 7555c1c --n-jobs 1 2``
(about 4 minutes per run on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def skh2t_run(label: str, source: Path, arguments: list[str], output: Path) -> float:
    """Run ``skh2t run`` from the package in ``source``; print its table; return seconds."""
    environment = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, "-m", "skh2t", "run", "--quiet", "--output-dir", str(output)]
    start = time.perf_counter()
    result = subprocess.run(  # in source: python -m puts the working directory first
        [*command, *arguments],
        env=environment,
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - start
    timings = json.loads((output / "results.json").read_text()).get("timings", {})
    stages = ", ".join(f"{key} {value:.1f}" for key, value in timings.items())
    version = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"\n{label} (code at {version}): {seconds:.1f} s wall ({stages})", flush=True)
    print("\n".join(line for line in result.stdout.splitlines() if not line.startswith("wrote")))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REF", help="git commit to compare with")
    parser.add_argument("--n-jobs", type=int, nargs="+", default=[1])
    parser.add_argument("extra", nargs="*", help="more skh2t run arguments (after --)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="skh2t-bench-run-") as directory:
        directory = Path(directory)
        if args.baseline:
            tree = directory / "baseline"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline],
                check=True,
                capture_output=True,
            )
            try:
                label = f"baseline {args.baseline}"
                seconds[label] = skh2t_run(label, tree, args.extra, directory / "out-baseline")
            finally:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=True,
                )
        for n_jobs in args.n_jobs:
            label = f"this checkout, --n-jobs {n_jobs}"
            extra = [*args.extra, "--n-jobs", str(n_jobs)]
            seconds[label] = skh2t_run(label, ROOT, extra, directory / f"out-{n_jobs}")
    if args.baseline:
        base = seconds[f"baseline {args.baseline}"]
        for label, value in seconds.items():
            print(f"{label}: {value:.1f} s, {value / base:.2f}x the baseline's time")


if __name__ == "__main__":
    main()
