"""Distribution distances between sets of images and the features they are computed on:
sliced Wasserstein (Laplacian pyramid), Fréchet distance and KID, the per-decoder table
(:func:`compare_decoders`), and the feature extractors (Inception, a random-conv stand-in).
Part of :mod:`nic_lib.perceptual`, whose docstring gives the sources; import from there.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor


Extractor = Callable[[Sequence[np.ndarray]], np.ndarray]
#: Slope of the LeakyReLU (pix2pix, DCGAN).
LEAKY_SLOPE = 0.2
#: ProGAN's SWD settings (Karras et al. 2018, metrics/sliced_wasserstein.py):
#: 7x7 neighbourhoods,
SWD_PATCH = 7
#: 128 neighbourhoods per image and level,
SWD_PATCHES_PER_IMAGE = 128
#: 4 repeats of 128 random directions,
SWD_REPEATS = 4
SWD_DIRECTIONS = 128
#: pyramid levels down to 16 pixels (the coarsest level ProGAN reports, "SWD 16").
SWD_MIN_RESOLUTION = 16
#: ProGAN prints SWD x 10^3; notebooks multiply by this when they show numbers.
SWD_DISPLAY_SCALE = 1e3
#: The 5x5 binomial kernel of cv2.pyrDown/pyrUp that ProGAN's pyramid uses.
_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0

#: KID: the polynomial kernel k(x, y) = (x·y / d + 1)^3 of Bińkowski et al. 2018,
KID_DEGREE = 3
#: averaged over 100 random subsets of at most 1000 samples (torch-fidelity's defaults).
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
#: Images are cut into 256x256 patches for FID/KID, plus a second grid shifted by 128
#: (HiFiC, Mentzer et al. 2020, appendix: few full images -> too few samples for FID).
FID_PATCH = 256
#: Standard FID features: Inception-v3's 2048-d pool features (Heusel et al. 2017).
INCEPTION_FEATURE = "2048"
#: torch-fidelity's Inception weights (converted from TensorFlow's 2015-12-05 graph).
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
#: Environment variable naming a local copy of those weights.
INCEPTION_WEIGHTS_ENV = "NIC_INCEPTION_WEIGHTS"
#: Inception batch (memory: 299x299x3 float inputs, ~30 MB per 32 images).
INCEPTION_BATCH = 32


# ---------------------------------------------------------------------------------------
# Sliced Wasserstein distance (ProGAN)


def _binomial_kernel(scale: float = 1.0) -> Tensor:
    k = torch.from_numpy(np.outer(_BINOMIAL, _BINOMIAL) * scale).float()
    return k.expand(3, 1, 5, 5).contiguous()


def _blur(x: Tensor, scale: float = 1.0) -> Tensor:
    # 5x5 binomial filter per channel, mirrored borders (scipy's mode="mirror" = reflect)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _binomial_kernel(scale), groups=3)


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid of one image, as ProGAN's ``generate_laplacian_pyramid``.

    G_0 = image, G_{l+1} = pyrDown(G_l) (blur, keep every other pixel);
    L_l = G_l − pyrUp(G_{l+1}) for l < levels − 1 and L_{levels−1} = G_{levels−1}.

    Args:
        image: uint8 (H, W, 3).
        levels: number of levels (sides halve per level; each must stay >= 3).

    Returns:
        ``levels`` float32 arrays (3, H_l, W_l) on the 0..255 scale, finest first.
    """
    g = [torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]]
    for _ in range(1, levels):
        g.append(_blur(g[-1])[..., ::2, ::2])
    out = []
    for fine, coarse in itertools.pairwise(g):
        # pyrUp: zeros between samples, then the kernel x 4
        up = torch.zeros(1, 3, 2 * coarse.shape[2], 2 * coarse.shape[3])
        up[..., ::2, ::2] = coarse
        up = _blur(up, 4.0)[..., :fine.shape[2], :fine.shape[3]]
        out.append((fine - up)[0].numpy())
    out.append(g[-1][0].numpy())
    return out


