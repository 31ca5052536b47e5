import pytest
import torch

from negkit.data import IndexedDataset, ViewConfig, iterate_batches, random_views


def dot_image(row: int, col: int, size: int = 9) -> torch.Tensor:
    x = torch.zeros(1, 1, size, size)
    x[0, 0, row, col] = 1.0
    return x


def test_integer_shifts_move_content_by_whole_pixels_within_the_range():
    generator = torch.Generator().manual_seed(0)
    x = dot_image(4, 4).expand(200, 1, 9, 9).contiguous()
    out = random_views(x, ViewConfig(shift=2), generator)
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(200))  # nothing lost, nothing blurred
    rows, cols = torch.nonzero(out[:, 0])[:, 1], torch.nonzero(out[:, 0])[:, 2]
    assert set((rows - 4).tolist()) == {-2, -1, 0, 1, 2} and set((cols - 4).tolist()) == {-2, -1, 0, 1, 2}


def test_same_generator_state_same_views_and_no_op_config():
    x = torch.rand(8, 1, 12, 12)
    config = ViewConfig(shift=2, rotation=15, noise=0.1, erase=0.5)
    a = random_views(x, config, torch.Generator().manual_seed(5))
    b = random_views(x, config, torch.Generator().manual_seed(5))
    c = random_views(x, config, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(random_views(x, ViewConfig(shift=0), torch.Generator()), x)


def test_rotation_keeps_mass_roughly_and_erasing_zeroes_a_rectangle():
    x = torch.ones(64, 1, 16, 16)
    erased = random_views(x, ViewConfig(shift=0, erase=1.0), torch.Generator().manual_seed(0))
    zero_fraction = (erased == 0).float().mean(dim=(1, 2, 3))
    assert bool((zero_fraction >= 0.01).all()) and bool((zero_fraction <= 0.25).all())
    for image in erased[:, 0]:
        rows = torch.nonzero((image == 0).any(dim=1)).flatten()
        cols = torch.nonzero((image == 0).any(dim=0)).flatten()
        assert int((image == 0).sum()) == len(rows) * len(cols)  # one axis-aligned rectangle
    assert torch.equal(random_views(x, ViewConfig(shift=0, erase=0.0), torch.Generator()), x)


def test_zoom_scales_a_centred_square_within_the_range():
    size, half = 33, 6
    x = torch.zeros(400, 1, size, size)
    x[:, :, 16 - half : 16 + half + 1, 16 - half : 16 + half + 1] = 1.0  # a 13 x 13 square about the centre
    out = random_views(x, ViewConfig(shift=0, scale=0.5), torch.Generator().manual_seed(0))
    side = (out[:, 0] > 0.5).sum(dim=(1, 2)).double().sqrt()  # side of the zoomed square, in pixels
    zoom = side / (2 * half + 1)
    assert float(zoom.min()) > 1 / 1.5 - 0.1 and float(zoom.max()) < 1.5 + 0.1  # log-uniform in [1/1.5, 1.5]
    assert float((zoom > 1.2).double().mean()) > 0.15 and float((zoom < 0.85).double().mean()) > 0.15
    # the zoom is drawn after the other augmentations: without it, a config keeps its random stream
    x = torch.rand(8, 1, 12, 12)
    plain = random_views(x, ViewConfig(shift=2, rotation=10), torch.Generator().manual_seed(1))
    zoomed = random_views(x, ViewConfig(shift=2, rotation=10, scale=1e-9), torch.Generator().manual_seed(1))
    assert torch.allclose(plain, zoomed, atol=1e-5)


def test_bad_views_config_and_shape():
    with pytest.raises(ValueError, match="view strengths"):
        ViewConfig(shift=-1)
    with pytest.raises(ValueError, match="view strengths"):
        ViewConfig(scale=-0.1)
    with pytest.raises(ValueError, match=r"x must be \[B, C, H, W\]"):
        random_views(torch.rand(3, 8, 2), ViewConfig(), torch.Generator())


def test_batches_cover_every_index_once_with_matching_rows():
    x, y = torch.arange(50.0).view(50, 1), torch.arange(50) % 3
    batches = list(iterate_batches(IndexedDataset(x, y), 16, torch.Generator().manual_seed(0)))
    assert len(batches) == 3  # drop_last
    seen = torch.cat([index for _, _, index in batches])
    assert len(set(seen.tolist())) == 48
    for bx, by, index in batches:
        assert torch.equal(bx.flatten(), index.float()) and torch.equal(by, index % 3)
    assert IndexedDataset(x, y)[7] == (x[7], y[7], 7)
    with pytest.raises(ValueError, match="batch_size 64 is larger than the dataset"):
        next(iterate_batches(IndexedDataset(x, y), 64, torch.Generator()))
