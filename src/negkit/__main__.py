"""``python -m negkit``: the ``negkit`` command, also under ``torchrun``::

    torchrun --nproc_per_node 2 -m negkit run config.toml

Each command starts the process group it needs from torchrun's environment (``negkit run``: gloo, it trains on
the CPU, :func:`negkit.train.runner.prepare_run_dir`; ``negkit mine``: its own); here the ranks other than 0 are
made quiet (rank 0 prints), and a group still running when the command returns is ended.
"""

from __future__ import annotations

import os
import sys

import torch.distributed as dist

from negkit.cli import main


def run() -> None:
    """Run the command line; under ``torchrun``, quiet on ranks > 0."""
    if os.environ.get("RANK", "0") != "0":
        cli = sys.modules.get("negkit.cli.app")
        if cli is not None:
            cli.console.quiet = True
    try:
        main()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    run()
