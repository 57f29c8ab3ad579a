"""The width bounds of nic_lib.capacity: PCA bound and unquantized-autoencoder ceiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nic_lib import capacity


def _low_rank_images(rank: int, count: int = 3, side: int = 64, seed: int = 0):
    """Images whose 16x16x3 blocks all lie in a ``rank``-dimensional affine subspace."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(0, 20, (rank, 16 * 16 * 3))
    images = []
    for _ in range(count):
        coef = rng.normal(0, 1, ((side // 16) ** 2, rank))
        blocks = np.clip(128 + coef @ basis, 0, 255).reshape(side // 16, side // 16, 16, 16, 3)
        images.append(blocks.swapaxes(1, 2).reshape(side, side, 3).astype(np.uint8))
    return images


def test_pca_bound_grows_with_k_and_is_exact_past_the_rank():
    rng = np.random.default_rng(1)
    noisy = [rng.integers(0, 256, (256, 272, 3), dtype=np.uint8) for _ in range(3)]  # 816 blocks: full rank
    table = capacity.pca_bound(noisy, [1, 8, 64, 512])
    assert list(table.K) == [1, 8, 64, 512]
    assert np.all(np.diff(table.psnr_pca) > 0)
    assert table.fraction.iloc[-1] == pytest.approx(512 / 768)
    # clipping to uint8 makes the blocks only nearly low-rank: far above the rank-1 code
    low = capacity.pca_bound(_low_rank_images(4), [1, 4, 16])
    assert low.psnr_pca.iloc[1] > low.psnr_pca.iloc[0] + 10


def test_pca_bound_refuses_bad_k_and_images_without_a_block():
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="K must be in 1..768"):
        capacity.pca_bound([img], [0])
    with pytest.raises(ValueError, match="no complete"):
        capacity.pca_bound([np.zeros((8, 8, 3), np.uint8)], [1])


class _Halve(nn.Module):
    """g_a = x/2, g_s = 2y: a lossless 'autoencoder' up to float rounding."""

    def __init__(self, lossy: bool = False):
        super().__init__()
        self.g_a = nn.Identity()
        self.g_s = (lambda y: y.clamp(0.25, 0.75)) if lossy else nn.Identity()

    def analysis(self, x):  # the registry models' API: g_a(x) ⊙ γ (here γ = 1)
        return self.g_a(x)

    def synthesis(self, y):
        return self.g_s(y)


def test_autoencoder_ceiling_is_lossless_for_an_identity_and_crops_to_64():
    img = np.random.default_rng(2).integers(0, 256, (70, 130, 3), dtype=np.uint8)
    exact = capacity.autoencoder_ceiling(_Halve(), [("a", img)])
    lossy = capacity.autoencoder_ceiling(_Halve(lossy=True), [("a", img)])
    assert exact > 60 and lossy < 20


def test_autoencoder_ceiling_of_a_real_model_leaves_it_in_its_mode():
    from nic_lib.models import build_model

    torch.manual_seed(0)
    model = build_model("mbt2018", N=8, M=12, lmbdas=[0.0018, 0.0483], reference_lmbda=0.01)
    model.train()
    img = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    value = capacity.autoencoder_ceiling(model, [("a", img)], level=0)
    assert np.isfinite(value) and model.training


def test_pca_bound_averages_per_image_psnr_which_jensen_puts_above_the_pooled_one():
    rng = np.random.default_rng(4)
    # one flat image and one noisy one: very different MSEs
    images = [np.full((64, 64, 3), 120, np.uint8) + rng.integers(0, 3, (64, 64, 3), dtype=np.uint8),
              rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    table = capacity.pca_bound(images, [4])
    assert table.psnr_pca.iloc[0] > table.psnr_pca_pooled.iloc[0] + 3


def test_part_shapes_follow_the_data_through_the_joint_model():
    from nic_lib.models import build_model

    torch.manual_seed(0)
    model = build_model("mbt2018", N=8, M=12).eval()
    shapes = capacity.part_shapes(model, 64, 128).set_index("part")
    assert list(shapes.index) == list(capacity.PARTS)
    assert shapes.loc["g_a", "input"] == (3, 64, 128) and shapes.loc["g_a", "output"] == (12, 4, 8)
    assert shapes.loc["h_a", "output"] == (8, 1, 2)  # z: 4x coarser than y
    assert shapes.loc["g_s", "output"] == (3, 64, 128)
    assert shapes["parameters"].sum() <= sum(p.numel() for p in model.parameters())
    assert not model.g_a._forward_hooks  # the trace leaves the model as it was
