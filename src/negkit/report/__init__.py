"""Markdown report and plots of a finished run, rebuilt from the files the run saved (never typed by hand)."""

from negkit.report.markdown import write_report

__all__ = ["write_report"]
