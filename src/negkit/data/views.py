"""Random views of image or feature-vector batches for contrastive training, built from torch operations only.

torchvision has no CPU build next to the torch pinned here, so the few augmentations that suit small
grey-scale images are written with ``affine_grid``/``grid_sample`` and masks. Every call takes an explicit
``torch.Generator``: the same generator state gives the same views.

Images ``[B, C, H, W]`` get shifts, rotations, Gaussian noise (clipped to ``[0, 1]``) and random erasing.
Feature vectors ``[B, d]`` (e.g. standardised columns of a table, see :mod:`negkit.data.files`) get Gaussian
noise (not clipped) and feature dropout; shift, rotation and erase do not apply to vectors and are ignored.

Measured on MNIST-5000 with a 784-256-128 MLP and SimCLR, 15 epochs (one seed; random-init encoder kNN 0.899):
shifts of ±2 px alone end at kNN 0.853, *below* the random encoder they start from; adding ±15° rotation and
erasing (p 0.5) gives 0.919, and a zoom of up to 1.3× on top 0.930 (linear probe 0.949) — the views of
``configs/mnist5000.toml``, where every self-supervised strategy ends above its first epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ViewConfig:
    """Augmentation strengths; 0 disables an augmentation.

    Attributes:
        shift: images only: maximal translation in pixels (integer shifts drawn uniformly in ``[-shift, shift]``
            per axis).
        rotation: images only: maximal rotation in degrees (uniform in ``[-rotation, rotation]``).
        noise: standard deviation of additive Gaussian noise. Images: in pixel units, then clipped to ``[0, 1]``.
            Vectors: in the units of the (standardised) features, not clipped.
        erase: images only: probability of random erasing (a rectangle of 2–20 % of the image, aspect 0.3–3.3,
            set to 0; Zhong et al., AAAI 2020).
        scale: images only: random zoom about the centre by a factor drawn log-uniformly in
            ``[1 / (1 + scale), 1 + scale]`` (above 1 a crop of the centre fills the image, as a random resized
            crop does; below 1 the digit shrinks inside a zero border). Measured on MNIST-5000: see
            ``configs/mnist5000.toml``.
        dropout: vectors only: probability, in ``[0, 1)``, that a feature is set to 0, independently for every
            entry of ``[B, d]``. Not rescaled by ``1 / (1 − dropout)``: on standardised features 0 is the training
            mean, so a dropped feature reads as "unknown, average", and the kept ones keep their values.
    """

    shift: int = 2
    rotation: float = 0.0
    noise: float = 0.0
    erase: float = 0.0
    dropout: float = 0.0
    scale: float = 0.0

    def __post_init__(self) -> None:
        if self.shift < 0 or self.rotation < 0 or self.noise < 0 or self.scale < 0 or not 0 <= self.erase <= 1:
            raise ValueError(f"view strengths must be >= 0 (erase a probability), got {self}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"view dropout must be a probability in [0, 1), got {self.dropout}")


def random_views(x: Tensor, config: ViewConfig, generator: torch.Generator) -> Tensor:
    """One random view of each row of ``x``; same shape and dtype.

    * ``x [B, C, H, W]`` images (values in ``[0, 1]``): shift/rotation, noise (clipped), erase, in that order;
      ``dropout`` is ignored.
    * ``x [B, d]`` vectors: noise ``x + noise · ε`` with ``ε ~ N(0, 1)`` (not clipped), then each entry zeroed
      with probability ``dropout`` (no rescaling); ``shift``, ``rotation`` and ``erase`` are ignored.
    """
    if x.dim() == 2:
        return _vector_views(x, config, generator)
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W] images or [B, d] vectors, got shape {tuple(x.shape)}")
    out = x
    if config.shift or config.rotation or config.scale:
        out = _affine(out, config, generator)
    if config.noise:
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        out = (out + config.noise * noise).clamp(0.0, 1.0)
    if config.erase:
        out = _erase(out, config.erase, generator)
    return out


def _vector_views(x: Tensor, config: ViewConfig, generator: torch.Generator) -> Tensor:
    out = x
    if config.noise:
        out = out + config.noise * torch.randn(out.shape, generator=generator, dtype=out.dtype)
    if config.dropout:
        keep = torch.rand(out.shape, generator=generator) >= config.dropout
        out = out.masked_fill(~keep, 0.0)
    return out


def _affine(x: Tensor, config: ViewConfig, generator: torch.Generator) -> Tensor:
    batch, _, height, width = x.shape
    shifts = torch.randint(-config.shift, config.shift + 1, (batch, 2), generator=generator).to(x.dtype)
    angles = (torch.rand(batch, generator=generator, dtype=x.dtype) * 2 - 1) * math.radians(config.rotation)
    cos, sin = torch.cos(angles), torch.sin(angles)
    if config.scale:  # drawn last, so that configs without a zoom keep their random stream
        log_zoom = (torch.rand(batch, generator=generator, dtype=x.dtype) * 2 - 1) * math.log1p(config.scale)
        inverse_zoom = torch.exp(-log_zoom)  # grid_sample reads the input at theta @ output: 1/zoom magnifies
        cos, sin = cos * inverse_zoom, sin * inverse_zoom
    theta = torch.zeros(batch, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    # grid_sample samples the input at theta @ output-coords: a shift of +t px moves content by +t px.
    theta[:, 0, 2] = -2.0 * shifts[:, 0] / width
    theta[:, 1, 2] = -2.0 * shifts[:, 1] / height
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    mode = "bilinear" if config.rotation or config.scale else "nearest"
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _erase(x: Tensor, probability: float, generator: torch.Generator) -> Tensor:
    batch, _, height, width = x.shape
    area = (torch.rand(batch, generator=generator) * 0.18 + 0.02) * height * width
    log_ratio = torch.empty(batch).uniform_(math.log(0.3), math.log(3.3), generator=generator)
    ratio = torch.exp(log_ratio)
    box_h = torch.sqrt(area * ratio).round().clamp(1, height)
    box_w = torch.sqrt(area / ratio).round().clamp(1, width)
    top = (torch.rand(batch, generator=generator) * (height - box_h + 1)).floor()
    left = (torch.rand(batch, generator=generator) * (width - box_w + 1)).floor()
    apply = torch.rand(batch, generator=generator) < probability
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    inside = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + box_h).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + box_w).view(-1, 1, 1))
        & apply.view(-1, 1, 1)
    )
    return x.masked_fill(inside.unsqueeze(1), 0.0)