def _swd_levels(images: Sequence[np.ndarray]) -> int:
    side = min(min(img.shape[:2]) for img in images)
    if side < SWD_MIN_RESOLUTION:
        raise ValueError(f"images of {side} pixels are below SWD's coarsest level "
                         f"({SWD_MIN_RESOLUTION}); pass larger images or crops")
    # levels while side / 2^l >= 16
    return int(np.floor(np.log2(side / SWD_MIN_RESOLUTION))) + 1


def _descriptors(images: Sequence[np.ndarray], levels: int, per_image: int, seed: int
                 ) -> list[np.ndarray]:
    """(N·per_image, 3·7·7) normalised neighbourhoods for each level."""
    half = SWD_PATCH // 2
    by_level: list[list[np.ndarray]] = [[] for _ in range(levels)]
    for i, img in enumerate(images):
        for level, band in enumerate(laplacian_pyramid(img, levels)):
            # positions depend on (seed, image index, level) only: two lists of images
            # of the same sizes are sampled at the same places (common random numbers)
            rng = np.random.default_rng([seed, i, level])
            _, H, W = band.shape
            ys = rng.integers(half, H - half, per_image)
            xs = rng.integers(half, W - half, per_image)
            dy, dx = np.mgrid[-half:half + 1, -half:half + 1]
            patches = band[:, ys[:, None, None] + dy, xs[:, None, None] + dx]  # (3, n, 7, 7)
            by_level[level].append(patches.transpose(1, 0, 2, 3))
    out = []
    for parts in by_level:
        desc = np.concatenate(parts).astype(np.float64)
        # per-channel normalisation over this set's neighbourhoods (ProGAN's
        # finalize_descriptors): d ← (d − mean_c) / std_c
        desc -= desc.mean(axis=(0, 2, 3), keepdims=True)
        desc /= desc.std(axis=(0, 2, 3), keepdims=True) + 1e-12
        out.append(desc.reshape(desc.shape[0], -1))
    return out


def _sliced_wasserstein(a: np.ndarray, b: np.ndarray, repeats: int, directions: int,
                        rng: np.random.Generator) -> float:
    results = []
    for _ in range(repeats):
        dirs = rng.standard_normal((a.shape[1], directions))
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)  # unit directions
        # W1 between the 1-D projections = mean |sorted(a·θ) − sorted(b·θ)|
        pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
        results.append(np.abs(pa - pb).mean())
    return float(np.mean(results))


def sliced_wasserstein_distance(images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray],
                                patches_per_image: int = SWD_PATCHES_PER_IMAGE,
                                repeats: int = SWD_REPEATS, directions: int = SWD_DIRECTIONS,
                                seed: int = 0) -> dict:
    r"""Sliced Wasserstein distance between two sets of images (ProGAN, Karras et al. 2018).

    For each Laplacian-pyramid level (finest first, down to 16 pixels) ``patches_per_image``
    random 7x7 neighbourhoods (x 3 channels = 147 numbers) are taken from every image,
    each set normalised per channel by its own mean and standard deviation, and
    SWD = E_θ W_1(⟨a, θ⟩, ⟨b, θ⟩) over ``repeats`` x ``directions`` random unit θ, where
    the 1-D W_1 of equal-size samples is the mean absolute difference of the sorted values.
    Because each set is normalised by itself, a global brightness or contrast change is
    invisible to it; blur, noise, ringing and texture changes are not.

    Args:
        images_a, images_b: lists of uint8 (H, W, 3) images (sizes may differ; every side
            >= 16). Lists of different lengths are compared on a seeded random subset of
            the larger set's neighbourhoods, as many as the smaller set has.
        patches_per_image: neighbourhoods per image and level.
        repeats, directions: random projections (``repeats`` batches of ``directions``).
        seed: seeds neighbourhood positions and directions.

    Returns:
        ``{"levels": [SWD per level, finest first], "resolutions": [shorter side of the
        smallest image at each level], "mean": mean over levels}`` (raw values; ProGAN
        prints them x :data:`SWD_DISPLAY_SCALE`).

    Raises:
        ValueError: an empty list or an image smaller than 16 pixels.
    """
    if not len(images_a) or not len(images_b):
        raise ValueError("sliced_wasserstein_distance needs at least one image in each set")
    levels = _swd_levels(list(images_a) + list(images_b))
    desc_a = _descriptors(images_a, levels, patches_per_image, seed)
    desc_b = _descriptors(images_b, levels, patches_per_image, seed)
    rng = np.random.default_rng([seed, 0x5D])
    per_level = []
    for a, b in zip(desc_a, desc_b):
        n = min(len(a), len(b))
        if len(a) > n:
            a = a[np.sort(rng.choice(len(a), n, replace=False))]
        if len(b) > n:
            b = b[np.sort(rng.choice(len(b), n, replace=False))]
        per_level.append(_sliced_wasserstein(a, b, repeats, directions, rng))
    side = min(min(img.shape[:2]) for img in list(images_a) + list(images_b))
    return {"levels": per_level, "resolutions": [side >> l for l in range(levels)],
            "mean": float(np.mean(per_level))}


