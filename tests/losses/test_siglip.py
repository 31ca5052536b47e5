"""SigLIP (Zhai et al., ICCV 2023): float64 loop reference, gradcheck, labels, tiled == untiled, numerics, errors,
the module's learnable scale and bias, the registry, and parity with open_clip's ``SigLipLoss``."""

from __future__ import annotations

import importlib.util
import math
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from negkit.losses import (
    DegenerateBatchError,
    SigLIP,
    count_skipped,
    create_loss,
    get_loss,
    siglip,
    siglip_distributed,
    strict,
)
from tests.losses.helpers import grads, randint, randn

# ------------------------------------------------------------------------------------------------ the reference


def loop_siglip(anchor, positive, scale, bias, labels=None, reduction="mean"):
    """Eq. 1 of the paper with explicit loops, float64: ℓ_i = Σ_j −log σ(z_ij (t·cos_ij + b))."""
    rows = anchor.shape[0]
    per_anchor = []
    for i in range(rows):
        total = anchor.new_zeros(())
        for j in range(rows):
            a, p = anchor[i], positive[j]
            cosine = (a * p).sum() / (torch.sqrt((a * a).sum()) * torch.sqrt((p * p).sum()))
            same = i == j or (labels is not None and int(labels[i]) == int(labels[j]))
            z = 1.0 if same else -1.0
            x = z * (scale * cosine + bias)
            total = total + torch.log1p(torch.exp(-x))  # −log σ(x), moderate x only
        per_anchor.append(total)
    losses = torch.stack(per_anchor)
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.sum() / rows


