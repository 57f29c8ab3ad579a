r"""PQ-MIM: a product-quantized VQ-VAE with a masked-image-modeling entropy model.

El-Nouby, Muckley, Ullrich, Laptev, Verbeek, Jégou, "Image Compression with Product
Quantized Masked Image Modeling" (TMLR 2023, arXiv 2212.07372). No public implementation
exists and the paper's sizes, schedule and step counts are not public (see
``../shared/reference/papers.md``); every choice below is ours, informed by MaskGIT
(Chang et al. 2022) and M2T (Mentzer et al. 2023), and named as a module constant.

.. code-block:: none

    x ─► g_a ─► z (B, D, H/16, W/16) ─► split into M sub-vectors of D/M
                                          │  product quantizer: codebook m (K entries)
                                          ▼
                         codes c (B, H/16, W/16, M) ∈ {0..K-1}^M ──► z_q ─► g_s ─► x_hat
                                          │
         MIM entropy model: bidirectional transformer over the token grid;
         token = Σ_m E_m[c_m] where visible, a mask token elsewhere;
         output: M categorical distributions per position.
         Coding: S steps of a fixed schedule; step s codes its group's codes with
         P(c | codes of steps < s) by rANS (CompressAI), bits = Σ −log2 P(c);
         at inference each token attends to tokens within radius r (tuned per
         checkpoint, written in the stream header; r = 0: global attention).

The package, one concern a file; imports point down this list only (no cycles):

============================  =============================================================
``autoencoder``               g_a, g_s, :class:`ProductQuantizer` (EMA codebooks)
``entropy_model``             :class:`MaskedTokenModel` (the MIM transformer), local attention
``schedule``                  training masks (:func:`mask_ratio`), :func:`coding_schedule`
``coding``                    categorical CDFs, rANS coding of codes (MIM and independent)
``model``                     :class:`PQMIM`: the three above behind ``compress``/``decompress``
``evaluation``                :func:`code_image`, :func:`rate_table`, :func:`quantizer_table`
``radius``                    :func:`tune_attention_radius`, the ``.radius.json`` sidecars
``checkpoints``               :func:`load_pqmim`, :func:`find_checkpoints`, :func:`rate_points`
                              (the quality axis over files; the files are
                              ``save_checkpoint``'s, model key ``"pqmim"``)
============================  =============================================================

Every public name of these modules is reachable here (``pqmim.code_image``,
``pqmim.DOWNSAMPLING``, ...). Training lives in :mod:`nic_lib.training.pqmim`
(command line: ``python -m nic_lib.train_pqmim``).

Written by hand, and why: the product quantizer with EMA codebooks and dead-code restarts
(a few lines; ``vector-quantize-pytorch`` would add a dependency for them), the
transformer's token embedding (the transformer itself is ``torch.nn.TransformerEncoder``),
the coding schedule, and per-symbol categorical CDF tables (quantized by CompressAI's
``pmf_to_quantized_cdf`` and coded by its rANS).
"""

from __future__ import annotations

from .autoencoder import (
    COMMITMENT_WEIGHT,
    DEAD_CODE_THRESHOLD,
    DEFAULT_CODEBOOK_SIZE,
    DEFAULT_LATENT_DIM,
    DEFAULT_N,
    DEFAULT_SUBQUANTIZERS,
    DOWNSAMPLING,
    EMA_DECAY,
    EMA_EPS,
    ProductQuantizer,
    analysis_transform,
    synthesis_transform,
)
from .entropy_model import (
    GLOBAL_ATTENTION,
    MIM_FFN_RATIO,
    MIM_HEADS,
    MIM_LAYERS,
    MIM_WIDTH,
    MaskedTokenModel,
    local_attention_mask,
)
from .schedule import (
    DEFAULT_STEPS,
    MASK_LAWS,
    PLASTIC,
    SCHEDULE_ALPHA,
    coding_schedule,
    group_sizes,
    mask_ratio,
    random_mask,
    spread_order,
)
from .coding import (  # isort: skip  (the order of the layers)
    ENTROPY_CODER_PRECISION,
    HEADER,
    HYBRID_SEED,
    HYBRID_TEMPERATURE,
    bits_per_step,
    categorical_cdfs,
    decode_codes,
    decode_independent,
    encode_codes,
    encode_independent,
    estimate_bits,
    fixed_length_bits,
)
from .model import FULL_PRECISION_PREFIXES, MIM_BYTES_PER_TOKEN_PAIR, PRIOR_PSEUDOCOUNT, PQMIM  # isort: skip
from .evaluation import BUDGET_SAMPLES, RATE_COLUMNS, code_image, code_to_budget, quantizer_table, rate_table  # isort: skip
from .radius import (  # isort: skip
    RADIUS_CANDIDATES,
    best_radius,
    radius_is_current,
    radius_path,
    save_tuned_radius,
    tune_attention_radius,
)
from .checkpoints import (  # isort: skip
    checkpoint_dir,
    default_checkpoint_path,
    find_checkpoints,
    is_perceptual_checkpoint,
    load_pqmim,
    rate_points,
)

__all__ = [
    "BUDGET_SAMPLES",
    "MASK_LAWS",
    "PQMIM",
    "MaskedTokenModel",
    "ProductQuantizer",
    "analysis_transform",
    "best_radius",
    "bits_per_step",
    "categorical_cdfs",
    "checkpoint_dir",
    "code_image",
    "code_to_budget",
    "coding_schedule",
    "decode_codes",
    "default_checkpoint_path",
    "encode_codes",
    "estimate_bits",
    "find_checkpoints",
    "fixed_length_bits",
    "is_perceptual_checkpoint",
    "load_pqmim",
    "local_attention_mask",
    "mask_ratio",
    "quantizer_table",
    "radius_is_current",
    "radius_path",
    "random_mask",
    "rate_points",
    "rate_table",
    "save_tuned_radius",
    "spread_order",
    "synthesis_transform",
    "tune_attention_radius",
]
