import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "negkit",
    max_examples=int(os.environ.get("NEGKIT_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("NEGKIT_HYPOTHESIS_RANDOM") is None,
)
settings.load_profile("negkit")
torch.set_num_threads(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Every dependency of the tests is in ``negkit[dev]`` (what ``make test`` installs): a skipped test is a
    missing dependency or a broken set-up, so it fails. ``NEGKIT_ALLOW_SKIP=1`` allows skips (a partial install)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and not os.environ.get("NEGKIT_ALLOW_SKIP"):
        report.outcome = "failed"
        report.longrepr = f"skipped ({report.longrepr}); every test dependency is in negkit[dev]"