def leaves(seed, rows=6, dim=5, scale=3.0, bias=-2.0):
    a = randn(seed, rows, dim, requires_grad=True)
    p = randn(seed + 1, rows, dim, requires_grad=True)
    t = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    return a, p, t, b


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_equals_the_float64_loop_in_value_and_gradient(reduction, with_labels, chunk_size):
    a, p, t, b = leaves(0)
    labels = torch.tensor([0, 1, 0, 2, 1, 3]) if with_labels else None
    out = siglip(a, p, logit_scale=t, logit_bias=b, labels=labels, chunk_size=chunk_size, reduction=reduction)
    ref = loop_siglip(a, p, t, b, labels, reduction)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    weights = torch.linspace(0.5, 1.5, 6, dtype=torch.float64) if reduction == "none" else 1.0
    for got, want in zip(
        grads((out * weights).sum(), a, p, t, b), grads((ref * weights).sum(), a, p, t, b), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_closed_form_on_orthonormal_rows():
    # a = p = I: cos_ii = 1, cos_ij = 0, so ℓ_i = softplus(−(t + b)) + (B − 1)·softplus(b).
    rows, t, b = 5, 7.0, -3.0
    eye = torch.eye(rows, dtype=torch.float64)
    expected = math.log1p(math.exp(-(t + b))) + (rows - 1) * math.log1p(math.exp(b))
    out = siglip(eye, eye, logit_scale=t, logit_bias=b, reduction="none")
    torch.testing.assert_close(out, torch.full((rows,), expected, dtype=torch.float64), rtol=1e-14, atol=0)
    # all rows one class: every pair is positive, ℓ_i = softplus(−(t + b)) + (B − 1)·softplus(−b)
    same = torch.zeros(rows, dtype=torch.long)
    expected = math.log1p(math.exp(-(t + b))) + (rows - 1) * math.log1p(math.exp(-b))
    torch.testing.assert_close(
        siglip(eye, eye, logit_scale=t, logit_bias=b, labels=same).double(), torch.tensor(expected, dtype=torch.float64)
    )


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_gradcheck(chunk_size):
    a, p, t, b = leaves(1, rows=4, dim=3)
    labels = torch.tensor([0, 1, 0, 2])

    def fn(a, p, t, b):
        return siglip(a, p, logit_scale=t, logit_bias=b, labels=labels, chunk_size=chunk_size, reduction="none")

    assert torch.autograd.gradcheck(fn, (a, p, t, b))


# ------------------------------------------------------------------------------------------------ labels, invariances


def test_labels_make_duplicates_positives():
    a, p, t, b = leaves(2)
    distinct = torch.arange(6)
    torch.testing.assert_close(
        siglip(a, p, logit_scale=t, logit_bias=b, labels=distinct), siglip(a, p, logit_scale=t, logit_bias=b)
    )
    # a duplicate row with the same label is a positive: identical to the loop where it is, not where it is not
    p_dup = p.detach().clone()
    p_dup[3] = p_dup[0]
    labels = torch.tensor([0, 1, 2, 0, 4, 5])
    with_labels = siglip(a, p_dup, logit_scale=t, logit_bias=b, labels=labels, reduction="none")
    torch.testing.assert_close(with_labels, loop_siglip(a, p_dup, t, b, labels, "none"))
    without = siglip(a, p_dup, logit_scale=t, logit_bias=b, reduction="none")
    changed = (with_labels - without).abs() > 1e-12
    assert changed.tolist() == [True, False, False, True, False, False]


def test_invariances():
    a, p, t, b = leaves(3)
    base = siglip(a, p, logit_scale=t, logit_bias=b, reduction="none")
    # cosine: each row's scale does not matter
    scales = torch.tensor([1e-20, 1.0, 3.0, 1e20, 0.5, 7.0], dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(
        siglip(a * scales, p * scales.flip(0), logit_scale=t, logit_bias=b, reduction="none"), base
    )
    # permuting the pairs permutes the per-anchor losses
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(siglip(a[perm], p[perm], logit_scale=t, logit_bias=b, reduction="none"), base[perm])
    # the sum over (i, j) is symmetric: swapping the towers keeps the total
    torch.testing.assert_close(siglip(p, a, logit_scale=t, logit_bias=b, reduction="sum"), base.sum())
    # float and tensor scale/bias agree
    torch.testing.assert_close(siglip(a, p, logit_scale=3.0, logit_bias=-2.0, reduction="none"), base)


def test_an_all_zero_row_has_cosine_zero_and_finite_gradients():
    a, p, t, b = leaves(4)
    a0 = a.detach().clone()
    a0[2] = 0.0
    a0.requires_grad_(True)
    out = siglip(a0, p, logit_scale=t, logit_bias=b)
    (ga,) = torch.autograd.grad(out, [a0])
    assert torch.isfinite(ga).all() and (ga[2] == 0).all()
    # row 2's logits are all b: ℓ_2 = softplus(−b) + (B − 1) softplus(b)
    row = siglip(a0, p, logit_scale=t, logit_bias=b, reduction="none")[2]
    bias = float(b.detach())
    torch.testing.assert_close(row.item(), math.log1p(math.exp(-bias)) + 5 * math.log1p(math.exp(bias)))


# ------------------------------------------------------------------------------------------------ tiled path


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 6, 7, 64])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_tiled_equals_untiled_in_value_and_every_gradient(chunk_size, reduction):
    a, p, t, b = leaves(5, rows=6, dim=4, scale=10.0, bias=-10.0)
    labels = randint(6, 3, 6)
    plain = siglip(a, p, logit_scale=t, logit_bias=b, labels=labels, reduction=reduction)
    tiled = siglip(a, p, logit_scale=t, logit_bias=b, labels=labels, reduction=reduction, chunk_size=chunk_size)
    torch.testing.assert_close(tiled, plain, rtol=1e-13, atol=1e-13)
    weights = randn(7, 6) if reduction == "none" else 1.0
    for got, want in zip(
        grads((tiled * weights).sum(), a, p, t, b), grads((plain * weights).sum(), a, p, t, b), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


def test_tiled_float32_with_a_module_parameter():
    torch.manual_seed(0)
    a, p = torch.randn(33, 8, requires_grad=True), torch.randn(33, 8, requires_grad=True)
    loss = SigLIP()
    plain = loss(a, p)
    g_plain = torch.autograd.grad(plain, [a, p, loss.log_logit_scale, loss.logit_bias])
    loss.chunk_size = 5
    tiled = loss(a, p)
    g_tiled = torch.autograd.grad(tiled, [a, p, loss.log_logit_scale, loss.logit_bias])
    torch.testing.assert_close(tiled, plain, rtol=1e-5, atol=1e-6)
    for got, want in zip(g_tiled, g_plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_tiled_peak_memory_is_that_of_one_tile():
    # The tiled forward never holds the [B, B] logits: the autograd graph keeps only [B, d] rows and [B] losses.
    a, p = torch.randn(512, 4, requires_grad=True), torch.randn(512, 4, requires_grad=True)
    saved: list[int] = []

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        siglip(a, p, logit_scale=10.0, logit_bias=-10.0, chunk_size=64).backward()
    assert max(saved) <= 512 * 4
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        siglip(a, p, logit_scale=10.0, logit_bias=-10.0)
    assert max(saved) >= 512 * 512  # the plain path does keep them


# ------------------------------------------------------------------------------------------------ numerics


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_finite_at_scale_100(dtype, chunk_size):
    a64, p64 = randn(8, 10, 16), randn(9, 10, 16)
    p64[:5] = a64[:5] + 0.01 * p64[:5]  # confident positives and negatives, large |logits|
    a = a64.to(dtype).requires_grad_(True)
    p = p64.to(dtype).requires_grad_(True)
    t = torch.tensor(100.0, requires_grad=True)
    b = torch.tensor(-10.0, requires_grad=True)
    out = siglip(a, p, logit_scale=t, logit_bias=b, chunk_size=chunk_size)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    for g in torch.autograd.grad(out, [a, p, t, b]):
        assert torch.isfinite(g).all()
    ref = loop_siglip(a.detach().double(), p.detach().double(), 100.0, -10.0)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_extreme_logits_stay_finite():
    # a logit of ±1e4 would overflow exp in float32; logsigmoid does not
    a = torch.eye(3, requires_grad=True)
    out = siglip(a, a, logit_scale=1e4, logit_bias=0.0, reduction="none")
    torch.testing.assert_close(out, torch.full((3,), 2 * math.log(2.0)))  # the b = 0 off-diagonal terms
    out = siglip(a, -a, logit_scale=1e4, logit_bias=0.0, reduction="none")  # positives at cos −1
    torch.testing.assert_close(out, torch.full((3,), 1e4 + 2 * math.log(2.0)))
    assert torch.isfinite(torch.autograd.grad(out.sum(), a)[0]).all()


# ------------------------------------------------------------------------------------------------ degenerate, errors


def test_empty_batch_is_zero_and_strict_raises():
    a = torch.zeros(0, 4, requires_grad=True)
    p = torch.zeros(0, 4, requires_grad=True)
    for chunk_size in (None, 2):
        with count_skipped() as skipped:
            out = siglip(a, p, logit_scale=10.0, logit_bias=-10.0, chunk_size=chunk_size)
        assert out.item() == 0.0 and out.requires_grad and skipped.calls == 1 and skipped.anchors == 0
        assert all((g == 0).all() for g in torch.autograd.grad(out, [a, p]))
    with strict(), pytest.raises(DegenerateBatchError, match="anchor is empty"):
        siglip(a, p, logit_scale=10.0, logit_bias=-10.0)
    # one pair is not degenerate: one positive logistic term
    one = torch.ones(1, 2)
    torch.testing.assert_close(
        siglip(one, one, logit_scale=2.0, logit_bias=-1.0), torch.tensor(math.log1p(math.exp(-1.0)))
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"logit_scale": 0.0}, "logit_scale must be a finite number > 0"),
        ({"logit_scale": -1.0}, "logit_scale must be a finite number > 0"),
        ({"logit_scale": math.nan}, "logit_scale must be a finite number > 0"),
        ({"logit_scale": math.inf}, "logit_scale must be a finite number > 0"),
        ({"logit_scale": "10"}, "logit_scale must be a number"),
        ({"logit_scale": torch.ones(2)}, "logit_scale must be a scalar"),
        ({"logit_scale": 1e38}, "overflow torch.float32"),
        ({"logit_bias": math.nan}, "logit_bias must be finite"),
        ({"logit_bias": torch.tensor(math.inf)}, "logit_bias must be finite"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"chunk_size": 2.5}, "chunk_size must be an int"),
        ({"reduction": "max"}, "reduction must be one of"),
        ({"labels": torch.zeros(3, dtype=torch.long)}, r"labels must have shape \[4\]"),
        ({"labels": torch.zeros(4)}, "labels must hold integer class ids"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    a, p = torch.randn(4, 3), torch.randn(4, 3)
    full = {"logit_scale": 10.0, "logit_bias": -10.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        siglip(a, p, **full)


def test_bad_inputs_are_clear_errors():
    a = torch.randn(4, 3)
    kw = {"logit_scale": 10.0, "logit_bias": -10.0}
    with pytest.raises(ValueError, match=r"positive must have the shape of anchor \(4, 3\)"):
        siglip(a, torch.randn(5, 3), **kw)
    with pytest.raises(ValueError, match=r"positive has dtype torch\.float64 but anchor has dtype torch\.float32"):
        siglip(a, a.double(), **kw)
    with pytest.raises(ValueError, match="anchor must be a floating-point tensor"):
        siglip(a.long(), a.long(), **kw)
    with pytest.raises(ValueError, match="anchor must be 2-D"):
        siglip(a[0], a[0], **kw)
    bad = a.clone()
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match="positive contains 1 non-finite"):
        siglip(a, bad, **kw)
    with pytest.raises(TypeError):
        siglip(a, a, logit_scale=10.0)  # the bias is required, as in open_clip's forward


# ------------------------------------------------------------------------------------------------ module, registry


def test_module_initialisation_state_dict_and_clamp():
    loss = SigLIP()
    assert loss.log_logit_scale.item() == pytest.approx(math.log(10.0)) and loss.logit_bias.item() == -10.0
    assert loss.logit_scale.item() == pytest.approx(10.0, rel=1e-6)
    assert set(loss.state_dict()) == {"log_logit_scale", "logit_bias"}
    assert {name for name, _ in loss.named_parameters()} == {"log_logit_scale", "logit_bias"}
    # the clamp: above log(100) the forward uses 100 and the scale gets no gradient
    with torch.no_grad():
        loss.log_logit_scale.fill_(math.log(500.0))
    assert loss.logit_scale.item() == pytest.approx(100.0, rel=1e-6)
    a, p = torch.randn(5, 3), torch.randn(5, 3)
    out = loss(a, p)
    torch.testing.assert_close(out, siglip(a, p, logit_scale=100.0, logit_bias=-10.0))
    g_scale, g_bias = torch.autograd.grad(out, [loss.log_logit_scale, loss.logit_bias])
    assert g_scale.item() == 0.0 and g_bias.item() != 0.0
    assert SigLIP(max_logit_scale=None, logit_scale=500.0).logit_scale.item() == pytest.approx(500.0, rel=1e-6)
    # round trip through a state dict
    other = SigLIP(logit_scale=1.0, logit_bias=0.0)
    other.load_state_dict(loss.state_dict())
    torch.testing.assert_close(other(a, p), out)
    frozen = SigLIP(learnable=False, logit_scale=3.0, logit_bias=-1.0)
    assert list(frozen.parameters()) == [] and set(frozen.state_dict()) == {"log_logit_scale", "logit_bias"}
    torch.testing.assert_close(frozen(a, p), siglip(a, p, logit_scale=3.0, logit_bias=-1.0), rtol=1e-5, atol=1e-6)


def test_module_scale_and_bias_learn():
    torch.manual_seed(0)
    a = torch.randn(16, 8)
    p = a + 0.1 * torch.randn(16, 8)
    loss = SigLIP()
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.01)
    first = None
    for _ in range(20):
        value = loss(a, p)
        first = value.item() if first is None else first
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert loss(a, p).item() < first
    assert loss.logit_scale.item() > 10.0  # aligned pairs: a sharper scale helps
    assert loss.skipped_anchors == 0


