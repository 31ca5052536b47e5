"""Tally of the fuzz suite's outcomes, printed at the end of the pytest run (also under pytest-xdist, where each
worker sends its counts to the controller)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.fuzz.tally import TALLY

_KEY = "negkit_fuzz_tally"


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the counts to the controller
        workeroutput[_KEY] = json.dumps([[s, o, n] for (s, o), n in TALLY.items()])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # xdist hook, controller side
    for subject, outcome, count in json.loads(getattr(node, "workeroutput", {}).get(_KEY, "[]")):
        TALLY[(subject, outcome)] += count


def pytest_terminal_summary(terminalreporter) -> None:
    if not TALLY:
        return
    outcomes = sorted({outcome for _, outcome in TALLY})
    totals = Counter()
    for (_, outcome), count in TALLY.items():
        totals[outcome] += count
    write = terminalreporter.write_line
    terminalreporter.section("negkit fuzz suite: examples by outcome")
    write(f"{'subject':<26}" + "".join(f"{o:>18}" for o in outcomes))
    for subject in sorted({s for s, _ in TALLY}):
        write(f"{subject:<26}" + "".join(f"{TALLY[(subject, o)]:>18}" for o in outcomes))
    write(f"{'total':<26}" + "".join(f"{totals[o]:>18}" for o in outcomes) + f"   ({sum(totals.values())} examples)")
