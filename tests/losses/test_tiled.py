"""The tiled (memory-saving) path of info_nce equals the plain path in value and gradient."""

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import negkit.losses.functional.nce as nce
from negkit.losses import info_nce, strict
from negkit.losses.functional.tiled import tiled_logsumexp
from tests.losses.helpers import randint, randn

cases = st.tuples(
    st.integers(1, 9),  # B
    st.integers(0, 6),  # K shared negatives
    st.integers(1, 11),  # chunk size
    st.booleans(),  # labels
    st.booleans(),  # log-weights
    st.booleans(),  # symmetric
    st.sampled_from(["cosine", "dot"]),
    st.integers(0, 2**31 - 1),
)


@given(cases)
def test_tiled_equals_plain_in_value_and_gradient(case):
    B, K, chunk, use_labels, use_weights, symmetric, similarity, seed = case
    if symmetric:
        K = 0
    a, p = randn(seed, B, 5, requires_grad=True), randn(seed + 1, B, 5, requires_grad=True)
    negatives = randn(seed + 2, K, 5, requires_grad=True) if K else None
    weights = randn(seed + 3, K, requires_grad=True) if K and use_weights else None
    labels = randint(seed + 4, 3, B) if use_labels else None
    has_in_batch_negative = B > 1 and (labels is None or bool((torch.bincount(labels)[labels] < B).all()))
    assume(K > 0 or has_in_batch_negative)
    kwargs = dict(
        negative_log_weights=weights,
        labels=labels,
        symmetric=symmetric,
        similarity=similarity,
        temperature=0.3,
        reduction="none",
    )
    plain = info_nce(a, p, negatives, **kwargs)
    tiled = info_nce(a, p, negatives, chunk_size=chunk, **kwargs)
    torch.testing.assert_close(tiled, plain)
    inputs = [t for t in (a, p, negatives, weights) if t is not None]
    weights_out = torch.linspace(0.5, 1.5, B, dtype=plain.dtype)  # a non-uniform upstream gradient
    for g_tiled, g_plain in zip(
        torch.autograd.grad((tiled * weights_out).sum(), inputs),
        torch.autograd.grad((plain * weights_out).sum(), inputs),
        strict=True,
    ):
        torch.testing.assert_close(g_tiled, g_plain)


def test_gradcheck_of_the_tiled_function():
    a, c = randn(0, 4, 3, requires_grad=True), randn(1, 6, 3, requires_grad=True)
    w = randn(2, 6, requires_grad=True)
    labels, col_labels = torch.tensor([0, 1, 0, 2]), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.autograd.gradcheck(
        lambda a, c, w: tiled_logsumexp(
            a,
            c,
            2.0,
            log_weights=w,
            row_labels=labels,
            col_labels=col_labels,
            own_column=torch.tensor([0, 1, 2, 3]),
            chunk_size=4,
        ),
        (a, c, w),
    )


def test_automatic_tiling_above_the_threshold_and_errors(monkeypatch):
    a, p = randn(0, 6, 4), randn(1, 6, 4)
    plain = info_nce(a, p)
    calls = []
    original = nce.tiled_logsumexp
    monkeypatch.setattr(nce, "tiled_logsumexp", lambda *args, **kw: calls.append(kw) or original(*args, **kw))
    monkeypatch.setattr(nce, "AUTO_TILE_LOGITS", 10)
    torch.testing.assert_close(info_nce(a, p), plain)
    assert calls and calls[0]["chunk_size"] == nce.auto_chunk(6, 6, 4) == min(nce.AUTO_CHUNK, 6)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        info_nce(a, p, chunk_size=0)
    assert info_nce(a, p, labels=torch.zeros(6, dtype=torch.long), chunk_size=2).item() == 0.0
    with strict(), pytest.raises(ValueError, match=r"anchors \[0, 1, 2, 3, 4, 5\] have no negative left after masking"):
        info_nce(a, p, labels=torch.zeros(6, dtype=torch.long), chunk_size=2)


def test_low_temperature_stays_finite_when_tiled():
    a = randn(0, 64, 16).float().requires_grad_(True)
    p = (a.detach() + 0.01 * randn(1, 64, 16).float()).requires_grad_(True)
    loss = info_nce(a, p, temperature=0.01, chunk_size=7)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()
    torch.testing.assert_close(loss, info_nce(a.detach(), p.detach(), temperature=0.01), rtol=1e-5, atol=1e-5)


