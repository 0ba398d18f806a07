"""Measure aioportclaim side by side with its peers and write docs/benchmarks.md.

Usage: python tests/benchmarks/run.py [--quick] [--output DIR]

One run measures the latency of one claim, collisions in herds of 8, 32 and
64 processes, the cost of filling a 2,000-port range, and descriptors and
memory per held claim, with the candidates interleaved. It prints PASS or
MISS for each target and writes benchmarks.md and benchmarks.png to the
output directory (docs/ by default). A full run takes a few minutes on two
cores and --quick about one; `nox -s bench` calls this script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and trials, for a check"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "docs",
        help="directory for benchmarks.md and benchmarks.png (default: docs/)",
    )
    args = parser.parse_args()
    # The benchmark modules live in the tests package, which this script,
    # run by path, does not find on its own.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.benchmarks.suite import run_suite

    run_suite(quick=args.quick, output=args.output)


if __name__ == "__main__":
    main()
