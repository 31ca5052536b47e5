"""One entry point for the benchmarks: ``python benchmarks/run.py SUITE [--quick] [options]``.

Suites: ``losses`` (negkit's losses vs plain torch, open_clip, pytorch-metric-learning and sentence-transformers),
``samplers`` (the negative samplers as the pool grows, and mining at scale), ``mcmc`` (an EMC² step vs exact
sampling). Each of these three first measures the machine's limits (matmul GFLOP/s, exp/s, memory bandwidth) and
states every row's time against the lower bound of its work. Results go to
``benchmarks/results/SUITE.{json,md}`` (``SUITE_quick`` with ``--quick``). ``run.py SUITE --help`` describes a
suite and lists its options; ``--list`` prints its cells. The harness is ``benchmarks/harness.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

SUITES = ("losses", "samplers", "mcmc", "mining", "siglip")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SUITES:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    harness.main(harness.load_suite(argv[0]), argv[1:], name=argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
