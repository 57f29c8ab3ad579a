r"""PQ-MIM's entropy model: a bidirectional transformer over the token grid.

:class:`MaskedTokenModel` predicts M categorical distributions per position from the
visible codes; :func:`local_attention_mask` restricts its attention at inference. The
transformer is ``torch.nn.TransformerEncoder``; written by hand: the token embedding (a
sum of per-codebook code embeddings, one mask vector per codebook) and the conditional
positional encoding. It imports nothing of the package; :mod:`.coding` runs it step by
step.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

#: MIM transformer: width, depth, heads. Small enough to train on a CPU; the paper's size
#: is not public.
MIM_WIDTH = 256
MIM_LAYERS = 4
MIM_HEADS = 4
#: Feed-forward width = 4 x width (the transformer default since Vaswani et al. 2017).
MIM_FFN_RATIO = 4
#: Attention radius at inference when a checkpoint has no tuned one: 0 = every token
#: attends to every token (how the MIM model was trained, on 12x12 token windows).
GLOBAL_ATTENTION = 0


class MaskedTokenModel(nn.Module):
    r"""The MIM entropy model: a bidirectional transformer over the token grid.

    .. code-block:: none

        codes (B,H,W,M), visible (B,H,W,M) (or (B,H,W): all M codes alike)
          │  token_hw = Σ_m ( E_m[c_hw,m]  if (h,w,m) visible  else  mask_m )
          ▼
        + depthwise 3x3 convolution of the token grid (conditional positional encoding,
          Chu et al. 2021: translation invariant, any grid size)
          ▼
        TransformerEncoder (pre-norm, GELU, no causal mask) ─► LayerNorm ─► Linear
          ▼
        logits (B, H, W, M, K): M categorical distributions per position

    The unit of masking is one code (a position and a sub-quantizer), not a whole
    position: a token whose codes are partly known embeds the known ones and a per-codebook
    mask vector for the others. The M codes predicted for one position are conditionally
    independent given the visible context (one softmax per sub-quantizer), so the coding
    schedule (:func:`coding_schedule`) spreads a position's M codes over different steps:
    the later ones are then predicted from the earlier ones of the same token. This is our
    choice (the paper does not say how it treats the M codes of a token): the M
    sub-vectors of one 16x16 patch are strongly dependent, and coding them in the same step
    would give that dependence away.

    Local attention at inference: with ``radius`` r > 0, a token attends only to tokens
    within Chebyshev distance r on the grid (:func:`local_attention_mask`). The model is
    trained on 12x12 token windows (192-pixel crops), so on a whole Kodak image (32x48
    tokens) global attention mixes in far more, and farther, tokens than it ever saw;
    restricting attention to the neighbourhood it was trained on lowers the bits (measured by
    :func:`tune_attention_radius` on held-out photos). r is a coding parameter: the encoder
    writes it in the stream header and the decoder reads it from there.

    Args:
        M, K: sub-quantizers and codebook size.
        width, layers, heads: transformer size.

    Attributes:
        attention_radius: the default r of :func:`encode_codes` and :func:`bits_per_step`
            (not a weight: :class:`~.model.PQMIM` sets it from its ``attention_radius``,
            which a checkpoint's config stores; :data:`GLOBAL_ATTENTION` by default).
    """

    def __init__(self, M: int, K: int, width: int = MIM_WIDTH, layers: int = MIM_LAYERS,
                 heads: int = MIM_HEADS):
        super().__init__()
        self.M, self.K = int(M), int(K)
        self.attention_radius = GLOBAL_ATTENTION
        self.code_embeddings = nn.Embedding(self.M * self.K, width)
        self.mask_tokens = nn.Parameter(torch.zeros(self.M, width))  # one per codebook
        self.position_conv = nn.Conv2d(width, width, 3, padding=1, groups=width)
        layer = nn.TransformerEncoderLayer(width, heads, MIM_FFN_RATIO * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, self.M * self.K)
        nn.init.normal_(self.code_embeddings.weight, std=0.02)
        nn.init.normal_(self.mask_tokens, std=0.02)
        self.register_buffer("code_offsets", torch.arange(self.M) * self.K, persistent=False)

    def forward(self, codes: Tensor, visible: Tensor, radius: int = GLOBAL_ATTENTION) -> Tensor:
        """Logits of every position's M codes given the visible ones.

        Args:
            codes: (B, H, W, M) long; values of hidden codes are ignored.
            visible: (B, H, W, M) bool per code, or (B, H, W) per position.
            radius: attention radius r in tokens (0 = global; see the class docstring).

        Returns:
            logits (B, H, W, M, K).
        """
        B, H, W, M = codes.shape
        if visible.dim() == 3:
            visible = visible[..., None].expand(B, H, W, M)
        # token = Σ_m (E[m·K + c_m] if visible else mask_m)
        emb = self.code_embeddings(codes.clamp(0, self.K - 1) + self.code_offsets)
        tokens = torch.where(visible[..., None], emb, self.mask_tokens).sum(-2)
        grid = tokens.permute(0, 3, 1, 2)
        grid = grid + self.position_conv(grid)
        mask = local_attention_mask(H, W, radius)
        h = self.transformer(grid.flatten(2).transpose(1, 2),
                             mask=None if mask is None else mask.to(grid.device))  # (B, H·W, width)
        return self.head(self.norm(h)).reshape(B, H, W, M, self.K)


@functools.lru_cache(maxsize=16)
def local_attention_mask(height: int, width: int, radius: int) -> Tensor | None:
    r"""Attention mask of local attention on an H x W token grid, or None for global.

    Token p = (i, j) may attend to token q = (i', j') iff max(|i - i'|, |j - j'|) <= r
    (a (2r+1) x (2r+1) window, clipped at the borders). Returned as PyTorch's boolean
    ``mask`` convention: True = *not* allowed.

    Args:
        height, width: grid size.
        radius: r >= 0; 0 means global attention.

    Returns:
        (H·W, H·W) bool, or None when r = 0 or the window covers the whole grid.

    Raises:
        ValueError: negative radius.
    """
    if radius < 0:
        raise ValueError(f"attention radius must be >= 0 (0 = global attention); got {radius}")
    if radius == 0 or radius >= max(height, width) - 1:
        return None
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    # d(p, q) = max(|i_p − i_q|, |j_p − j_q|)  (Chebyshev distance)
    dist = torch.maximum((i[:, None] - i[None]).abs(), (j[:, None] - j[None]).abs())
    return dist > radius