# ---------------------------------------------------------------------------------------
# Fréchet distance and KID


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, N − 1) of features (N, d).

    Args:
        features: (N, d), N >= 2.

    Returns:
        ``(mu (d,), sigma (d, d))`` in float64.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N >= 2, d); got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    r"""Fréchet (2-Wasserstein) distance between N(μ1, Σ1) and N(μ2, Σ2): FID's formula.

    d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}) (Dowson & Landau 1982; Heusel et al.
    2017). Tr (Σ1 Σ2)^{1/2} = Σ_i √λ_i(Σ1 Σ2): Σ1 Σ2 is similar to the positive
    semi-definite Σ1^{1/2} Σ2 Σ1^{1/2}, so its eigenvalues are real and >= 0 (tiny
    negative or imaginary round-off is clipped), which avoids scipy's ``sqrtm`` on
    singular covariances (fewer samples than feature dimensions).

    Args:
        mu1, sigma1: mean (d,) and covariance (d, d) of the first set.
        mu2, sigma2: the same for the second.

    Returns:
        d² (what FID reports), >= 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    diff = mu1 - mu2
    eig = np.linalg.eigvals(s1 @ s2)
    # Tr (Σ1 Σ2)^{1/2} = Σ √λ_i
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    # d² = ‖μ1 − μ2‖² + Tr Σ1 + Tr Σ2 − 2 Tr (Σ1 Σ2)^{1/2}
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt, 0.0))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m, n, d = len(x), len(y), x.shape[1]
    # k(a, b) = (a·b / d + 1)^3
    kxx = (x @ x.T / d + 1) ** KID_DEGREE
    kyy = (y @ y.T / d + 1) ** KID_DEGREE
    kxy = (x @ y.T / d + 1) ** KID_DEGREE
    # MMD²_u = Σ_{i≠j} k(x_i,x_j)/(m(m−1)) + Σ_{i≠j} k(y_i,y_j)/(n(n−1)) − 2 Σ k(x_i,y_j)/(mn)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def kernel_inception_distance(features_a: np.ndarray, features_b: np.ndarray,
                              subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                              seed: int = 0) -> dict:
    r"""KID: the unbiased squared MMD with the kernel k(x, y) = (x·y/d + 1)^3.

    Bińkowski et al. 2018. Averaged over ``subsets`` random subsets of
    min(``subset_size``, N_a, N_b) samples of each set (drawn without replacement within
    a subset), as torch-fidelity does; the estimate is unbiased, so it can be negative
    and its expectation is 0 for identical distributions.

    Args:
        features_a, features_b: (N_a, d) and (N_b, d) features, N >= 2.
        subsets: number of subsets.
        subset_size: samples per subset (capped by the smaller set).
        seed: seeds the subsets.

    Returns:
        ``{"mean", "std"}`` over subsets.

    Raises:
        ValueError: fewer than 2 samples or mismatched feature sizes.
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"KID needs (N >= 2, d) features of equal d; got {a.shape}, {b.shape}")
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(a[rng.choice(len(a), size, replace=False)],
                             b[rng.choice(len(b), size, replace=False)])
              for _ in range(subsets)]
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def feature_patches(images: Sequence[np.ndarray], size: int = FID_PATCH) -> list[np.ndarray]:
    """Non-overlapping size x size patches, plus a grid shifted by size/2 (HiFiC's FID protocol).

    Args:
        images: uint8 (H, W, 3) images.
        size: patch side.

    Returns:
        The patches, image by image, row-major (images smaller than ``size`` give none).
    """
    out = []
    for img in images:
        H, W = img.shape[:2]
        for offset in (0, size // 2):
            for y in range(offset, H - size + 1, size):
                for x in range(offset, W - size + 1, size):
                    out.append(img[y:y + size, x:x + size])
    return out


def distribution_metrics(reference: Sequence[np.ndarray], images: Sequence[np.ndarray],
                         extractor: Extractor, patch: int | None = FID_PATCH,
                         kid_subsets: int = KID_SUBSETS, seed: int = 0) -> dict:
    """FID-style Fréchet distance and KID between two image sets under one extractor.

    Args:
        reference: the originals.
        images: the decoded images.
        extractor: ``f(images) -> (N, d)`` features (e.g. :func:`inception_extractor`).
        patch: cut images into :func:`feature_patches` of this side first (None: whole
            images).
        kid_subsets: subsets of :func:`kernel_inception_distance`.
        seed: seeds KID's subsets.

    Returns:
        ``{"fd", "kid", "kid_std", "samples"}``.

    Raises:
        ValueError: fewer than 2 samples (images smaller than ``patch``?).
    """
    ref = feature_patches(reference, patch) if patch else list(reference)
    img = feature_patches(images, patch) if patch else list(images)
    if min(len(ref), len(img)) < 2:
        raise ValueError(f"need at least 2 samples per set, got {len(ref)} and {len(img)}; "
                         f"images smaller than patch={patch}? pass patch=None or a smaller one")
    fa, fb = extractor(ref), extractor(img)
    kid = kernel_inception_distance(fa, fb, subsets=kid_subsets, seed=seed)
    return {"fd": frechet_distance(*gaussian_statistics(fa), *gaussian_statistics(fb)),
            "kid": kid["mean"], "kid_std": kid["std"], "samples": len(ref)}


def compare_decoders(originals: Sequence[np.ndarray], decoded: dict[str, Sequence[np.ndarray]],
                     extractor: Extractor | None = None, patch: int | None = FID_PATCH,
                     kid_subsets: int = KID_SUBSETS, seed: int = 0) -> pd.DataFrame:
    """Distribution distances of several decoders' outputs to the originals; one row each.

    Args:
        originals: the original images.
        decoded: ``{codec label: decoded images, in the order of originals}``.
        extractor: features for the Fréchet distance and KID (None: SWD only, those NaN).
        patch, kid_subsets: see :func:`distribution_metrics`.
        seed: seeds SWD and KID (the same for every codec: common random numbers).

    Returns:
        DataFrame with ``codec``, ``swd`` (mean over levels), ``swd_<resolution>`` per
        level (finest first), ``fd``, ``kid``, ``kid_std`` and ``feature_samples``.
    """
    rows = []
    for label, images in decoded.items():
        swd = sliced_wasserstein_distance(originals, images, seed=seed)
        row = {"codec": label, "swd": swd["mean"],
               **{f"swd_{r}": v for r, v in zip(swd["resolutions"], swd["levels"])},
               "fd": float("nan"), "kid": float("nan"), "kid_std": float("nan"),
               "feature_samples": 0}
        if extractor is not None:
            m = distribution_metrics(originals, images, extractor, patch, kid_subsets, seed)
            row.update(fd=m["fd"], kid=m["kid"], kid_std=m["kid_std"], feature_samples=m["samples"])
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# Feature extractors


class ExtractorUnavailableError(RuntimeError):
    """A feature extractor's package or weights are missing on this machine."""


def _batches(images: Sequence[np.ndarray], batch: int):
    for i in range(0, len(images), batch):
        yield images[i:i + batch]


def random_conv_extractor(width: int = 32, seed: int = 0) -> Extractor:
    """A weight-free stand-in extractor: a random, fixed 3-layer conv net, mean-pooled.

    Its features are *not* perceptual (no training); it exercises the FID/KID code path
    in tests and on machines without the Inception weights, and is deterministic given
    ``seed``.

    Args:
        width: feature dimension d.
        seed: seeds the weights.

    Returns:
        ``f(images) -> (N, width)`` float64 features.
    """
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(width, c, 3, 3, generator=gen) / (3 * c**0.5) for c in (3, width, width)]

    @torch.no_grad()
    def extract(images: Sequence[np.ndarray]) -> np.ndarray:
        feats = []
        for img in images:
            x = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1)[None] / 255
            for w in weights:
                x = F.leaky_relu(F.conv2d(x, w, stride=2, padding=1), LEAKY_SLOPE)
            feats.append(x.mean((2, 3))[0].double().numpy())
        return np.stack(feats)

    return extract


