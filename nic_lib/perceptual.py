"""The perceptual side of compression: a patch discriminator, GAN losses, and distribution
distances between sets of images (sliced Wasserstein, Fréchet distance, KID).

Used by stage C of PQ-MIM's training (:mod:`nic_lib.training.pqmim.stage_c`, adversarial
fine-tuning of the decoder) and by notebook 05. What is here, and where it comes from:

- :class:`PatchDiscriminator`: pix2pix's PatchGAN (Isola et al. 2017), smaller, with
  spectral normalisation (Miyato et al. 2018).
- :func:`generator_loss` / :func:`discriminator_loss`: non-saturating (Goodfellow et al.
  2014; HiFiC, Mentzer et al. 2020) or hinge (Lim & Ye 2017; SAGAN, BigGAN) GAN losses.
- :func:`sliced_wasserstein_distance`: the weight-free distance of Karras et al. 2018
  (ProGAN, ``metrics/sliced_wasserstein.py``): 7x7 neighbourhoods of Laplacian-pyramid
  levels, random 1-D projections, sorted (1-D optimal transport).
- :func:`frechet_distance` (FID's formula, Heusel et al. 2017) and
  :func:`kernel_inception_distance` (KID, Bińkowski et al. 2018) over the features of any
  extractor; :func:`inception_extractor` gives the standard FID Inception network
  (torch-fidelity's port of the TensorFlow graph) when its weights are on disk,
  :func:`random_conv_extractor` a weight-free stand-in (tests, machines without the weights).

The metrics are written by hand from their formulas (a few lines each) so that they run
on any features and on lists of images of different sizes; torch-fidelity is used only for
the Inception network itself.

An *extractor* is any callable ``f(images) -> (N, d) float64 array`` taking a list of uint8
(H, W, 3) images.

Two files: the discriminator and the GAN losses here, the distances and the extractors in
:mod:`nic_lib.perceptual_distances`; their names are re-exported here (``__all__``).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from nic_lib.perceptual_distances import (  # noqa: F401  re-exported: import them from here
    _blur,
    compare_decoders,
    distribution_metrics,
    Extractor,
    ExtractorUnavailableError,
    feature_patches,
    FID_PATCH,
    frechet_distance,
    gaussian_statistics,
    INCEPTION_BATCH,
    inception_extractor,
    INCEPTION_FEATURE,
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILE,
    inception_weights_path,
    kernel_inception_distance,
    KID_DEGREE,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    laplacian_pyramid,
    LEAKY_SLOPE,
    random_conv_extractor,
    sliced_wasserstein_distance,
    SWD_DIRECTIONS,
    SWD_DISPLAY_SCALE,
    SWD_MIN_RESOLUTION,
    SWD_PATCH,
    SWD_PATCHES_PER_IMAGE,
    SWD_REPEATS,
)


__all__ = [
    "Extractor",
    "ExtractorUnavailableError",
    "PatchDiscriminator",
    "compare_decoders",
    "discriminator_loss",
    "distribution_metrics",
    "feature_patches",
    "frechet_distance",
    "gaussian_statistics",
    "generator_loss",
    "inception_extractor",
    "inception_weights_path",
    "kernel_inception_distance",
    "laplacian_pyramid",
    "random_conv_extractor",
    "sliced_wasserstein_distance",
    "state_digest",
]


# ---------------------------------------------------------------------------------------
# Defaults

#: Discriminator width of the first layer: pix2pix uses 64; 32 keeps stage C cheap on a
#: CPU (the decoder it judges has N = 128 channels).
DISC_WIDTH = 32
#: Stride-2 layers: pix2pix's 70x70 PatchGAN has 3 (then two stride-1 layers); each
#: output logit then sees a 70x70 patch, the scale of texture rather than layout.
DISC_LAYERS = 3
#: GAN loss: "non-saturating" (HiFiC's choice, the closest compression paper) or "hinge".
GAN_LOSSES = ("non-saturating", "hinge")
DEFAULT_GAN_LOSS = "non-saturating"


# ---------------------------------------------------------------------------------------
# Discriminator and GAN losses


class PatchDiscriminator(nn.Module):
    r"""A PatchGAN discriminator (pix2pix, Isola et al. 2017): one real/fake logit per patch.

    .. code-block:: none

        x (B,3,H,W) in [0,1] ─► 2x−1 ─► conv4x4/2 (C) ─► LReLU
                          ─► [conv4x4/2 (2^i C) ─► LReLU] × (layers − 1)
                          ─► conv4x4/1 (2^layers C) ─► LReLU ─► conv4x4/1 (1)
                          ─► logits (B, 1, ~H/2^layers, ~W/2^layers)

    Every convolution is spectrally normalised (Miyato et al. 2018) instead of pix2pix's
    batch normalisation: CPU batches are small (8 crops), where batch statistics are
    noisy and couple real and fake samples, and bounding each layer's Lipschitz constant
    is the standard way to keep a discriminator from overpowering a generator that is
    only fine-tuned (HiFiC's discriminator is spectrally normalised too). The power
    iteration's vectors are buffers, so a resumed run continues them exactly.

    Args:
        width: channels of the first layer (doubled per stride-2 layer, at most 8x).
        layers: stride-2 layers.
    """

    def __init__(self, width: int = DISC_WIDTH, layers: int = DISC_LAYERS):
        super().__init__()
        blocks: list[nn.Module] = []
        c_in, c_out = 3, width
        for i in range(layers):
            blocks += [spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)),
                       nn.LeakyReLU(LEAKY_SLOPE)]
            c_in, c_out = c_out, width * min(2 ** (i + 1), 8)
        blocks += [spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=1, padding=1)),
                   nn.LeakyReLU(LEAKY_SLOPE),
                   spectral_norm(nn.Conv2d(c_out, 1, 4, stride=1, padding=1))]
        self.net = nn.Sequential(*blocks)
        self.width, self.layers = int(width), int(layers)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, 1, h, w) of images x (B, 3, H, W) on the 0..1 scale (H, W >= 32)."""
        return self.net(2 * x - 1)


def _check_loss(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSSES)}")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor,
                       kind: str = DEFAULT_GAN_LOSS) -> Tensor:
    r"""The discriminator's loss (mean over patches and batch).

    Non-saturating (Goodfellow et al. 2014), with σ the logistic function:
    L_D = −E[log σ(D(x))] − E[log(1 − σ(D(x̂)))] = E[softplus(−D(x))] + E[softplus(D(x̂))].
    Hinge (Lim & Ye 2017): L_D = E[max(0, 1 − D(x))] + E[max(0, 1 + D(x̂))].

    Args:
        real_logits: D(x) of original images.
        fake_logits: D(x̂) of decoded images (detached from the generator).
        kind: one of :data:`GAN_LOSSES`.

    Returns:
        Scalar loss.

    Raises:
        ValueError: unknown ``kind``.
    """
    _check_loss(kind)
    if kind == "hinge":
        # L_D = E[relu(1 − D(x))] + E[relu(1 + D(x̂))]
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    # L_D = E[softplus(−D(x))] + E[softplus(D(x̂))]
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor, kind: str = DEFAULT_GAN_LOSS) -> Tensor:
    r"""The generator's (decoder's) adversarial loss.

    Non-saturating: L_G = −E[log σ(D(x̂))] = E[softplus(−D(x̂))] (large gradients while the
    discriminator wins, unlike the minimax log(1 − σ)). Hinge: L_G = −E[D(x̂)].

    Args:
        fake_logits: D(x̂) with gradients to the decoder.
        kind: one of :data:`GAN_LOSSES`.

    Returns:
        Scalar loss.

    Raises:
        ValueError: unknown ``kind``.
    """
    _check_loss(kind)
    if kind == "hinge":
        # L_G = −E[D(x̂)]
        return -fake_logits.mean()
    # L_G = E[softplus(−D(x̂))]
    return F.softplus(-fake_logits).mean()


def state_digest(state_dict: dict[str, Tensor], exclude_prefix: str = "g_s.") -> str:
    """sha256 of every tensor of a state dict except those under ``exclude_prefix``.

    Stage C changes only PQ-MIM's decoder ``g_s``; equal digests of a base and a
    perceptual checkpoint mean the same encoder, codebooks and MIM model, hence the same
    bitstreams (how notebook 05 pairs them). Half-precision tensors are digested as the
    float32 values a loaded model holds, so a checkpoint stored with float16 weights and
    the model loaded from it have the same digest.

    Args:
        state_dict: a model's state dict.
        exclude_prefix: names starting with it are left out.

    Returns:
        Hex digest.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        if name.startswith(exclude_prefix):
            continue
        t = state_dict[name].detach().cpu().contiguous()
        if t.dtype in (torch.float16, torch.bfloat16):
            # weights stored in half precision (save_checkpoint(..., dtype=torch.float16))
            # are computed with in float32 after loading: digest them as such (exact cast)
            t = t.float()
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
