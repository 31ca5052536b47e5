"""The fuzz suite's counts by (subject, outcome); ``conftest.py`` prints them."""

from __future__ import annotations

from collections import Counter

TALLY: Counter[tuple[str, str]] = Counter()


def record(subject: str, outcome: str) -> None:
    """Count one fuzz example of ``subject`` that ended in ``outcome``."""
    TALLY[(subject, outcome)] += 1