@given(st.integers(2, 14), st.integers(1, 5), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_tiled_sup_con_equals_plain(N, classes, chunk, seed):
    from negkit.losses import sup_con

    x = randn(seed, N, 4, requires_grad=True)
    labels = randint(seed + 1, classes, N)
    assume(bool((torch.bincount(labels) > 1).any()))
    plain = sup_con(x, labels, temperature=0.2, reduction="none")
    tiled = sup_con(x, labels, temperature=0.2, reduction="none", chunk_size=chunk)
    torch.testing.assert_close(tiled, plain)
    torch.testing.assert_close(sup_con(x, labels, chunk_size=chunk), sup_con(x, labels))
    upstream = torch.linspace(0.5, 1.5, N, dtype=plain.dtype)
    torch.testing.assert_close(
        torch.autograd.grad((tiled * upstream).sum(), x)[0], torch.autograd.grad((plain * upstream).sum(), x)[0]
    )
    degenerate = sup_con(x, torch.arange(N), chunk_size=chunk)
    assert degenerate.item() == 0.0
    assert (torch.autograd.grad(degenerate, x)[0] == 0).all()
    with strict(), pytest.raises(ValueError, match="no anchor has a positive"):
        sup_con(x, torch.arange(N), chunk_size=chunk)


def test_the_automatic_path_and_tile_width():
    # small logits: the plain path; beyond AUTO_TILE_LOGITS wide tiles for d <= AUTO_TILE_MAX_DIM
    assert nce.auto_chunk(1024, 1024, 128) is None
    assert nce.auto_chunk(2048, 2048, 128) is None
    assert nce.auto_chunk(4096, 4096, 128, threads=1) == nce.AUTO_CHUNK >= 1024  # never the narrow tiles that stall
    # more threads: wider tiles (fewer parallel regions), within the per-tile bound
    assert nce.auto_chunk(4096, 4096, 128, threads=2) == 2 * nce.AUTO_CHUNK
    assert nce.auto_chunk(4096, 8192, 128, threads=16) == 4 * nce.AUTO_CHUNK
    assert nce.auto_chunk(65536, 65536, 128, threads=4) == nce.AUTO_CHUNK  # 64k rows: the tile's bound
    assert nce.auto_chunk(4096, 4096, 128) == nce.auto_chunk(4096, 4096, 128, threads=torch.get_num_threads())
    assert nce.auto_chunk(16384, 300, 128) == 300  # one tile when the columns are fewer than a tile
    # large d: the extra product of the tiles' backward costs more than the memory saved, until memory rules
    assert nce.auto_chunk(4096, 4096, 768) is None
    assert nce.auto_chunk(16384, 16384, 768, threads=1) == nce.AUTO_CHUNK
    # accelerators: tiles for memory only
    assert nce.auto_chunk(4096, 4096, 128, device="cuda") is None
    assert nce.auto_chunk(16384, 16384, 128, device="cuda") == nce.AUTO_CHUNK_DEVICE


def test_symmetric_tiles_equal_plain_with_labels_and_shared_negatives():
    a, p = randn(0, 9, 5, requires_grad=True), randn(1, 9, 5, requires_grad=True)
    n, w = randn(2, 4, 5, requires_grad=True), randn(3, 4, requires_grad=True)
    labels = randint(4, 3, 9)
    t = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    kwargs = dict(labels=labels, symmetric=True, negative_log_weights=w, temperature=t, reduction="none")
    plain = info_nce(a, p, n, **kwargs)
    tiled = info_nce(a, p, n, chunk_size=2, **kwargs)
    torch.testing.assert_close(tiled, plain)
    upstream = torch.linspace(0.5, 1.5, 9, dtype=torch.float64)
    inputs = (a, p, n, w, t)
    for g_tiled, g_plain in zip(
        torch.autograd.grad((tiled * upstream).sum(), inputs),
        torch.autograd.grad((plain * upstream).sum(), inputs),
        strict=True,
    ):
        torch.testing.assert_close(g_tiled, g_plain)