def test_module_errors_and_repr():
    with pytest.raises(ValueError, match="logit_scale must be a finite number > 0"):
        SigLIP(logit_scale=0.0)
    with pytest.raises(ValueError, match="logit_bias must be finite"):
        SigLIP(logit_bias=math.inf)
    with pytest.raises(ValueError, match="max_logit_scale must be a finite number > 0"):
        SigLIP(max_logit_scale=-1.0)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        SigLIP(chunk_size=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        SigLIP(reduction="avg")
    assert "logit_scale=10" in repr(SigLIP()) and "logit_bias=-10" in repr(SigLIP())


def test_registry_name_and_defaults():
    spec = get_loss("siglip")
    assert spec.name == "siglip" and spec.module is SigLIP and spec.function is siglip and spec.description
    assert dict(spec.defaults) == {"logit_scale": 10.0, "logit_bias": -10.0}
    module = create_loss("SigLIP", chunk_size=4)
    assert isinstance(module, SigLIP) and module.chunk_size == 4
    a, p = randn(10, 5, 3), randn(11, 5, 3)
    torch.testing.assert_close(module(a, p), spec.bind()(a, p), rtol=1e-6, atol=1e-7)


def test_distributed_form_is_siglip_in_one_process():
    a, p, t, b = leaves(12)
    labels = randint(13, 3, 6)
    for chunk_size in (None, 2):
        torch.testing.assert_close(
            siglip_distributed(a, p, logit_scale=t, logit_bias=b, labels=labels, chunk_size=chunk_size),
            siglip(a, p, logit_scale=t, logit_bias=b, labels=labels),
        )
    module = SigLIP(distributed=True)
    torch.testing.assert_close(module(a, p), SigLIP()(a, p))


# ------------------------------------------------------------------------------------------------ open_clip parity


def open_clip_loss() -> ModuleType:
    """open_clip's ``loss.py``, loaded from the installed package without its ``__init__`` (which imports
    torchvision and timm, whose wheels here are CUDA builds; the loss file needs torch only). Installed with
    ``pip install --no-deps open_clip_torch==3.3.0`` (the Makefile's ``PEER_WHEELS``)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("open_clip_torch is not installed (make installs it): pip install --no-deps open_clip_torch==3.3.0")
    path = f"{spec.submodule_search_locations[0]}/loss.py"
    loader = importlib.util.spec_from_file_location("open_clip_loss_for_negkit_tests", path)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_equals_open_clip_siglip_loss_in_value_and_gradient(seed, chunk_size):
    reference = open_clip_loss().SigLipLoss()
    a, p, _, _ = leaves(20 + seed, rows=8, dim=6)
    t = torch.tensor(10.0 * (seed + 1), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-10.0 + 3 * seed, dtype=torch.float64, requires_grad=True)
    # open_clip takes normalised features (its model normalises them); negkit normalises inside
    expected = reference(F.normalize(a, dim=1), F.normalize(p, dim=1), t, b)
    out = siglip(a, p, logit_scale=t, logit_bias=b, chunk_size=chunk_size)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads(out, a, p, t, b), grads(expected, a, p, t, b), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_equals_open_clip_in_float32_at_the_published_initialisation():
    reference = open_clip_loss().SigLipLoss()
    torch.manual_seed(3)
    a, p = torch.randn(64, 32, requires_grad=True), torch.randn(64, 32, requires_grad=True)
    module = SigLIP()
    expected = reference(F.normalize(a, dim=1), F.normalize(p, dim=1), module.logit_scale, module.logit_bias)
    out = module(a, p)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    params = [a, p, module.log_logit_scale, module.logit_bias]
    for got, want in zip(torch.autograd.grad(out, params), torch.autograd.grad(expected, params), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