def inception_weights_path() -> Path:
    """Where :func:`inception_extractor` looks for the weights.

    ``$NIC_INCEPTION_WEIGHTS`` if set, else torch hub's cache
    (``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``, where
    torch-fidelity's own download puts them).
    """
    env = os.environ.get(INCEPTION_WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def inception_extractor(weights: str | os.PathLike | None = None,
                        batch: int = INCEPTION_BATCH) -> Extractor:
    """The standard FID Inception-v3 network (torch-fidelity), 2048-d pool features.

    Only local weights are used; nothing is downloaded.

    Args:
        weights: the weights file (default :func:`inception_weights_path`).
        batch: images per forward pass (all resized to 299x299 inside the network).

    Returns:
        ``f(images) -> (N, 2048)`` float64 features.

    Raises:
        ExtractorUnavailableError: torch-fidelity is not installed, or the weights file is
            missing; the message says how to get them.
    """
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import (
            URL_INCEPTION_V3,
            FeatureExtractorInceptionV3,
        )
    except ImportError as err:
        raise ExtractorUnavailableError(
            "FID/KID need torch-fidelity's Inception network: `pip install torch-fidelity` "
            f"({err})") from err
    path = Path(weights).expanduser() if weights else inception_weights_path()
    if not path.is_file():
        raise ExtractorUnavailableError(
            f"no Inception weights at {path}. On a machine with internet run\n"
            f"  python -c \"import torch; torch.hub.load_state_dict_from_url('{URL_INCEPTION_V3}')\"\n"
            f"(it saves them in torch hub's cache), or download that URL and set "
            f"${INCEPTION_WEIGHTS_ENV} to the file")
    net = FeatureExtractorInceptionV3("inception-v3-compat", [INCEPTION_FEATURE],
                                      feature_extractor_weights_path=str(path))

    @torch.no_grad()
    def extract(images: Sequence[np.ndarray]) -> np.ndarray:
        feats = []
        for group in _batches(list(images), batch):
            sizes = {img.shape for img in group}
            chunks = [group] if len(sizes) == 1 else [[img] for img in group]
            for chunk in chunks:
                x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).contiguous()
                feats.append(net(x)[0].double().numpy())
        return np.concatenate(feats)

    return extract
