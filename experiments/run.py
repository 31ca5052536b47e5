"""One entry point for the evidence: ``python experiments/run.py NAME [--quick] [--document D] [--runs R]``.

Runs the experiments behind one section of ``docs/results.md`` and rewrites that section (figures go to
``D``'s ``figures/`` folder). NAME: ``negatives`` (which negatives), ``global`` (dataset-wide negatives at small
batch), ``how-many`` (predicted K* vs the measured best K, and ANS), ``retrieval`` (dual-encoder retrieval with a
real sentence encoder), ``momentum`` (MoCo's momentum encoder vs SimCLR at batch 32), ``logq`` (the
logQ correction of in-batch negatives on MovieLens-100k). Finished runs in ``R`` with an identical config are
reused, interrupted ones resumed.
``--quick`` is a smoke test: a few epochs, one seed. The experiments are in ``experiments/evidence/``; they are
research code, not part of the installed library (``make evidence NAME=...`` runs this script).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence import EVIDENCE, update_section


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="experiments/run.py",
        description="Run the experiments behind a section of docs/results.md and rewrite that section.",
    )
    parser.add_argument("name", choices=list(EVIDENCE), help="which evidence")
    parser.add_argument("--quick", action="store_true", help="a few epochs and one seed: a smoke test")
    parser.add_argument("--document", type=Path, default=Path("docs/results.md"), help="the results document to update")
    parser.add_argument("--runs", type=Path, default=Path("runs/evidence"), help="folder for the runs behind it")
    args = parser.parse_args(argv)
    _progress(f"evidence {args.name}{' (quick)' if args.quick else ''}: runs in {args.runs}")
    body = EVIDENCE[args.name](args.runs, args.document.parent / "figures", quick=args.quick, progress=_progress)
    _progress(f"updated {update_section(args.document, args.name, body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
