"""The convolutional transforms tile by tile: bounded memory, bit for bit the whole image.

g_a, g_s, h_a and h_s are chains of (transposed) convolutions and layers that act at one
position (GDN/IGDN mix channels at a position; LeakyReLU/ReLU act per value). An output
position therefore depends only on a window of input positions, its receptive field,
and a transform can run on one tile of the image at a time:

    f(x)[tile] = f(x[tile expanded by the halo])[tile's part]

Written here because neither CompressAI nor PyTorch has it. The equality is exact, not
approximate, when

1. the halo covers the receptive field of every output of the tile
   (:func:`receptive_halo` works it out from the layers, see below);
2. the tile's input starts on the chain's stride grid (a multiple of 16 pixels for
   g_a), so every layer's local grid is the global one shifted by a whole number of
   positions;
3. at the image border the tile is not expanded: the layers' own zero padding is then
   the whole image's padding; inside the image the expansion holds real values, and
   the outputs the tile's artificial padding spoils are the ones cropped away;
4. each output value is computed by the same arithmetic in both calls: the reduction
   order of a convolution must not depend on the input's size. PyTorch's im2col + MKL
   GEMM path (oneDNN switched off, :func:`deterministic_convolutions`) gives
   bit-identical outputs for any tile size; across thread counts it did for every layer
   of g_s on Kodak (``benchmarks/determinism.py --synthesis``), but not always for g_a
   and h_s (2026-12-06: the factorized encoder wrote other bytes on 2 threads than on 1
   for one of 4 Kodak images at q6; a 4x8 hyper-latent's h_s differed by ~1e-7), which is
   why the coders take their parameters from float64 copies. oneDNN's float32 kernels
   change their last bits with the thread count.

Receptive field, one axis. A convolution (kernel k, stride s, padding p) computes
output o from inputs

    s*o - p  ..  s*o - p + k - 1,

a transposed convolution scatters input i to outputs s*i - p .. s*i - p + k - 1, so
output o reads inputs

    ceil((o + p - k + 1) / s)  ..  floor((o + p) / s).

Walking the chain backwards from the outputs of one coarse position (one latent: S
pixels for a chain of total stride S) gives the inputs it needs; the halo is how far
they reach beyond the tile, in coarse positions, rounded up. For mbt2018's g_s (four
5x5 stride-2 transposed convolutions) the pixels of latent t read latents t - 1 .. t + 2:
a halo of 1 before and 2 after; for g_a (four 5x5 stride-2 convolutions) latent t reads
pixels 16t - 30 .. 16t + 30: 2 latents before, 1 after (rounded up to whole latents,
which keeps tiles on the stride grid). ``tests/test_tiling.py`` checks that these halos
give the whole-image output for several tile sizes and odd image sizes, and that one
latent less on either side does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import torch
from compressai.layers import GDN
from torch import Tensor, nn

__all__ = [
    "DEFAULT_TILE_MEMORY",
    "Halo",
    "MIN_EXACT_TILE",
    "deterministic_convolutions",
    "map_tiles",
    "receptive_halo",
    "run_tiled",
    "tile_for_memory",
    "tile_memory_bytes",
    "tile_grid",
]

#: Working memory one tile may take (activations and im2col buffers of the largest
#: layer): 256 MB keeps a whole Kodak image in one tile at the cpu widths (N=64) and
#: leaves most of a 2 GB decode budget to the latents and the output image.
DEFAULT_TILE_MEMORY = 256 * 2**20
#: Smallest tile side, in coarse positions (latents): below 8 the halo (2 on each
#: side) would more than double the work.
MIN_TILE = 8
#: Narrowest tile :func:`tile_grid` cuts, in coarse positions (latents), unless the whole
#: axis is narrower. Measured on an AVX2-only CPU (AMD EPYC, 2026-12-07): MKL's GEMM takes
#: another summation order for the few output positions of a tile 1 or 2 latents wide
#: (and its halo), so such a tile differed from the whole image in the last bit (up to
#: 1.8e-7) where tiles of 3 or more latents were equal, for g_a and g_s at N, M = 8, 12
#: and 96, 192 (AVX512 machines gave equality for every width). A remainder narrower than
#: this joins the tile before it.
MIN_EXACT_TILE = 4
#: Largest tile side tried by :func:`tile_for_memory` (1024 latents = 16384 pixels,
#: the format's largest side: one tile is then the whole image).
MAX_TILE = 1024
#: Layers that act at one position: their receptive field is that position.
POINTWISE = (GDN, nn.LeakyReLU, nn.ReLU, nn.Identity)


@dataclasses.dataclass(frozen=True)
class Halo:
    """How a chain maps grids, and how far one tile must reach beyond itself.

    Attributes:
        scale: total stride S: one coarse position is S fine positions on each axis.
        upsampling: True if the input is the coarse grid (g_s, h_s), False if the
            output is (g_a, h_a).
        before, after: coarse positions to add before / after a tile (both axes).
    """

    scale: int
    upsampling: bool
    before: int
    after: int


def _layers(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _layers(child)]
    return [module]


def _geometry(layer: nn.Module, axis: int) -> tuple[int, int, int]:
    """(kernel, stride, padding) of a convolution along an axis; checks it can be tiled."""
    if layer.dilation[axis] != 1 or layer.padding_mode != "zeros" or isinstance(
            layer.padding, str):
        raise ValueError(f"{layer} cannot be tiled: only dilation 1 and zero padding "
                         "given as numbers are supported (nic_lib/models/tiling.py)")
    return layer.kernel_size[axis], layer.stride[axis], layer.padding[axis]


def _inputs_needed(layers: list[nn.Module], axis: int, lo: int, hi: int) -> tuple[int, int]:
    """Inclusive input range the outputs lo..hi of the chain read along an axis."""
    for layer in reversed(layers):
        if isinstance(layer, nn.ConvTranspose2d):
            k, s, p = _geometry(layer, axis)
            # output o reads inputs ceil((o + p - k + 1) / s) .. floor((o + p) / s)
            lo, hi = -(-(lo + p - k + 1) // s), (hi + p) // s
        elif isinstance(layer, nn.Conv2d):
            k, s, p = _geometry(layer, axis)
            # output o reads inputs s*o - p .. s*o - p + k - 1
            lo, hi = s * lo - p, s * hi - p + k - 1
        elif not isinstance(layer, POINTWISE):
            raise ValueError(f"cannot tile through {type(layer).__name__}: its receptive "
                             "field is unknown; add it to tiling.POINTWISE if it acts at "
                             "one position, or run the transform whole")
    return lo, hi


def receptive_halo(module: nn.Module) -> Halo:
    """The halo that makes tiled application of a chain exact (see the module docstring).

    Args:
        module: an ``nn.Sequential`` of ``Conv2d`` / ``ConvTranspose2d`` and pointwise
            layers (:data:`POINTWISE`) that only upsamples or only downsamples, with
            the same geometry on both axes (every transform of the mbt2018 family).

    Returns:
        The :class:`Halo`.

    Raises:
        ValueError: a layer of unknown receptive field, dilation, non-zero padding, a
            chain that both up- and downsamples, or different geometry per axis.
    """
    layers = _layers(module)
    up = math.prod(l.stride[0] for l in layers if isinstance(l, nn.ConvTranspose2d))
    down = math.prod(l.stride[0] for l in layers
                     if isinstance(l, nn.Conv2d) and not isinstance(l, nn.ConvTranspose2d))
    if up > 1 and down > 1:
        raise ValueError("cannot tile a chain that both up- and downsamples")
    scale, upsampling = max(up, down), down == 1
    # One coarse position t far from the border (the halo does not depend on t).
    t = 1000 * scale
    reach = []
    for axis in (0, 1):
        if upsampling:  # coarse = input; its S x S outputs
            lo, hi = _inputs_needed(layers, axis, scale * t, scale * t + scale - 1)
            reach.append((t - lo, hi - t))
        else:  # coarse = output; inputs in fine positions, rounded up to whole latents
            lo, hi = _inputs_needed(layers, axis, t, t)
            reach.append((-(-(scale * t - lo) // scale), -(-(hi - scale * t - scale + 1) // scale)))
    if reach[0] != reach[1]:
        raise ValueError(f"the chain's receptive field differs per axis ({reach}); "
                         "tiling supports square geometry only")
    before, after = (max(v, 0) for v in reach[0])
    return Halo(scale=scale, upsampling=upsampling, before=before, after=after)


def _set_onednn(enabled: bool) -> bool:
    # set_flags returns the previous (enabled, deterministic, tf32, precision) and,
    # given None, leaves a flag alone (no TF32 warning)
    return torch.backends.mkldnn.set_flags(_enabled=enabled, _fp32_precision=None)[0]


@contextlib.contextmanager
def deterministic_convolutions() -> Iterator[None]:
    """Run convolutions through PyTorch's im2col + GEMM path, not oneDNN.

    On CPU, oneDNN's float32 (transposed) convolutions change their last bits with the
    thread count; the GEMM path gives the same bits for any thread count and any input
    size (measured: ``benchmarks/determinism.py --synthesis``). The flag is process-wide
    and restored on exit.
    """
    previous = _set_onednn(False)
    try:
        yield
    finally:
        _set_onednn(previous)


def _cuts(length: int, tile: int) -> list[tuple[int, int]]:
    """One axis cut into tiles of ``tile`` positions; a remainder narrower than
    :data:`MIN_EXACT_TILE` joins the tile before it, and no tile is narrower than that
    unless the axis is."""
    tile = max(tile, MIN_EXACT_TILE)
    starts = list(range(0, length, tile))
    if len(starts) > 1 and length - starts[-1] < MIN_EXACT_TILE:
        starts.pop()
    return [(a, starts[i + 1] if i + 1 < len(starts) else length) for i, a in enumerate(starts)]


def tile_grid(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """Tiles of a coarse grid in row-major order.

    Tiles are ``tile`` positions on a side, the last ones on each axis up to
    ``tile + MIN_EXACT_TILE - 1`` (a narrower remainder joins them), and never narrower
    than :data:`MIN_EXACT_TILE` unless the grid is: the GEMM's arithmetic then does not
    depend on the tile (see :data:`MIN_EXACT_TILE`). A grid narrower than that on one
    axis (a strip at most 3 latents, 48 pixels, high or wide) is one tile.

    Args:
        height, width: coarse grid size. tile: tile side (>= 1; sides below
            :data:`MIN_EXACT_TILE` count as that).

    Yields:
        ``(r0, r1, c0, c1)``: rows r0..r1-1 and columns c0..c1-1.
    """
    if tile < 1:
        raise ValueError(f"tile side must be >= 1, got {tile}")
    if min(height, width) < MIN_EXACT_TILE:  # a strip: one tile (its memory is small)
        yield 0, height, 0, width
        return
    for r0, r1 in _cuts(height, tile):
        for c0, c1 in _cuts(width, tile):
            yield r0, r1, c0, c1


def map_tiles(module: nn.Module, x: Tensor, tile: int,
              halo: Halo | None = None) -> Iterator[tuple[slice, slice, Tensor]]:
    """Apply a chain tile by tile.

    Args:
        module: the chain (see :func:`receptive_halo`).
        x: (B, C, H, W) input; for a downsampling chain H and W are multiples of its
            stride (the models' inputs are padded to 64).
        tile: tile side in coarse positions (latents).
        halo: override of :func:`receptive_halo` (tests use a smaller one).

    Yields:
        ``(rows, cols, out)``: ``out`` equals ``module(x)[..., rows, cols]`` bit for bit
        when run under :func:`deterministic_convolutions`.

    Raises:
        ValueError: a side is not a multiple of the stride, or the chain's output is
            not the input size times (or over) its stride.
    """
    halo = halo or receptive_halo(module)
    s = halo.scale
    height, width = x.shape[-2:]
    if not halo.upsampling and (height % s or width % s):
        raise ValueError(f"input {height}x{width} is not a multiple of the chain's stride "
                         f"{s}; pad it first (nic_lib.coding.pad_image)")
    coarse_h, coarse_w = (height, width) if halo.upsampling else (height // s, width // s)
    fine = s if halo.upsampling else 1  # output positions per coarse position
    step = 1 if halo.upsampling else s  # input positions per coarse position
    for r0, r1, c0, c1 in tile_grid(coarse_h, coarse_w, tile):
        a0, a1 = max(r0 - halo.before, 0), min(r1 + halo.after, coarse_h)
        b0, b1 = max(c0 - halo.before, 0), min(c1 + halo.after, coarse_w)
        out = module(x[..., a0 * step : a1 * step, b0 * step : b1 * step])
        if tuple(out.shape[-2:]) != ((a1 - a0) * fine, (b1 - b0) * fine):
            raise ValueError(f"{type(module).__name__} maps a {a1 - a0}x{b1 - b0} tile to "
                             f"{tuple(out.shape[-2:])}, not {fine}x that; it cannot be tiled")
        yield (slice(r0 * fine, r1 * fine), slice(c0 * fine, c1 * fine),
               out[..., (r0 - a0) * fine : (r1 - a0) * fine, (c0 - b0) * fine : (c1 - b0) * fine])


def run_tiled(module: nn.Module, x: Tensor, tile: int | None = None,
              halo: Halo | None = None) -> Tensor:
    """``module(x)`` computed tile by tile in :func:`deterministic_convolutions`.

    Args:
        module: the chain (see :func:`receptive_halo`).
        x: (B, C, H, W) input.
        tile: tile side in coarse positions; default from :func:`tile_for_memory`.
        halo: override of :func:`receptive_halo`.

    Returns:
        The output, bit for bit ``module(x)`` under :func:`deterministic_convolutions`
        whatever ``tile`` and the thread count; peak working memory is one tile's.
    """
    halo = halo or receptive_halo(module)
    if tile is None:
        tile = tile_for_memory(module, x.shape[1], x.dtype)
    out = None
    with deterministic_convolutions():
        for rows, cols, part in map_tiles(module, x, tile, halo):
            if out is None:
                s = halo.scale if halo.upsampling else 1 / halo.scale
                size = (round(x.shape[-2] * s), round(x.shape[-1] * s))
                out = part.new_empty((*part.shape[:2], *size))
            out[..., rows, cols] = part
    return out


def tile_memory_bytes(module: nn.Module, in_channels: int, tile: int,
                      dtype: torch.dtype = torch.float32) -> int:
    """Working memory of one tile: the largest layer's input, output and im2col buffer.

    An upper bound of what :func:`map_tiles` allocates per tile (halo included) on the
    GEMM path: a convolution unfolds its input to (C_in k^2, H_out W_out), a transposed
    convolution its output to (C_out k^2, H_in W_in).

    Args:
        module: the chain. in_channels: channels of its input.
        tile: tile side in coarse positions. dtype: element type.

    Returns:
        Bytes.
    """
    halo = receptive_halo(module)
    side = tile + halo.before + halo.after  # coarse positions, halo included
    size = float(side if halo.upsampling else side * halo.scale)  # fine positions of the input
    channels, peak = in_channels, 0.0
    for layer in _layers(module):
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            k, s, _ = _geometry(layer, 0)
            transposed = isinstance(layer, nn.ConvTranspose2d)
            out_size = size * s if transposed else size / s
            columns = (layer.out_channels * k * k * size**2 if transposed
                       else channels * k * k * out_size**2)
            peak = max(peak, channels * size**2 + layer.out_channels * out_size**2 + columns)
            channels, size = layer.out_channels, out_size
        else:  # pointwise: input, output and one temporary (GDN's x^2)
            peak = max(peak, 3 * channels * size**2)
    return int(peak * torch.empty((), dtype=dtype).element_size())


def tile_for_memory(module: nn.Module, in_channels: int, dtype: torch.dtype = torch.float32,
                    memory: int = DEFAULT_TILE_MEMORY) -> int:
    """The largest tile side (a power of two, :data:`MIN_TILE`..:data:`MAX_TILE`) whose
    :func:`tile_memory_bytes` fits in ``memory``; :data:`MIN_TILE` if none does."""
    tile = MIN_TILE
    while tile < MAX_TILE and tile_memory_bytes(module, in_channels, largest_tile(2 * tile),
                                                dtype) <= memory:
        tile *= 2
    return tile


def largest_tile(tile: int, length: int | None = None) -> int:
    """The widest tile :func:`tile_grid` cuts for side ``tile`` on an axis of ``length``
    (unbounded: None): a remainder under :data:`MIN_EXACT_TILE` joins the last tile."""
    widest = max(tile, MIN_EXACT_TILE) + MIN_EXACT_TILE - 1
    return widest if length is None else min(length, widest)
