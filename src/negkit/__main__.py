"""``python -m negkit``: the ``negkit`` command, also under ``torchrun``::

    torchrun --nproc_per_node 2 -m negkit run config.toml

With ``WORLD_SIZE > 1`` the process group is started here (gloo: ``negkit run`` trains on the CPU) and ended when
the command returns; every rank trains (:func:`negkit.train.loop.fit`), rank 0 prints and writes the run folder,
the other ranks stay quiet.
"""

from __future__ import annotations

import sys

import torch.distributed as dist

from negkit.cli import main
from negkit.distributed import init_from_env, world


def run() -> None:
    """Run the command line; under ``torchrun``, inside a process group."""
    started = init_from_env("gloo")
    try:
        if world()[0] > 0:
            cli = sys.modules.get("negkit.cli.app")
            if cli is not None:
                cli.console.quiet = True
        main()
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    run()
