"""The one training loop of ``negkit run``: every task trains through :func:`fit`.

It owns what every task needs the same way: seeding (every strategy starts from the same initial weights),
AdamW with linear warm-up and cosine decay per step, optional gradient-norm clipping, an atomic checkpoint after
every epoch (model, strategy, task state, optimiser, schedule, random generator, history) and resume from it,
the epoch records (loss, learning rate, seconds, the task's step means and epoch metrics), and progress
callbacks. The task supplies the model, the batches and the loss (:class:`negkit.tasks.Task`).

Across processes (``torchrun --nproc_per_node N -m negkit run config.toml``: a process group is running, see
:mod:`negkit.distributed`) every rank builds the same model and draws the same batches from the same seed; the
batch-norm layers normalise with the statistics of the global batch (:func:`negkit.distributed.sync_batch_norm`)
and the model is wrapped in ``DistributedDataParallel``, kept in ``trainee.scratch["ddp"]``: a task that trains
across processes (``trains_across_processes = True``) encodes its rank's slice of each global batch through it and
gathers the outputs with gradient before the loss, so every strategy sees the global batch (global negatives)
and the parameters move as in one process on the whole batch. Only rank 0 writes the checkpoint; every rank
resumes from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from negkit.distributed import on_main, sync_batch_norm, world
from negkit.tasks import Task, Trainee
from negkit.train.checkpoint import load_training_state, save_training_state
from negkit.train.schedule import warmup_cosine

logger = logging.getLogger(__name__)
EpochCallback = Callable[[dict[str, Any]], None]


def fit(
    task: Task,
    entry: str,
    checkpoint: Path,
    *,
    on_epoch_end: EpochCallback | None = None,
) -> tuple[Trainee, list[dict[str, Any]]]:
    """Train the strategy ``entry`` of ``task`` for ``config.train.epochs`` epochs, resuming from ``checkpoint``
    when it exists; return the trained :class:`Trainee` and the epoch records (one dict per epoch)."""
    config = task.config
    settings = config.train
    processes = world()[1]
    if processes > 1 and not getattr(task, "trains_across_processes", False):
        raise ValueError(f"the {task.name} task does not train across processes; run it in one process")
    torch.manual_seed(config.seed)  # every strategy starts from the same initial weights
    trainee = task.build(entry)
    if processes > 1:
        distribute(trainee)
    optimizer = torch.optim.AdamW(trainee.parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = task.steps_per_epoch(trainee)
    scheduler = warmup_cosine(optimizer, settings.epochs * steps_per_epoch, settings.warmup_epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    if hasattr(trainee.strategy, "generator"):
        trainee.strategy.generator = generator
    stateful = {**trainee.checkpointed(), "optimizer": optimizer, "scheduler": scheduler}
    history, start_epoch = load_training_state(checkpoint, generator=generator, **stateful)
    if start_epoch:
        logger.info("%s: resuming after epoch %d", entry, start_epoch)

    for epoch in range(start_epoch, settings.epochs):
        trainee.model.train()
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        task.start_epoch(trainee, epoch, generator)
        sums = dict.fromkeys(("loss", *task.step_fields), 0.0)
        steps = skipped = 0
        for batch in task.batches(trainee, generator):
            result = task.step(trainee, batch, generator)
            if result is None:
                skipped += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            if settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(trainee.parameters, settings.grad_clip)
            optimizer.step()
            scheduler.step()
            sums["loss"] += result.loss.item()
            for key, value in result.logs.items():
                sums[key] = sums.get(key, 0.0) + value
            steps += 1
        seconds = time.perf_counter() - started
        trainee.model.eval()
        record: dict[str, Any] = {
            "strategy": entry,
            "epoch": epoch + 1,
            "lr": lr,
            "seconds": seconds,
            **{key: value / max(steps, 1) for key, value in sums.items()},
            "skipped_batches": skipped,
        }
        record.update(task.end_epoch(trainee, epoch, epoch + 1 == settings.epochs))
        history.append(record)
        on_main(
            partial(save_training_state, checkpoint, generator=generator, epoch=epoch + 1, history=history, **stateful)
        )
        if on_epoch_end is not None:
            on_epoch_end(record)
    trainee.model.eval()
    return trainee, history


def distribute(trainee: Trainee) -> None:
    """Make ``trainee`` train across the running process group: global batch norm in its model, and the model
    wrapped in ``DistributedDataParallel`` (``trainee.scratch["ddp"]``; ``trainee.model`` stays the plain module
    for evaluation and checkpoints). Parameters outside the model (a strategy's) need no exchange: every rank
    computes the same global loss, so their gradients are equal on every rank."""
    sync_batch_norm(trainee.model)
    trainee.scratch["ddp"] = DistributedDataParallel(trainee.model)
