"""ELIC (He et al., CVPR 2022) in this project's model contract: ``elic2022``.

CompressAI 1.2.8 ships the architecture (``compressai.models.Elic2022Official``): residual
bottleneck transforms with attention blocks, a hyperprior, and y coded in five uneven
channel groups, each group in two checkerboard passes conditioned on the groups before it
(the space-channel context model, SCCTX). Nothing of it is rewritten here. This module only

- registers it under the paper's key, with the widths as constructor arguments that
  :mod:`nic_lib.models.registry` and :mod:`nic_lib.models.checkpoints` read back
  (``N``, ``M``, ``groups``);
- maps its ``compress`` / ``decompress`` onto the ``{"strings", "shape": z size}``
  contract of the mbt2018 family (CompressAI's ``shape`` is a dict of every group's y
  shape, which the z size determines), under ``torch.no_grad`` (CompressAI's channel
  groups write into views in place, which autograd refuses);
- builds the Gaussian coders' tables from this project's 256-scale table
  (``_FineScaleTable``, as every model of :mod:`nic_lib.models.google`).

.. code-block:: none

        x ─► g_a (RBs, attention) ─► y ─► h_a ─► Q ─► EB ─► h_s ─► params
                                      │                               │
                                      ▼  groups 16,16,32,64,M-128     ▼
                 y^(1) ─► y^(2) ─► ... ─► y^(5)   each: anchors, then non-anchors
                 (g_ch: earlier groups, g_sp: checkerboard, aggregated with params)
                                      │
        x_hat ◄─ g_s (attention, RBs) ◄┘ y_hat

Forward (training) contract: ``{"x_hat", "likelihoods": {"y", "z"}}`` (the five groups'
likelihoods concatenated back into y's shape by CompressAI), y and z quantized with
straight-through rounding as in ELIC's paper, the z density's quantiles placed by
``aux_loss()``: the training loop (:mod:`nic_lib.training`) needs nothing else.

Determinism: not bit for bit across thread counts. The transforms and the entropy
parameters run on the GEMM path (``tiling.deterministic_convolutions``, as the mbt2018
family's g_s), but CompressAI computes ELIC's means in float32 and its attention blocks
still change their last bits with the thread count, so ŷ = q + μ differs by ~1e-7 between
1 and 2 threads. Measured on a 14-step N = 64, M = 192 model (/tmp probe: encode on 1 and
2 threads, decode each on the other): on kodim01, 05 and 23 the strings were identical
across encoder thread counts and every file decoded on the other thread count, to images
that differ in 1-2 pixels (4-7 without the GEMM path). Nothing guarantees that the coder's
symbols never flip (that needs the float64 parameter path of
:mod:`nic_lib.models.context_coding`, not written for ELIC); tests check the round trip on
one thread count.

Rate estimate: not yet checked on a trained ELIC. On the 14-step model above, the
eval-mode forward's y likelihoods promised 14,897 bytes on kodim23 where the coder wrote
12,968 (z: 4,149 vs 4,156), whichever scale table; unexplained. The OOD grid uses
likelihood rates only after they match real bitstreams within 2%
(:func:`nic_lib.bench.check_likelihood_rate`), so a trained ELIC with the same gap is
refused there, not mis-measured: check it when ``ood-elic-*`` ship.
"""

from __future__ import annotations

import torch
from compressai.models import Elic2022Official
from torch import Tensor

from . import entropy_models, tiling
from .google import Y_PER_Z, _FineScaleTable
from .registry import register_model

__all__ = ["ELIC"]

#: ELIC's published widths (N, M) = (192, 320); the cpu profile's are in
#: :data:`nic_lib.models.registry.CPU_MODEL_WIDTHS`.
DEFAULT_N, DEFAULT_M = 192, 320
#: y's channel groups before the last: ELIC's 16, 16, 32, 64; the last takes M - 128.
LEADING_GROUPS = (16, 16, 32, 64)


def channel_groups(M: int) -> list[int]:
    """ELIC's uneven channel groups of a latent of M channels.

    Args:
        M: latent channels (more than 128).

    Returns:
        ``[16, 16, 32, 64, M - 128]``, the paper's split (small groups first: the first
        channels carry most of the energy, so they are coded with the least context).

    Raises:
        ValueError: M <= 128.
    """
    if M <= sum(LEADING_GROUPS):
        raise ValueError(f"ELIC needs M > {sum(LEADING_GROUPS)} (groups 16, 16, 32, 64 and "
                         f"the rest), got M={M}; pass --M 192 or more")
    return [*LEADING_GROUPS, M - sum(LEADING_GROUPS)]


@register_model("elic2022")
class ELIC(_FineScaleTable, Elic2022Official):
    """ELIC, CompressAI's ``Elic2022Official``, in this project's contract (module docstring).

    Args:
        N: channels of the transforms and of the hyperprior.
        M: latent channels (the groups are :func:`channel_groups` of it).
    """

    def __init__(self, N: int = DEFAULT_N, M: int = DEFAULT_M):
        super().__init__(N=int(N), M=int(M), groups=channel_groups(int(M)))
        # the entropy models with this project's training settings (noise source)
        entropy_models.own_entropy_models(self)
        self.N, self.M = int(N), int(M)

    @property
    def downsampling_factor(self) -> int:
        """Input sides must be multiples of this (g_a's four and h_a's two stride-2 layers)."""
        return 2 ** (4 + 2)

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode images to ``{"strings": [one list per coded stream], "shape": z size}``."""
        with tiling.deterministic_convolutions():
            out = self.latent_codec.compress(self.g_a(x))
        return {"strings": out["strings"], "shape": tuple(out["shape"]["hyper"])}

    @torch.no_grad()
    def decompress(self, strings: list, shape) -> dict:
        """Decode ``compress``'s output to ``{"x_hat"}`` (clamped to [0, 1])."""
        h, w = (int(s) for s in shape)
        y_size = (h * Y_PER_Z, w * Y_PER_Z)
        shapes = {"y": [(g, *y_size) for g in self.groups], "hyper": (h, w)}
        with tiling.deterministic_convolutions():
            y_hat = self.latent_codec.decompress(strings, shapes)["y_hat"]
            return {"x_hat": self.g_s(y_hat).clamp_(0, 1)}
