r"""Entropy coding of a latent y with a k x k masked-convolution context model.

The coder of the context models of :mod:`nic_lib.models.google` (``mbt2018``,
``mbt2018-context``, ``mbt2018-gmm``), for a context of any odd size k. Written here
because CompressAI's ``_compress_ar``/``_decompress_ar`` are tied to a 5x5 context,
decode one position per network call and are not deterministic across thread counts.
Two things are added.

**Wavefront order** (``coding_order = "wavefront"``, the default). Positions on one
wavefront t = a*i + j (a = k//2 + 1, see :func:`wavefront_slope` for the proof) do not
depend on each other, so one call per wavefront gathers their causal k x k
neighbourhoods from the y_hat buffer, applies the masked kernel as one matrix product,
runs the entropy-parameters network on all of them and rANS-codes their symbols:
a(H - 1) + W calls instead of H W (on :data:`CODING_THREADS` threads: the products are
small). ``"raster"`` codes one position per call in CompressAI's order; it exists to
compare (the two orders write different bitstreams, decode a stream in the order that
wrote it; they reconstruct the same y_hat). For one group of positions (rows, cols)::

    patch[l, c, n] = y_hat[c, rows[l] + dy[n], cols[l] + dx[n]]      (dy, dx: the mask's taps)
    ctx[l]         = b + sum_{c, n} w[:, c, n] patch[l, c, n]        (the masked convolution)
    params[l]      = entropy_parameters([h_s(z_hat)[:, rows[l], cols[l]], ctx[l]])

**Deterministic parameters.** rANS needs the decoder to pick exactly the table the
encoder picked for every symbol, and the decoded y_hat feeds back into the context of
later positions. In float32 the predicted scales and means depend on summation order,
which changes with the thread count, the batch shape (one position or a wavefront) and
the machine; a scale on the edge of a table bin then selects another table and the
rest of the stream decodes garbage. Here, at coding time only (training is unchanged):

1. h_s, the context model and the entropy-parameters network run in float64
   (:data:`CODING_DTYPE`; copies of the float32 weights, made per call, so any module
   works) on :data:`CODING_DEVICE`, which shrinks the disagreement between two
   summation orders to ~1e-16 relative;
2. the parameters are then snapped to a grid on both sides: a Gaussian's scale becomes
   its index in ``GaussianConditional.scale_table`` (an integer, the only thing rANS
   sees); its mean, and every mixture parameter, is rounded to the grid
   :data:`PARAMETER_GRID` (2^-16). Encoder and decoder therefore hold the same
   integers and the same dyadic means, y_hat = q + mean is bit-identical, and so are
   the contexts computed from it.

A float64 disagreement can only matter when a value lies within ~1e-14 of a bin edge: a
chance of ~1e-14 per scale (edges 13% apart) and ~1e-9 per mean (edges 2^-16 apart) per
symbol. Exact determinism would need integer networks (Ballé, Johnston, Minnen, ICLR
2019); the grid keeps y_hat within 2^-17 of the float model's, a rate change far below
measurement noise.

Pieces, in the order a coded symbol meets them:

- :func:`coding_schedule`: the groups of positions coded together, in order;
- :func:`parameter_path`: the entropy parameters of a group, float64, on the CPU;
- a symbol coder (:class:`SymbolCoder`): parameters -> rANS tables -> symbols ->
  y_hat of the group. :class:`GaussianSymbols` here; the mixture's is
  :class:`nic_lib.models.mixture.MixtureSymbols`;
- :class:`ContextCoder`: the loop over the schedule, one rANS string per image.

The models pass their modules in (context model, entropy parameters, a symbol coder
per image); nothing here knows a model class.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Protocol

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import GaussianConditional
from compressai.layers import MaskedConv2d
from torch import Tensor, nn

__all__ = [
    "CODING_DEVICE",
    "CODING_DTYPE",
    "CODING_ORDERS",
    "CODING_THREADS",
    "CONTEXT_SIZES",
    "ContextCoder",
    "DEFAULT_CODING_ORDER",
    "DEFAULT_CONTEXT_SIZE",
    "GaussianSymbols",
    "PARAMETER_GRID",
    "SymbolCoder",
    "check_context_size",
    "coding_copy",
    "coding_schedule",
    "on_coding_device",
    "parameter_path",
    "pointwise_path",
    "scale_edges",
    "scale_indexes",
    "snap_to_grid",
    "wavefront_slope",
]

#: Context sizes the tests cover; any odd size >= 3 is accepted.
CONTEXT_SIZES = (3, 5, 7)

#: The paper's context model is a 5x5 masked convolution.
DEFAULT_CONTEXT_SIZE = 5

#: Symbol orders of the context models' coders (``model.coding_order``).
CODING_ORDERS = ("wavefront", "raster")

#: Wavefront: one network call per wavefront, a(H - 1) + W calls instead of H W, same
#: y_hat as raster; "raster" (CompressAI's order) is kept to compare against.
DEFAULT_CODING_ORDER = "wavefront"

#: The coder's parameter path (h_s, context model, entropy parameters) runs in float64:
#: two summation orders then disagree by ~1e-16 relative instead of ~1e-7.
CODING_DTYPE = torch.float64

#: Grid of predicted means (and mixture parameters) at coding time, 2^-16: dyadic, so
#: y_hat = q + mean is exact in float64; coarse next to float64 noise (a value hits an
#: edge with chance ~1e-9), fine next to a latent's unit bin (y_hat moves <= 2^-17,
#: which keeps it within the 1e-4 the tests allow against the float32 forward pass).
PARAMETER_GRID = 2.0**-16

#: Where the coder's parameter path runs (h_s, context model, entropy parameters, the
#: Gaussian coder's table indexes), whatever the model's device: the CPU, so that a file
#: encoded with the model on a GPU decodes with it on the CPU and vice versa (a GPU's
#: convolutions sum in other orders than the CPU's, and one scale on the other side of a
#: table edge derails rANS). The transforms g_a and g_s stay on the model's device.
CODING_DEVICE = torch.device("cpu")

#: Threads of the coder's per-wavefront products: at most ~H/a positions each, too small
#: to split, and on a busy machine every parallel region waits for the slowest thread
#: (kodim01, N=64, M=96, 2-core machine under load: 0.6 s CPU to decode on 1 thread,
#: 2.8 s on 2). h_s and g_s still use the caller's threads.
CODING_THREADS = 1


# ======================================================================================
# The schedule
# ======================================================================================


def check_context_size(context_size: int) -> int:
    """``context_size`` as an int.

    Raises:
        ValueError: if it is even or < 3.
    """
    if context_size < 3 or context_size % 2 == 0:
        raise ValueError(
            f"context_size must be odd and >= 3 (the paper uses {DEFAULT_CONTEXT_SIZE}; "
            f"tested: {CONTEXT_SIZES}), got {context_size}"
        )
    return int(context_size)


def wavefront_slope(context_size: int) -> int:
    r"""The smallest integer a for which the wavefront index t = a*i + j is a valid
    parallel schedule of a k x k raster-causal context: a = k // 2 + 1.

    With p = k // 2, the masked convolution (PixelCNN mask A) at latent (i, j) reads

    - the same row, left of it: (i, j') with j - p <= j' < j, and
    - the p rows above, the whole window width: (i', j') with i - p <= i' < i and
      |j' - j| <= p.

    Claim: t(i', j') < t(i, j) for every such dependency iff a >= p + 1.

    - Same row: t(i, j) - t(i, j') = j - j' >= 1 for any a.
    - Rows above: t(i, j) - t(i', j') = a (i - i') + (j - j') >= a * 1 - p, the
      minimum being at the nearest row (i - i' = 1, a > 0) and the rightmost column
      (j' - j = p). It is >= 1 iff a >= p + 1.
    - a = p fails: the up-right neighbour (i - 1, j + p) gets t = p(i - 1) + j + p =
      t(i, j), the same wavefront, yet it is an input of (i, j).

    Hence every input of a position lies on an earlier wavefront, all positions of one
    wavefront are independent given the earlier ones, and an H x W latent needs
    a (H - 1) + W network calls instead of H W: k = 3, 5, 7 give a = 2, 3, 4
    (5x5: t = 3i + j, as in the issue). Checked against the real mask for k = 3, 5, 7
    in ``tests/test_wavefront.py``.

    Args:
        context_size: k, odd and >= 3.

    Returns:
        a = k // 2 + 1.

    Raises:
        ValueError: if ``context_size`` is even or < 3.
    """
    return check_context_size(context_size) // 2 + 1


def coding_schedule(
    height: int, width: int, context_size: int, order: str = DEFAULT_CODING_ORDER
) -> list[tuple[Tensor, Tensor]]:
    """The groups of latent positions coded together, in coding order.

    Encoder and decoder both walk this list, so they put symbols into and take them
    out of the rANS stream in the same order: group by group, inside a group by
    increasing row, and for each position its M channels in order.

    Args:
        height, width: the latent's size.
        context_size: k of the context model.
        order: ``"wavefront"`` (one group per wavefront t = a*i + j, a from
            :func:`wavefront_slope`, rows increasing inside it) or ``"raster"``
            (one position per group, row by row, as CompressAI).

    Returns:
        ``[(rows, cols), ...]``, int64 tensors of equal length per group.

    Raises:
        ValueError: for an unknown ``order``.
    """
    if order not in CODING_ORDERS:
        raise ValueError(
            f"unknown coding order {order!r}; use one of {CODING_ORDERS} "
            "(model.coding_order in nic_lib/models/google/transforms.py)"
        )
    rows, cols = (g.flatten() for g in torch.meshgrid(
        torch.arange(height), torch.arange(width), indexing="ij"))  # fmt: skip
    if order == "raster":
        return [(rows[n : n + 1], cols[n : n + 1]) for n in range(height * width)]
    # t = a*i + j; sort by (t, i), then cut at every change of t.
    t = wavefront_slope(context_size) * rows + cols
    perm = torch.argsort(t * height + rows)
    counts = torch.bincount(t).tolist()
    groups = torch.split(perm, [c for c in counts if c > 0])
    return [(rows[g], cols[g]) for g in groups]


# ======================================================================================
# The parameter path: float64, on CODING_DEVICE, snapped to a grid
# ======================================================================================


def snap_to_grid(values: Tensor, grid: float = PARAMETER_GRID) -> Tensor:
    """Round to the nearest multiple of ``grid`` (a power of two, so it is exact).

    Args:
        values: float64 parameters.
        grid: spacing.

    Returns:
        round(values / grid) * grid, same dtype.
    """
    # v_snapped = grid * round(v / grid)
    return torch.round(values / grid) * grid


def coding_copy(module: nn.Module) -> nn.Module:
    """A float64 copy of a network on ``CODING_DEVICE`` for the coder's parameter path."""
    return copy.deepcopy(module).to(device=CODING_DEVICE, dtype=CODING_DTYPE)


def on_coding_device(module: nn.Module) -> nn.Module:
    """``module`` itself when it is on ``CODING_DEVICE`` (nothing copied, nothing changed
    on a CPU-only machine), else a copy there: the hyperpriors' h_s and Gaussian coder,
    so that their scale indexes are the CPU's whatever device the model runs on."""
    if all(t.device == CODING_DEVICE for t in (*module.parameters(), *module.buffers())):
        return module
    return copy.deepcopy(module).to(CODING_DEVICE)


def pointwise_path(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """A float64 function (L, C_in) -> (L, C_out) computing a network of 1x1
    convolutions and leaky ReLUs (the entropy parameters) as matrix products.

    A 1x1 convolution of L positions is the product of an (L, C_in) matrix with the
    kernel; as ``addmm`` it runs ~5x faster than ``conv2d`` on (L, C_in, 1, 1) in
    float64 (L = 16, C_in = 768). Other networks run as their float64 copy.
    """
    layers = list(module) if isinstance(module, nn.Sequential) else [module]
    plain = all(
        (type(l) is nn.Conv2d and l.kernel_size == (1, 1) and l.groups == 1
         and l.stride == (1, 1) and l.padding == (0, 0) and l.bias is not None)
        or type(l) is nn.LeakyReLU for l in layers)
    if not plain:
        network = coding_copy(module)
        return lambda h: network(h[:, :, None, None]).flatten(1)
    steps = [(l.weight[:, :, 0, 0].T.to(CODING_DEVICE, CODING_DTYPE).contiguous(),
              l.bias.to(CODING_DEVICE, CODING_DTYPE))
             if isinstance(l, nn.Conv2d) else l.negative_slope for l in layers]

    def apply(h: Tensor) -> Tensor:
        for step in steps:
            if isinstance(step, tuple):  # h W^T + b: the 1x1 convolution
                h = torch.addmm(step[1], h, step[0])
            else:
                h = nn.functional.leaky_relu(h, step)
        return h

    return apply


def parameter_path(
    context_prediction: MaskedConv2d, entropy_parameters: nn.Module, side: Tensor | None
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """A function (y_hat buffer, rows, cols) -> entropy parameters (L, C), float64, on
    ``CODING_DEVICE``.

    Args:
        context_prediction: the masked convolution (the paper's context model).
        entropy_parameters: the network from [side features, context] to parameters.
        side: one image's hyperprior features (2M, H, W) or None.

    Returns:
        The function; its buffer is y_hat (M, H + 2p, W + 2p), zero-padded by p = k // 2.
    """
    conv = context_prediction
    # Window offsets the mask keeps (the causal half), e.g. 12 of 25 for 5x5.
    dy, dx = conv.mask[0, 0].nonzero(as_tuple=True)
    weight = conv.weight[:, :, dy, dx].to(CODING_DEVICE, CODING_DTYPE)  # (2M, M, n)
    weight = weight.reshape(weight.shape[0], -1).T.contiguous()  # (M n, 2M)
    bias = conv.bias.to(CODING_DEVICE, CODING_DTYPE)
    entropy_parameters = pointwise_path(entropy_parameters)
    dy, dx = dy.to(CODING_DEVICE), dx.to(CODING_DEVICE)

    def params_at(y_hat: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        # patch[l, c, n] = y_hat[c, rows[l] + dy[n], cols[l] + dx[n]]
        patch = y_hat[:, rows[:, None] + dy, cols[:, None] + dx].permute(1, 0, 2)
        # ctx[l] = b + sum_{c, n} w[:, c, n] patch[l, c, n]: the masked convolution
        # at (rows[l], cols[l]), for all positions of the group in one product.
        ctx = torch.addmm(bias, patch.reshape(len(rows), -1), weight)
        if side is not None:
            # Same order as CompressAI's mbt2018: hyperprior features first.
            ctx = torch.cat((side[:, rows, cols].T, ctx), dim=1)
        return entropy_parameters(ctx)

    return params_at


# ======================================================================================
# Symbol coders: a group's parameters -> rANS symbols -> the group's y_hat
# ======================================================================================


class SymbolCoder(Protocol):
    """One image's symbols: what :class:`ContextCoder` asks of an entropy model.

    A new one per image (it may queue symbols); every method gets one group's float64
    parameters (L, C) in coding order and returns or takes y (L, M).
    """

    def encode(self, encoder: BufferedRansEncoder, y: Tensor, params: Tensor) -> Tensor:
        """Code the group's y (L, M) (now or at ``finish``); returns its y_hat (L, M)."""

    def finish(self, encoder: BufferedRansEncoder) -> None:
        """Hand what is queued to the encoder, before it is flushed."""

    def decode(self, decoder: RansDecoder, params: Tensor) -> Tensor:
        """Decode the group's y_hat (L, M)."""


def scale_edges(gaussian_conditional: GaussianConditional) -> Tensor:
    """The scale table's first n − 1 entries, float64 on ``CODING_DEVICE``: the edges
    that :func:`scale_indexes` counts."""
    return gaussian_conditional.scale_table[:-1].to(CODING_DEVICE, CODING_DTYPE).contiguous()


def scale_indexes(scales: Tensor, edges: Tensor) -> Tensor:
    """Gaussian table index of each float64 scale: #{s in scale_table[:-1] : s < scale}.

    What ``GaussianConditional.build_indexes`` computes, in float64 (scales below the
    table's first entry get index 0, as after its lower bound), so an index flips only
    where float64 noise crosses an edge (chance ~1e-9 per value, see PARAMETER_GRID).
    """
    return torch.bucketize(scales.contiguous(), edges.to(scales.device))


class GaussianSymbols:
    """Gaussian symbols with a ``GaussianConditional``'s tables: for each latent,
    q = round(y - mu) coded with the table of its scale, y_hat = q + mu.

    Args:
        gaussian_conditional: the model's Gaussian conditional (tables built).
    """

    def __init__(self, gaussian_conditional: GaussianConditional):
        gc = gaussian_conditional
        # The tables as lists, trimmed to their lengths.
        self.lengths = gc.cdf_length.tolist()
        self.cdfs = [row[:n] for row, n in zip(gc.quantized_cdf.tolist(), self.lengths)]
        self.offsets = gc.offset.tolist()
        self.scale_edges = scale_edges(gc)
        self._symbols: list[Tensor] = []
        self._indexes: list[Tensor] = []

    def indexes_and_means(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """(table indexes, snapped means) of float64 params (L, 2M)."""
        scales, means = params.chunk(2, 1)
        return scale_indexes(scales, self.scale_edges), snap_to_grid(means)

    def encode(self, encoder: BufferedRansEncoder, y: Tensor, params: Tensor) -> Tensor:
        """Queue the symbols of y (L, M) for rANS; returns their y_hat (L, M)."""
        indexes, means = self.indexes_and_means(params)
        # Symbol q = round(y - mu); the decoder sees y_hat = q + mu.
        symbols = torch.round(y - means)
        self._symbols.append(symbols.int().flatten())
        self._indexes.append(indexes.int().flatten())
        return symbols + means

    def finish(self, encoder: BufferedRansEncoder) -> None:
        """Hand the queued symbols to the rANS encoder, in coding order."""
        if self._symbols:
            encoder.encode_with_indexes(
                torch.cat(self._symbols).tolist(), torch.cat(self._indexes).tolist(),
                self.cdfs, self.lengths, self.offsets,
            )  # fmt: skip

    def decode(self, decoder: RansDecoder, params: Tensor) -> Tensor:
        """Decode the symbols of one group; returns their y_hat (L, M)."""
        indexes, means = self.indexes_and_means(params)
        # Only the table rows this group uses cross into C++ (every call converts the
        # lists it is given; the 256-scale table holds ~4x the 64-scale one's entries);
        # each symbol keeps its own CDF, so the decoded symbols are the same.
        used, local = torch.unique(indexes.flatten(), return_inverse=True)
        rows = used.tolist()
        symbols = decoder.decode_stream(
            local.tolist(), [self.cdfs[i] for i in rows],
            [self.lengths[i] for i in rows], [self.offsets[i] for i in rows],
        )
        symbols = torch.tensor(symbols, dtype=means.dtype, device=means.device)
        return symbols.reshape(means.shape) + means


# ======================================================================================
# The coder: the schedule walked with the parameter path and a symbol coder
# ======================================================================================


@dataclasses.dataclass
class ContextCoder:
    """Codes a batch of latents y (B, M, H, W), one rANS string per image, walking
    :func:`coding_schedule` with the float64 :func:`parameter_path`.

    Args:
        context_prediction: the model's masked convolution.
        entropy_parameters: the model's entropy-parameters network.
        symbols: makes one image's symbol coder (e.g. ``GaussianSymbols(gc)``).
        order: one of :data:`CODING_ORDERS`; decode with the order that encoded.
    """

    context_prediction: MaskedConv2d
    entropy_parameters: nn.Module
    symbols: Callable[[], SymbolCoder]
    order: str = DEFAULT_CODING_ORDER

    def compress(self, y: Tensor, side: Tensor | None) -> tuple[list[bytes], Tensor]:
        """Code a batch of y (B, M, H, W) given hyperprior features (B, 2M, H, W) or None.

        Returns:
            (one rANS string per image, y_hat in y's dtype and on y's device).
        """
        coded = [
            self._compress_one(y[i : i + 1], None if side is None else side[i : i + 1])
            for i in range(len(y))
        ]
        y_hat = torch.cat([y_hat for _, y_hat in coded])
        return [string for string, _ in coded], y_hat.to(device=y.device, dtype=y.dtype)

    def decompress(
        self, strings: list, side: Tensor | None, height: int | None = None,
        width: int | None = None,
    ) -> Tensor:  # fmt: skip
        """Decode one string per image to y_hat (B, M, H, W) in the context model's
        dtype, on its device (for g_s); the size comes from ``side`` when there is one."""
        if side is not None:
            height, width = side.shape[-2:]
        y_hat = [
            self._decompress_one(s, None if side is None else side[i : i + 1], height, width)
            for i, s in enumerate(strings)
        ]
        weight = self.context_prediction.weight
        # one image: convert without a float64 copy of the whole latent (cat copies)
        y_hat = y_hat[0] if len(y_hat) == 1 else torch.cat(y_hat)
        return y_hat.to(device=weight.device, dtype=weight.dtype)

    def _code(self, side: Tensor | None, height: int, width: int, code) -> Tensor:
        """Walk the coding schedule; ``code(rows, cols, params) -> y_hat (L, M)``.

        Returns:
            y_hat (1, M, height, width), float64, on ``CODING_DEVICE``.
        """
        k = self.context_prediction.kernel_size[0]
        pad = k // 2
        m = self.context_prediction.in_channels
        device = CODING_DEVICE
        y_hat = torch.zeros((m, height + 2 * pad, width + 2 * pad), dtype=CODING_DTYPE,
                            device=device)  # fmt: skip
        params_at = parameter_path(self.context_prediction, self.entropy_parameters,
                                   None if side is None else side[0])  # fmt: skip
        threads = torch.get_num_threads()
        torch.set_num_threads(CODING_THREADS)
        try:
            for rows, cols in coding_schedule(height, width, k, self.order):
                rows, cols = rows.to(device), cols.to(device)
                params = params_at(y_hat, rows, cols)
                y_hat[:, rows + pad, cols + pad] = code(rows, cols, params).T
        finally:
            torch.set_num_threads(threads)
        return y_hat[None, :, pad : pad + height, pad : pad + width]

    def _compress_one(self, y: Tensor, side: Tensor | None) -> tuple[bytes, Tensor]:
        """Code one image's y (1, M, H, W); returns (rANS string, y_hat float64 on
        ``CODING_DEVICE``)."""
        y64 = y[0].to(CODING_DEVICE, CODING_DTYPE)
        encoder = BufferedRansEncoder()
        symbols = self.symbols()
        y_hat = self._code(
            side, y.shape[2], y.shape[3],
            lambda rows, cols, params: symbols.encode(encoder, y64[:, rows, cols].T, params),
        )  # fmt: skip
        symbols.finish(encoder)
        return encoder.flush(), y_hat

    def _decompress_one(
        self, string: bytes, side: Tensor | None, height: int, width: int
    ) -> Tensor:
        """Decode one image's y_hat (1, M, height, width), float64, from its rANS string."""
        decoder = RansDecoder()
        decoder.set_stream(string)
        symbols = self.symbols()
        return self._code(
            side, height, width,
            lambda rows, cols, params: symbols.decode(decoder, params),
        )  # fmt: skip
