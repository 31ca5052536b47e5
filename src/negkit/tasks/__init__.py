"""Tasks of ``negkit run``: the :class:`Task` interface, its registry, and the built-in tasks (contrastive,
recommendation, retrieval), each one file and one registration."""

from negkit.tasks import contrastive as _contrastive  # noqa: F401  (registers the built-in tasks)
from negkit.tasks import recommendation as _recommendation  # noqa: F401
from negkit.tasks import retrieval as _retrieval  # noqa: F401
from negkit.tasks.base import Column, StepResult, Strict, Task, Trainee, get_task, list_tasks, register_task

__all__ = ["Column", "StepResult", "Strict", "Task", "Trainee", "get_task", "list_tasks", "register_task"]
