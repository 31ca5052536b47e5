"""Property-based fuzzing of every public loss, sampler, pool, metric and estimator (issue 14).

For each subject (``subjects.py``) hypothesis draws a valid call, then tries every mutation of it that applies:

* **malformed** input — a tensor of the wrong rank or length, an integer or half-precision tensor where floats
  are expected, NaN/inf entries, a list instead of a tensor, ids out of range or float ids/labels, a 0/1 mask
  holding 0.5, a bad hyper-parameter: the call must raise ``ValueError``/``TypeError`` whose message names the
  argument, or (where the input cannot matter, e.g. a uniform sampler never reads the pool's values) return a
  finite result equal to the clean call's;
* **extreme magnitudes** — every float input ×1e30, ×1e-30, ×1e15 or ×1e-15: a finite result equal to the
  reference (the unscaled call for cosine similarity, else the same call in float64), or for dot products whose
  logits overflow a clear error;
* **degenerate but legal** batches — empty, one row, all-zero rows: a loss gives 0 with a zero gradient connected
  to the inputs (and ``DegenerateBatchError`` in strict mode), a sampler an empty result, a metric a clear error;
* **valid** input — a finite value and finite gradients, equal to the float64 computation.

Every example is tallied by outcome (``conftest.py`` prints the counts): ``clear error``, ``finite & correct``,
``degenerate-zero``. Anything else (another exception, a NaN, a wrong value, an error that does not name its
argument) fails the test.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from torch import Tensor

from negkit.losses import DegenerateBatchError, count_skipped, strict
from negkit.negatives import Negatives
from tests.fuzz.subjects import SUBJECTS, Case, expected_subjects
from tests.fuzz.tally import record

#: valid calls drawn per subject (about 40 subjects), each tried with every mutation that applies (about 12);
#: NEGKIT_FUZZ_EXAMPLES overrides it for a longer hunt
EXAMPLES = int(os.environ.get("NEGKIT_FUZZ_EXAMPLES", "12"))
SCALES = (1e30, 1e-30, 1e15, 1e-15)
CLEAR = "clear error"
CORRECT = "finite & correct"
ZERO = "degenerate-zero"


def test_every_public_entry_point_is_fuzzed():
    missing = expected_subjects() - set(SUBJECTS)
    assert not missing, f"add a subject to tests/fuzz/subjects.py for: {sorted(missing)}"


# --------------------------------------------------------------------------------------------------------- helpers


def _clone(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in args.items()}


def _cast(case: Case, args: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    out = _clone(args)
    for name in case.floats:
        if isinstance(out.get(name), Tensor) and out[name].is_floating_point():
            out[name] = out[name].to(dtype)
    return out


def _run(case: Case, args: dict[str, Any], *, grad: bool = False) -> tuple[Any, dict[str, Tensor], int]:
    """Call the subject; for losses also backpropagate. Returns (output, input gradients, skipped anchors)."""
    args = _clone(args)
    leaves = {}
    if grad and case.kind == "loss":
        for name in case.floats:
            value = args.get(name)
            if isinstance(value, Tensor) and value.is_floating_point():
                args[name] = leaves[name] = value.detach().requires_grad_(True)
    with count_skipped() as skipped:
        out = case.call(args)
    grads: dict[str, Tensor] = {}
    if leaves:
        assert isinstance(out, Tensor) and out.requires_grad, "a loss must stay connected to its inputs"
        found = torch.autograd.grad(out.sum(), list(leaves.values()), allow_unused=True)
        grads = {name: g for name, g in zip(leaves, found, strict=True) if g is not None}
    return out, grads, skipped.anchors


def _flat(out: Any) -> list[Any]:
    if isinstance(out, dict):
        return [x for key in sorted(out) for x in _flat(out[key])]
    if isinstance(out, tuple | list):
        return [x for item in out for x in _flat(item)]
    return [out]


def _finite(out: Any) -> bool:
    for x in _flat(out):
        if isinstance(x, Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            return False
        if isinstance(x, float) and not math.isfinite(x):
            return False
    return True


def _close(out: Any, ref: Any, atol: float, rtol: float = 1e-3) -> bool:
    left, right = _flat(out), _flat(ref)
    if len(left) != len(right):
        return False
    for x, y in zip(left, right, strict=True):
        if isinstance(x, Tensor) and isinstance(y, Tensor):
            if x.shape != y.shape:
                return False
            if x.is_floating_point() or y.is_floating_point():
                if not torch.allclose(x.double(), y.double(), rtol=rtol, atol=atol):
                    return False
            elif not torch.equal(x, y):
                return False
        elif isinstance(x, float | int) and isinstance(y, float | int) and not isinstance(x, bool):
            if not math.isclose(float(x), float(y), rel_tol=rtol, abs_tol=atol):
                return False
        elif x != y:
            return False
    return True


def _same_draw(case: Case, out: Any, ref: Any, clean: dict[str, Any]) -> bool:
    """Sampler outputs: the same indices, or (ties broken differently after rescaling) equally similar rows."""
    if not isinstance(out, Negatives):
        return _close(out, ref, case.atol)
    if torch.equal(out.indices, ref.indices):
        return out.log_weights is None or _close(out.log_weights, ref.log_weights, 1e-3)
    anchors = torch.nn.functional.normalize(clean["anchors"].double(), dim=1)
    pool = torch.nn.functional.normalize(clean["pool"].double(), dim=1)

    def sims(indices: Tensor) -> Tensor:
        return (anchors.unsqueeze(1) * pool[indices.clamp(min=0)]).sum(-1).sort(dim=1).values

    return torch.allclose(sims(out.indices), sims(ref.indices), atol=1e-5)


def _names(message: str, names: set[str]) -> bool:
    return any(name in message for name in names)


def _arg_names(case: Case, *names: str) -> set[str]:
    chosen = set(names) if names else set(case.args)
    return chosen | {alias for name in chosen for alias in case.aliases.get(name, ())}


def _expect_error_or_same(case: Case, args: dict[str, Any], clean: dict[str, Any], names: set[str], atol: float):
    """Malformed input: a clear error naming ``names``, or a finite result equal to the call on ``clean`` (the input
    as it should have been read: unchanged, or the half-precision values in float32)."""
    try:
        out, _, _ = _run(case, args)
    except (ValueError, TypeError) as error:
        assert not isinstance(error, DegenerateBatchError), f"degenerate error outside strict mode: {error}"
        assert _names(str(error), names), f"the message does not name {sorted(names)}: {error}"
        return CLEAR
    assert _finite(out), f"accepted malformed input and returned a non-finite result: {out}"
    reference, _, _ = _run(case, clean)
    if isinstance(out, Tensor) and isinstance(reference, Tensor) and out.numel() == reference.numel():
        out = out.reshape(reference.shape)  # an elementwise function accepts any shape
    assert _same_draw(case, out, reference, clean) or _close(out, reference, atol), (
        f"accepted malformed input and returned {out}, not the clean result {reference}"
    )
    return CORRECT


def _valid(case: Case, args: dict[str, Any], *, allow_error: bool = False, zero_rows: bool = False) -> str:
    """A valid (or degenerate) call: finite value and gradients, equal to float64; 0 when it skipped everything."""
    try:
        out, grads, skipped = _run(case, args, grad=True)
    except (ValueError, TypeError) as error:
        assert allow_error, f"a valid call raised: {error!r}"
        assert not isinstance(error, DegenerateBatchError), f"degenerate error outside strict mode: {error}"
        assert _names(str(error), _arg_names(case)), f"the message names no argument: {error}"
        return CLEAR
    assert _finite(out), f"non-finite result on valid input: {out}"
    for name, g in grads.items():
        assert bool(torch.isfinite(g).all()), f"non-finite gradient for {name}"
        if zero_rows:
            assert float(g.abs().max()) < 1e4, f"unbounded gradient for {name} with an all-zero row"
    if case.check is not None:
        case.check(out, args)
    # every anchor skipped: 0 with a zero gradient (a partly skipped loss that rounds to 0 is compared below)
    zero_gradient = all(bool((g == 0).all()) for g in grads.values())
    if case.kind == "loss" and skipped and float(out.detach().abs().sum()) == 0.0 and zero_gradient:
        return ZERO
    if case.kind == "sampler":
        return CORRECT  # random draws: the contract (check) is what float64 cannot reproduce exactly
    reference, _, _ = _run(case, _cast(case, args, torch.float64))
    assert _close(out, reference, case.atol), f"float32 {out} differs from float64 {reference}"
    return CORRECT


# ------------------------------------------------------------------------------------------------------- mutations


def _tensors(case: Case, args: dict[str, Any]) -> list[str]:
    return [name for name, value in args.items() if isinstance(value, Tensor)]


def _mutations(case: Case) -> list[str]:
    tensors = _tensors(case, case.args)
    ranked = [name for name in tensors if case.args[name].dim() >= 1]
    found = ["valid", "one_row", "empty"] if case.batch else ["valid"]
    if tensors:
        found += ["ndim", "not_tensor"]
    if case.floats:
        found += ["dtype_int", "dtype_half", "nonfinite", "magnitude", "zero_rows"]
    if case.ints:
        found += ["ids_float"]
    if any(low is not None or high is not None for low, high in case.ints.values()):
        found += ["ids_range"]
    if case.masks:
        found += ["mask_values"]
    if case.scalars:
        found += ["bad_scalar"]
    if sum(name in case.batch for name in ranked) >= 2:
        found += ["length"]  # the batch-aligned inputs disagree
    return found


def _slice_batch(case: Case, args: dict[str, Any], rows: int) -> dict[str, Any]:
    out = _clone(args)
    for name in case.batch:
        if name in out:
            out[name] = out[name][:rows]  # tensors and lists (query → document relevance) alike
    return out


def _fuzz_one(case: Case, draw: Any, mutation: str) -> str:
    args = case.args
    if mutation == "valid":
        return _valid(case, args)

    if mutation == "one_row":
        return _valid(case, _slice_batch(case, args, 1), allow_error=case.kind in ("metric", "estimator"))

    if mutation == "empty":
        empty = _slice_batch(case, args, 0)
        if case.degenerate == "error":
            with pytest.raises((ValueError, TypeError)) as error:
                _run(case, empty)
            assert _names(str(error.value), _arg_names(case)), f"the message names no argument: {error.value}"
            return CLEAR
        out, grads, _ = _run(case, empty, grad=True)
        if case.kind == "loss":
            assert isinstance(out, Tensor) and out.requires_grad and float(out.detach().abs().sum()) == 0.0
            assert all(bool((g == 0).all()) for g in grads.values())
        else:
            assert (
                all(
                    x.numel() == 0
                    for x in _flat(out)
                    if isinstance(x, Tensor) and x.dim() >= 1 and x.dtype == torch.long
                )
                or case.kind == "pool"
            )
        if case.kind in ("loss", "sampler"):
            with strict(), pytest.raises(DegenerateBatchError):
                _run(case, empty)
        return ZERO

    if mutation == "zero_rows":
        name = draw(st.sampled_from([n for n in case.floats if args[n].dim() >= 2 and args[n].shape[0]]), label="arg")
        mutated = _clone(args)
        mutated[name][0] = 0.0
        if case.kind == "metric":  # metrics reject a row without a direction
            return _valid(case, mutated, allow_error=True, zero_rows=True)
        return _valid(case, mutated, zero_rows=True)

    if mutation == "magnitude":
        scale = draw(st.sampled_from(SCALES), label="scale")
        scaled = _clone(args)
        for name in case.floats:
            scaled[name] = scaled[name] * scale
        if case.scale_invariant:
            out, grads, _ = _run(case, scaled, grad=True)
            assert _finite(out) and all(bool(torch.isfinite(g).all()) for g in grads.values()), out
            reference, _, _ = _run(case, args)
            assert _same_draw(case, out, reference, args) or _close(out, reference, case.atol), (
                f"×{scale:g} gives {out}, unscaled {reference}"
            )
            return CORRECT
        try:
            out, _, _ = _run(case, scaled)
        except (ValueError, TypeError) as error:
            names = _arg_names(case) | {"similarity", "temperature"}
            assert _names(str(error), names), f"the message names no argument: {error}"
            return CLEAR
        assert _finite(out), f"×{scale:g} gives a non-finite result {out}"
        reference, _, _ = _run(case, _cast(case, scaled, torch.float64))
        assert _close(out, reference, case.atol), f"×{scale:g} gives {out}, float64 {reference}"
        return CORRECT

    tensors = _tensors(case, args)
    mutated = _clone(args)
    if mutation == "ndim":
        name = draw(st.sampled_from(tensors), label="arg")
        value = mutated[name]
        mutated[name] = value.unsqueeze(0) if value.dim() <= 1 or draw(st.booleans()) else value.reshape(-1)
        return _expect_error_or_same(case, mutated, args, _arg_names(case, name), case.atol)
    if mutation == "not_tensor":
        name = draw(st.sampled_from(tensors), label="arg")
        mutated[name] = mutated[name].tolist()
        return _expect_error_or_same(case, mutated, args, _arg_names(case, name), case.atol)
    if mutation == "length":
        aligned = [n for n in tensors if n in case.batch and args[n].dim() >= 1 and args[n].shape[0] >= 1]
        name = draw(st.sampled_from(aligned), label="arg")
        mutated[name] = mutated[name][:-1]
        return _expect_error_or_same(case, mutated, args, _arg_names(case), case.atol)
    if mutation == "dtype_int":
        name = draw(st.sampled_from(case.floats), label="arg")
        mutated[name] = mutated[name].round().long()
        return _expect_error_or_same(case, mutated, args, _arg_names(case), case.atol)
    if mutation == "dtype_half":  # an error (mixed dtypes), or computed in float32 from the rounded values
        name = draw(st.sampled_from(case.floats), label="arg")
        mutated[name] = mutated[name].half()
        rounded = _clone(mutated)
        rounded[name] = rounded[name].float()
        return _expect_error_or_same(case, mutated, rounded, _arg_names(case), max(case.atol, 1e-3))
    if mutation == "nonfinite":
        name = draw(st.sampled_from([n for n in case.floats if args[n].numel()]), label="arg")
        position = draw(st.integers(0, args[name].numel() - 1), label="position")
        mutated[name].view(-1)[position] = draw(st.sampled_from([math.nan, math.inf, -math.inf]), label="value")
        return _expect_error_or_same(case, mutated, args, _arg_names(case, name), case.atol)
    if mutation == "ids_float":
        name = draw(st.sampled_from(sorted(case.ints)), label="arg")
        mutated[name] = mutated[name].double() + 0.5
        return _expect_error_or_same(case, mutated, args, _arg_names(case, name), case.atol)
    if mutation == "ids_range":
        bounded = sorted(n for n, (low, high) in case.ints.items() if low is not None or high is not None)
        name = draw(st.sampled_from(bounded), label="arg")
        low, high = case.ints[name]
        if mutated[name].numel() == 0:
            return _valid(case, mutated)
        flat = mutated[name].view(-1)
        flat[draw(st.integers(0, flat.numel() - 1), label="position")] = (
            high if high is not None and (low is None or draw(st.booleans())) else low - 1
        )
        return _expect_error_or_same(case, mutated, args, _arg_names(case, name), case.atol)
    if mutation == "mask_values":
        name = draw(st.sampled_from(case.masks), label="arg")
        mutated[name] = mutated[name].float()
        mutated[name].view(-1)[0] = 0.5
        return _expect_error_or_same(case, mutated, args, _arg_names(case, name), case.atol)
    if mutation == "bad_scalar":
        name = draw(st.sampled_from(sorted(case.scalars)), label="arg")
        mutated[name] = draw(st.sampled_from(case.scalars[name]), label="value")
        return _expect_error_or_same(case, mutated, args, _arg_names(case, name), case.atol)
    raise AssertionError(f"unknown mutation {mutation}")


@pytest.mark.parametrize("name", sorted(SUBJECTS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    database=None,
)
@given(data=st.data())
def test_fuzz(name, data):
    case = SUBJECTS[name].build(data.draw)
    for mutation in _mutations(case):  # every kind of input that applies, each on its own copy of the case
        note(f"mutation: {mutation}")
        record(name, _fuzz_one(case, data.draw, mutation))
