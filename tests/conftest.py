import os

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
