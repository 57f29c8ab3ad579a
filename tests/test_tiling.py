"""Tiled transforms (nic_lib/models/tiling.py): bit for bit the whole-image computation.

Properties: the halo worked out from the receptive field makes a transform applied tile
by tile equal to the transform applied to the whole image, for several tile sizes, odd
image sizes and thread counts; one position less of halo on either side breaks the
equality (so the halo is the smallest, and the comparison can fail); models that tile
decode what they decoded whole. Tiny random transforms: the arithmetic, not training,
is under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nic_lib import container
from nic_lib.models import build_model, google, tiling

N, M = 8, 12
#: Tile sides in latents: 1 (every tile is mostly halo), odd, and larger than the image.
TILES = (1, 2, 3, 5, 64)
#: Odd latent grids (h, w): tiles at the border are partial on both axes.
GRIDS = ((5, 7), (13, 11), (1, 9))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def transforms() -> dict[str, tuple[nn.Module, int, int]]:
    """name -> (transform in eval mode, input channels, input positions per latent)."""
    torch.manual_seed(0)
    return {
        "g_s": (google.synthesis_transform(N, M).eval(), M, 1),
        "g_a": (google.analysis_transform(N, M).eval(), 3, 16),
        "h_s": (google.hyper_synthesis(N, M).eval(), N, 1),
        "h_a": (google.hyper_analysis(N, M).eval(), M, 4),
    }


def _input(channels: int, grid: tuple[int, int], per_latent: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    return torch.randn(1, channels, h * per_latent, w * per_latent, generator=g) * 3


def _whole(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), tiling.deterministic_convolutions():
        return module(x)


def test_halo_of_mbt2018_transforms_matches_the_hand_derivation():
    t = transforms()
    # g_s: the pixels of latent i read latents i - 1 .. i + 2
    assert tiling.receptive_halo(t["g_s"][0]) == tiling.Halo(16, True, 1, 2)
    # g_a: latent i reads pixels 16 i - 30 .. 16 i + 30 -> 2 latents before, 1 after
    assert tiling.receptive_halo(t["g_a"][0]) == tiling.Halo(16, False, 2, 1)
    assert tiling.receptive_halo(t["h_s"][0]).scale == 4
    assert tiling.receptive_halo(t["h_a"][0]).scale == 4


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("name", ["g_s", "g_a", "h_s", "h_a"])
def test_tiled_transform_equals_whole_image_bit_for_bit(name, grid):
    module, channels, per_latent = transforms()[name]
    if name in ("h_s", "h_a"):  # they work at the hyper-latent's grid: 4 positions per z
        grid = (grid[0] * 4, grid[1] * 4) if name == "h_a" else grid
    x = _input(channels, grid, per_latent)
    whole = _whole(module, x)
    with torch.no_grad():
        for tile in TILES:
            assert torch.equal(tiling.run_tiled(module, x, tile), whole), (name, grid, tile)


@pytest.mark.parametrize("name", ["g_s", "g_a", "h_s", "h_a"])
def test_one_position_less_of_halo_changes_the_output(name):
    module, channels, per_latent = transforms()[name]
    x = _input(channels, (9, 10), per_latent, seed=1)
    whole = _whole(module, x)
    halo = tiling.receptive_halo(module)
    with torch.no_grad():
        for smaller in (tiling.Halo(halo.scale, halo.upsampling, halo.before - 1, halo.after),
                        tiling.Halo(halo.scale, halo.upsampling, halo.before, halo.after - 1)):
            assert not torch.equal(tiling.run_tiled(module, x, 3, smaller), whole), smaller


def test_tiled_synthesis_does_not_depend_on_the_thread_count():
    module, channels, per_latent = transforms()["g_s"]
    x = _input(channels, (6, 9), per_latent, seed=2)
    outputs = []
    with torch.no_grad():
        for threads, tile in ((1, 2), (2, 4), (2, 64)):
            torch.set_num_threads(threads)
            outputs.append(tiling.run_tiled(module, x, tile))
    assert all(torch.equal(o, outputs[0]) for o in outputs)


@pytest.mark.parametrize("name", ["mbt2018", "mbt2018-mean", "mbt2018-context"])
def test_model_decodes_the_same_image_in_small_tiles(name):
    torch.manual_seed(0)
    model = build_model(name, N=N, M=M).eval()
    model.update(force=True)
    img = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)  # 16x20 latents
    data = container.encode_image(model, img, name, 1)
    whole = container.decode_image(data, model)
    model.tile_memory = 1  # the smallest tile (tiling.MIN_TILE = 8 latents): 2 x 3 tiles
    assert container.encode_image(model, img, name, 1) == data
    np.testing.assert_array_equal(container.decode_image(data, model), whole)


def test_tile_for_memory_fits_its_budget_and_grows_with_it():
    module = transforms()["g_s"][0]
    sides = [tiling.tile_for_memory(module, M, memory=2**k) for k in range(20, 32, 2)]
    assert sides == sorted(sides) and sides[0] == tiling.MIN_TILE < sides[-1]
    for k, side in zip(range(20, 32, 2), sides):
        assert side == tiling.MIN_TILE or tiling.tile_memory_bytes(module, M, side) <= 2**k


def test_chains_tiling_cannot_prove_exact_are_refused():
    with pytest.raises(ValueError, match="dilation"):
        tiling.receptive_halo(nn.Sequential(nn.Conv2d(3, 3, 3, padding=2, dilation=2)))
    with pytest.raises(ValueError, match="receptive field is unknown"):
        tiling.receptive_halo(nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)))
    with pytest.raises(ValueError, match="both up- and downsamples"):
        tiling.receptive_halo(nn.Sequential(nn.Conv2d(3, 3, 5, 2, 2),
                                            nn.ConvTranspose2d(3, 3, 5, 2, 2, 1)))
    with pytest.raises(ValueError, match="multiple of the chain's stride"):
        list(tiling.map_tiles(transforms()["g_a"][0], torch.zeros(1, 3, 40, 32), 2))
