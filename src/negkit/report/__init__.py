"""Building blocks of run reports: plots (matplotlib) and markdown tables. The run report itself is written by
:func:`negkit.train.report.write_report`, which asks each task for its sections."""
