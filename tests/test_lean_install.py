"""The core install (torch + numpy) is enough for negkit.losses, negkit.negatives and negkit.metrics.

Each check runs in a fresh interpreter whose ``sys.meta_path`` starts with a finder that refuses every optional
package, as if only the core were installed (they are installed in the dev environment, so without the finder
nothing would be proved; ``test_the_blocker_catches_a_module_level_import`` shows that it does fail).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from negkit._optional import MissingDependencyError, available, require

ROOT = Path(__file__).resolve().parents[1]

#: Every optional top-level module (the extras' packages and what they pull in).
OPTIONAL = (
    "faiss",
    "sklearn",
    "scipy",
    "matplotlib",
    "pandas",
    "pyarrow",
    "mlxtend",
    "typer",
    "rich",
    "pydantic",
    "sentence_transformers",
    "transformers",
    "yaml",
)

BLOCKER = textwrap.dedent(
    f"""
    import json, sys

    BLOCKED = frozenset({OPTIONAL!r})


    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the lean-install test)", name=name)
            return None


    sys.meta_path.insert(0, _Blocker())
    assert not [m for m in sys.modules if m.partition(".")[0] in BLOCKED], "an optional module was already imported"


    def loaded_optional():
        return sorted({{m.partition(".")[0] for m in sys.modules if m.partition(".")[0] in BLOCKED}})
    """
)


def run_blocked(body: str) -> dict:
    """Run ``body`` after the blocker in a fresh interpreter; it prints one JSON object as its last line."""
    script = BLOCKER + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )
    assert done.returncode == 0, f"the lean-install script failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


CORE_USE = """
import torch

import negkit
import negkit.losses
import negkit.metrics
import negkit.negatives
from negkit._optional import MissingDependencyError

out = {"blocked": []}
for name in sorted(BLOCKED):  # the blocker really refuses each optional package
    try:
        __import__(name)
    except ImportError:
        out["blocked"].append(name)

torch.manual_seed(0)
# a loss: forward and backward, through the module and the registry
anchor = torch.randn(16, 8, requires_grad=True)
positive = torch.randn(16, 8)
loss = negkit.losses.InfoNCE(temperature=0.2)(anchor, positive) + negkit.losses.create_loss("dcl")(anchor, positive)
loss.backward()
out["loss_finite"] = bool(torch.isfinite(loss)) and bool(torch.isfinite(anchor.grad).all())
out["grad_nonzero"] = float(anchor.grad.abs().sum()) > 0

# samplers: the mined sampler's exact search against a brute-force top-k, and a uniform draw
anchors, pool = torch.randn(6, 8), torch.randn(50, 8)
mined = negkit.negatives.MinedSampler(4, backend="exact").sample(anchors, pool)
brute = (torch.nn.functional.normalize(anchors, dim=1) @ torch.nn.functional.normalize(pool, dim=1).T).topk(4).indices
out["mined_equals_bruteforce"] = bool((mined.indices.sort(dim=1).values == brute.sort(dim=1).values).all())
auto = negkit.negatives.MinedSampler(4, backend="auto", faiss_threshold=1, faiss_min_queries=1).sample(anchors, pool)
out["auto_falls_back_to_exact"] = bool((auto.indices == mined.indices).all())
uniform = negkit.negatives.UniformSampler(5).sample(anchors, pool, generator=torch.Generator().manual_seed(0))
out["uniform_shape"] = list(uniform.indices.shape)

# metrics: kNN accuracy and retrieval on two well separated classes
centres = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
labels = torch.arange(40) % 2
emb = centres[labels] + 0.1 * torch.randn(40, 3)
out["knn_acc"] = negkit.metrics.knn_accuracy(emb[:30], labels[:30], emb[30:], labels[30:], k=5)
out["retrieval"] = negkit.metrics.retrieval_metrics(emb, labels, ks=(1,))

# what needs an extra says which one
def error_of(call):
    try:
        call()
    except MissingDependencyError as error:
        return str(error)
    return None

probe = negkit.metrics.linear_probe_accuracy
out["probe_error"] = error_of(lambda: probe(emb[:30], labels[:30], emb[30:], labels[30:]))
out["faiss_error"] = error_of(lambda: negkit.negatives.MinedSampler(4, backend="faiss").sample(anchors, pool))
out["loaded_optional"] = loaded_optional()
print(json.dumps(out))
"""


def test_core_modules_work_without_any_optional_package():
    out = run_blocked(CORE_USE)
    assert out["blocked"] == sorted(OPTIONAL)
    assert out["loss_finite"] and out["grad_nonzero"]
    assert out["mined_equals_bruteforce"] and out["auto_falls_back_to_exact"]
    assert out["uniform_shape"] == [6, 5]
    assert out["knn_acc"] == 1.0
    assert out["retrieval"], "retrieval_metrics returned nothing"
    assert all(0.0 <= value <= 1.0 for value in out["retrieval"].values())
    assert out["probe_error"] is not None and "pip install 'negkit[cli]'" in out["probe_error"]
    assert "scikit-learn" in out["probe_error"]
    assert out["faiss_error"] is not None and "pip install 'negkit[faiss]'" in out["faiss_error"]
    assert "faiss-cpu" in out["faiss_error"]
    assert out["loaded_optional"] == []


def test_other_library_layers_import_without_optional_packages():
    out = run_blocked(
        """
        import negkit.data, negkit.distributed, negkit.io, negkit.report
        import negkit.integrations.sentence_transformers
        from negkit._optional import MissingDependencyError
        from negkit.report import plots

        try:
            plots.training_curves([], __import__("pathlib").Path("unused.png"))
        except MissingDependencyError as error:
            plot_error = str(error)
        else:
            plot_error = None
        print(json.dumps({"loaded_optional": loaded_optional(), "plot_error": plot_error}))
        """
    )
    assert out["loaded_optional"] == []
    assert out["plot_error"] is not None and "pip install 'negkit[cli]'" in out["plot_error"]


def test_the_blocker_catches_a_module_level_import():
    """The harness can fail: a module-level import of an optional package makes the script exit non-zero."""
    with pytest.raises(AssertionError, match="blocked by the lean-install test"):
        run_blocked("import matplotlib.pyplot\nprint('{}')")


def test_require_names_the_extra_and_the_package():
    assert require("json", "cli", "anything").dumps({}) == "{}"
    assert available("json") and not available("negkit_no_such_module")
    with pytest.raises(MissingDependencyError) as caught:
        require("negkit_no_such_module.sub", "text", "the widget")
    message = str(caught.value)
    assert message == "the widget needs negkit_no_such_module, which is not installed: pip install 'negkit[text]'"
    assert isinstance(caught.value, ImportError)
    assert (caught.value.module, caught.value.extra) == ("negkit_no_such_module.sub", "text")


def test_the_core_dependencies_are_torch_and_numpy_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for dep in project["dependencies"]}
    assert names == {"torch", "numpy"}
    extras = project["optional-dependencies"]
    assert {"cli", "faiss", "text", "data", "all", "dev"} <= set(extras)
    assert extras["all"] == ["negkit[cli,faiss,text,data]"]
    assert "negkit[all]" in extras["dev"]
    assert (ROOT / "src" / "negkit" / "py.typed").exists()
