"""Closed forms of linear transform coding of stationary Gaussian sources, and what a code
fitted to one spectrum does to inputs with another (notebook 04 derives and checks them).

A stationary Gaussian source on a periodic grid has a circulant covariance, which the DFT
diagonalises: its Fourier coefficients are independent, coefficient k with variance
S_k = E|F_k|^2 / N, the power spectrum (same convention as :mod:`nic_lib.spectral`, so
mean_k S_k = E[x^2]). The rate-distortion function of such a source is reverse
water-filling over the S_k (Cover & Thomas, Thm. 10.3.3)::

    D_k(theta) = min(theta, S_k)                 R_k(theta) = max(0, 1/2 log2(S_k / theta))
    D(theta) = mean_k D_k                        R(theta) = mean_k R_k   (bits per sample)

One optimal code (the "forward test channel") reconstructs each coefficient as
x_hat_k = beta_k (x_k + n_k), n_k ~ N(0, N_k), with::

    beta_k = max(0, 1 - theta / S_k)            N_k = theta S_k / (S_k - theta)   (S_k > theta)

A learned linear codec trained with additive uniform noise has exactly this form (analysis
gain a, noise 1/12 in the latent, synthesis gain b: beta = a b, N = 1 / (12 a^2)), which is
why it is the model used for a *fixed* code applied to a shifted input with spectrum S'
(:func:`mismatched_code`).

Also here: power-law spectra 1/r^alpha and their fit (:func:`fit_power_law`), Gaussian
sampling with a given spectrum, and two tiny learned codecs (:class:`ToyTransformCodec`,
linear or MLP, CompressAI's ``EntropyBottleneck``) with their training loop, used to check
the closed forms (:func:`toy_codec_experiment`, drawn by :func:`plot_toy_codec_spectra`).
Everything random here is a function of a ``seed`` argument alone: the toy codecs' initial
weights and training noise come from torch generators seeded from it, never from the
global generator's state (which a new process seeds at random). Frequencies are in Nyquist
units (0.5 cycles per pixel = 1) everywhere. It uses torch and CompressAI's entropy models,
and imports nothing of the project.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from compressai.entropy_models import EntropyBottleneck

#: Water-level bisection: 200 halvings of a log-spaced bracket reach float precision.
BISECTION_STEPS = 200

#: Radial range (Nyquist units) of the power-law fit: above 1/64 (periods < 128 px, leaving
#: out the image-sized structure the window smears) and below 0.7, where camera optics,
#: demosaicing and film grain bend natural-image spectra away from a power law.
FIT_RANGE = (1 / 64, 0.7)

#: Power-law spectra are flat below this radius (the DC term of 1/r^alpha is infinite).
DEFAULT_R_MIN = 1 / 64

#: Toy codec: side of the square patches (8x8 = 64 coefficients: trains in seconds).
TOY_PATCH = 8
#: Hidden width of the nonlinear toy codec's MLPs (= the patch dimension: cheap on a shared CPU).
TOY_HIDDEN = 64
#: Training steps and batch: enough for the linear codec's loss to flatten (checked in
#: notebook 04: the last 10 % of steps change the loss by < 1 %).
TOY_STEPS = 1000
TOY_BATCH = 256
#: Adam learning rate: 1e-2, 10x CompressAI's default; tiny models on whitened-scale data converge in ~1000 steps (1e-3 had not converged after 2000).
TOY_LR = 1e-2
#: Seed of the toy codecs' initial weights and training noise (and of their training data).
TOY_SEED = 0
#: Streams of a toy codec's seed: its initial weights and its training noise draw from
#: torch generators seeded with different keys, so the two are not the same numbers.
_INIT_STREAM, _NOISE_STREAM = 1, 2


# --------------------------------------------------------------------------- water-filling


def water_filling(variances: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-component distortion and rate of reverse water-filling at water level theta.

    Args:
        variances: component variances S_k (any shape), >= 0.
        theta: water level, > 0.

    Returns:
        ``(D_k, R_k)`` arrays like ``variances``: D_k = min(theta, S_k),
        R_k = max(0, 1/2 log2(S_k / theta)) bits.
    """
    s = np.asarray(variances, dtype=np.float64)
    if theta <= 0:
        raise ValueError(f"water level theta must be > 0, got {theta}")
    # D_k = min(theta, S_k)
    d = np.minimum(theta, s)
    # R_k = max(0, 1/2 log2(S_k / theta))
    with np.errstate(divide="ignore"):
        r = np.maximum(0.0, 0.5 * np.log2(np.maximum(s, 1e-300) / theta))
    return d, r


def rate_distortion(variances: np.ndarray, theta: float) -> tuple[float, float]:
    """(D, R) per component of a Gaussian vector with component variances S_k, at water level theta.

    Returns:
        ``(mean_k D_k, mean_k R_k)``: distortion (MSE) and bits per component.
    """
    d, r = water_filling(variances, theta)
    return float(d.mean()), float(r.mean())


def water_level(variances: np.ndarray, distortion: float | None = None, rate: float | None = None) -> float:
    """The water level theta at which water-filling gives a distortion, or a rate.

    D(theta) rises and R(theta) falls monotonically, so a bisection on log theta finds it.

    Args:
        variances: component variances S_k.
        distortion: target mean distortion, 0 < D < mean(S).
        rate: target mean rate in bits per component, > 0.

    Returns:
        theta.

    Raises:
        ValueError: unless exactly one target is given, or if it is unreachable.
    """
    s = np.asarray(variances, dtype=np.float64)
    if (distortion is None) == (rate is None):
        raise ValueError("give exactly one of distortion= or rate=")
    if distortion is not None and not 0 < distortion < s.mean():
        raise ValueError(f"distortion must be in (0, mean variance = {s.mean():.4g}), got {distortion}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    lo, hi = math.log(s[s > 0].min()) - 60, math.log(s.max())
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        d, r = rate_distortion(s, math.exp(mid))
        too_low = d < distortion if distortion is not None else r > rate
        lo, hi = (mid, hi) if too_low else (lo, mid)
    return math.exp((lo + hi) / 2)


def gaussian_rate_distortion(variance: float, distortion: float) -> float:
    """R(D) = max(0, 1/2 log2(sigma^2 / D)) of a memoryless (white) Gaussian source, bits/sample."""
    return max(0.0, 0.5 * math.log2(variance / distortion))


# --------------------------------------------------------------------------- stationary sources


def circulant_covariance(spectrum: np.ndarray) -> np.ndarray:
    """The covariance matrix of a stationary periodic 1-D source with power spectrum S.

    C[m, n] = r[(m - n) mod L] with autocorrelation r = IDFT(S) (Wiener-Khinchin); its
    eigenvalues are the S_k and its eigenvectors the DFT basis.

    Args:
        spectrum: S_k in numpy FFT order, length L, symmetric (S_k = S_{L-k}).

    Returns:
        (L, L) float64 covariance.
    """
    s = np.asarray(spectrum, dtype=np.float64)
    # r = IDFT(S): the autocorrelation
    r = np.real(np.fft.ifft(s))
    idx = (np.arange(len(s))[:, None] - np.arange(len(s))[None, :]) % len(s)
    return r[idx]


def sample_stationary_gaussian(spectrum: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of a periodic stationary Gaussian with power spectrum S (1-D or 2-D).

    x = IDFT(sqrt(S) * DFT(w)) for white w ~ N(0, 1): E|DFT(x)_k|^2 / N = S_k.

    Args:
        spectrum: S in numpy FFT order, shape (L,) or (H, W), point-symmetric.
        n: number of samples. rng: numpy generator.

    Returns:
        float64 (n, *spectrum.shape).
    """
    s = np.asarray(spectrum, dtype=np.float64)
    axes = tuple(range(1, s.ndim + 1))
    w = rng.standard_normal((n, *s.shape))
    return np.real(np.fft.ifftn(np.sqrt(s) * np.fft.fftn(w, axes=axes), axes=axes))


def periodogram(samples: np.ndarray) -> np.ndarray:
    """Mean periodogram |DFT(x)|^2 / N over the first axis (no window: the toy data is periodic).

    Args:
        samples: (n, L) or (n, H, W).

    Returns:
        (L,) or (H, W) in numpy FFT order; its mean equals mean(x^2) (Parseval).
    """
    x = np.asarray(samples, dtype=np.float64)
    axes = tuple(range(1, x.ndim))
    size = int(np.prod(x.shape[1:]))
    return (np.abs(np.fft.fftn(x, axes=axes)) ** 2).mean(axis=0) / size


def radial_frequency(shape: tuple[int, ...]) -> np.ndarray:
    """Radial frequency of each DFT bin in numpy FFT order, Nyquist units (1-D or 2-D)."""
    grids = np.meshgrid(*(np.fft.fftfreq(n) for n in shape), indexing="ij")
    return np.sqrt(sum(g**2 for g in grids)) / 0.5


def power_law_spectrum(shape: tuple[int, ...], alpha: float, amplitude: float = 1.0,
                       r_min: float = DEFAULT_R_MIN) -> np.ndarray:
    """S(r) = A / max(r, r_min)^alpha on a DFT grid (numpy FFT order; fftshift to centre).

    Args:
        shape: (L,) or (H, W).
        alpha: exponent (natural images: ~2 for the 2-D spectrum).
        amplitude: A, the power at r = 1 (Nyquist).
        r_min: radius below which the spectrum is flat (keeps DC finite).

    Returns:
        float64 array of ``shape``.
    """
    r = radial_frequency(shape)
    # S(r) = A r^-alpha
    return amplitude * np.maximum(r, r_min) ** (-alpha)


def fit_power_law(radius: np.ndarray, power: np.ndarray, fit_range: tuple[float, float] = FIT_RANGE
                  ) -> tuple[float, float]:
    """Least-squares fit of log S = log A - alpha log r to a radial profile.

    Args:
        radius: radial frequencies (Nyquist units), e.g. ``spectral.radial_profile(...)["radius"]``.
        power: mean power at those radii.
        fit_range: (r_lo, r_hi) of the points used; default :data:`FIT_RANGE`.

    Returns:
        ``(alpha, amplitude)``.

    Raises:
        ValueError: with fewer than two usable points in the range.
    """
    r, p = np.asarray(radius, dtype=np.float64), np.asarray(power, dtype=np.float64)
    keep = (r >= fit_range[0]) & (r <= fit_range[1]) & (p > 0) & np.isfinite(p)
    if keep.sum() < 2:
        raise ValueError(f"fewer than 2 points with positive power in {fit_range}; use more radial bins or a wider range")
    # log S = log A - alpha log r
    slope, intercept = np.polyfit(np.log(r[keep]), np.log(p[keep]), 1)
    return float(-slope), float(math.exp(intercept))


# --------------------------------------------------------------------------- codes under shift


def forward_test_channel(design: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Gain beta_k and noise variance N_k of the optimal code for spectrum S at water level theta.

    x_hat_k = beta_k (x_k + n_k): beta_k = max(0, 1 - theta / S_k) and
    N_k = theta S_k / (S_k - theta) where S_k > theta (0 where the coefficient is dropped).
    On its own source it gives E(x_k - x_hat_k)^2 = (1-beta)^2 S + beta^2 N = theta.

    Returns:
        ``(beta, noise)`` arrays like ``design``.
    """
    s = np.asarray(design, dtype=np.float64)
    kept = s > theta
    beta = np.where(kept, 1.0 - theta / np.where(kept, s, 1.0), 0.0)
    noise = np.where(kept, theta * s / np.where(kept, s - theta, 1.0), 0.0)
    return beta, noise


def mismatched_code(design: np.ndarray, theta: float, clean: np.ndarray | None = None,
                    gain: np.ndarray | float = 1.0, shift: np.ndarray | float = 0.0) -> dict[str, np.ndarray]:
    """A code fitted to spectrum S (water level theta) applied to x' = g x + s, per frequency.

    The input x' has spectrum S' = g^2 S_x + S_s (clean spectrum S_x, gain g, independent
    shift s of spectrum S_s): contrast is g < 1, fog a low-frequency S_s, noise a flat S_s.
    With x_hat = beta (x' + n) (:func:`forward_test_channel`)::

        D_input = E|x' - x_hat|^2 = (1 - beta)^2 S' + beta^2 N
        D_clean = E|x - x_hat|^2  = (1 - beta g)^2 S_x + beta^2 (S_s + N)
        R_adapted = 1/2 log2((S' + N) / N)                           (entropy model refitted)
        R_fixed   = 1/2 log2((S + N) / N) + ((S' + N)/(S + N) - 1) / (2 ln 2)   (model fitted to S)

    R_fixed - R_adapted is the KL divergence of the latent's true density from the model's.

    Args:
        design: S, the spectrum the code was fitted to.
        theta: its water level.
        clean: S_x, the clean input's spectrum; None -> ``design``.
        gain: g per frequency (or a scalar).
        shift: S_s per frequency (or a scalar: white noise of that variance).

    Returns:
        dict of arrays like ``design``: ``input`` (S'), ``beta``, ``noise`` (N), ``kept``
        (beta > 0), ``distortion_input``, ``distortion_clean``, ``amplified`` (D_input > S':
        the code's output is further from its input than zero would be), ``rate_adapted``,
        ``rate_fixed`` (bits, 0 where dropped).
    """
    s = np.asarray(design, dtype=np.float64)
    sx = s if clean is None else np.asarray(clean, dtype=np.float64)
    g = np.broadcast_to(np.asarray(gain, dtype=np.float64), s.shape)
    ss = np.broadcast_to(np.asarray(shift, dtype=np.float64), s.shape)
    beta, noise = forward_test_channel(s, theta)
    kept = beta > 0
    # S' = g^2 S_x + S_s
    s_in = g**2 * sx + ss
    # D_input = (1 - beta)^2 S' + beta^2 N
    d_input = (1 - beta) ** 2 * s_in + beta**2 * noise
    # D_clean = (1 - beta g)^2 S_x + beta^2 (S_s + N)
    d_clean = (1 - beta * g) ** 2 * sx + beta**2 * (ss + noise)
    safe_n = np.where(kept, noise, 1.0)
    # R_adapted = 1/2 log2((S' + N) / N);  R_fixed adds the KL term ((S'+N)/(S+N) - 1 - ln((S'+N)/(S+N))) / (2 ln 2)
    r_adapted = np.where(kept, 0.5 * np.log2((s_in + safe_n) / safe_n), 0.0)
    ratio = (s_in + safe_n) / (s + safe_n)
    r_fixed = np.where(kept, 0.5 * np.log2((s + safe_n) / safe_n) + (ratio - 1) / (2 * math.log(2)), 0.0)
    return {"input": s_in, "beta": beta, "noise": noise, "kept": kept, "distortion_input": d_input,
            "distortion_clean": d_clean, "amplified": d_input > s_in, "rate_adapted": r_adapted, "rate_fixed": r_fixed}


# --------------------------------------------------------------------------- toy learned codecs


class ToyTransformCodec(torch.nn.Module):
    """A tiny learned transform codec for flattened patches (Ballé et al. 2017 in miniature).

    ::

        x (B, P*P) --g_a--> y --(+U(-1/2,1/2) train | round eval)--> y_hat --g_s--> x_hat
                                  EntropyBottleneck(P*P) -> likelihoods -> bits

    ``g_a``/``g_s`` are one linear layer each (``hidden=None``: a linear transform code, the
    case the closed forms describe) or two-layer MLPs with GELU (a small nonlinear code).
    The initial weights are a function of ``seed`` alone (torch's global generator is
    forked, seeded and restored around the construction).
    """

    def __init__(self, dim: int, hidden: int | None = None, seed: int = TOY_SEED):
        """Args: dim: input dimension (P*P). hidden: MLP width, None for linear transforms.
        seed: seeds the initial weights (of the transforms and of the entropy model)."""
        super().__init__()
        nn = torch.nn

        def mlp():
            return nn.Linear(dim, dim) if hidden is None else nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

        # nn.Linear and EntropyBottleneck draw their initial weights from torch's global
        # generator, which a new process seeds at random: without a seed of its own the
        # codec started from other weights in every run (issue 33: theta_eff moved 0.7%).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_stream_seed(seed, _INIT_STREAM))
            self.g_a, self.g_s = mlp(), mlp()
            self.entropy_bottleneck = EntropyBottleneck(dim)

    def forward(self, x):
        """Returns ``{"x_hat", "bits"}`` with bits per sample (B,) from the likelihoods."""
        y_hat, likelihoods = self.entropy_bottleneck(self.g_a(x))
        return {"x_hat": self.g_s(y_hat), "bits": -torch.log2(likelihoods).sum(dim=1)}


def train_toy_codec(codec: ToyTransformCodec, spectrum: np.ndarray, lmbda: float, steps: int = TOY_STEPS,
                    batch: int = TOY_BATCH, lr: float = TOY_LR, seed: int = TOY_SEED) -> list[float]:
    """Train a toy codec on fresh Gaussian samples with ``spectrum``: L = R + lambda * D per component.

    R is bits per component and D the MSE per component, so at the optimum
    dD/dR = -1/lambda and the water level is theta = 1 / (2 ln 2 lambda) (from
    D_k = theta, R_k = 1/2 log2(S_k / theta): dD_k/dR_k = -2 ln 2 theta). The entropy
    bottleneck's auxiliary (quantile) loss is added, as CompressAI trains it.

    Args:
        codec: the model. spectrum: (P, P) power spectrum of the training source.
        lmbda: rate-distortion trade-off. steps, batch, lr: optimisation.
        seed: seeds the sampler of the training data and the uniform noise standing in for
            rounding. Together with the codec's own seed it fixes the result: torch's
            global generator is forked, seeded and restored around the loop.

    Returns:
        The loss per step.
    """
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(codec.parameters(), lr=lr)
    dim = int(np.prod(spectrum.shape))
    codec.train()
    losses = []
    # the entropy bottleneck draws its noise from the global generator: seed a fork of it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_stream_seed(seed, _NOISE_STREAM))
        for _ in range(steps):
            x = torch.from_numpy(sample_stationary_gaussian(spectrum, batch, rng).reshape(batch, dim)).float()
            out = codec(x)
            # L = R/dim + lambda * MSE  (+ aux loss for the entropy model's quantiles)
            loss = out["bits"].mean() / dim + lmbda * ((out["x_hat"] - x) ** 2).mean()
            opt.zero_grad()
            (loss + codec.entropy_bottleneck.loss()).backward()
            opt.step()
            losses.append(loss.item())
    codec.eval()
    return losses


def _stream_seed(seed: int, stream: int) -> int:
    """A torch seed for one use (``stream``) of ``seed``: independent of the other streams."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def run_toy_codec(codec: ToyTransformCodec, samples: np.ndarray, quantize: str = "round"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Code samples with a toy codec.

    Args:
        codec: a trained :class:`ToyTransformCodec`.
        samples: (n, P, P) inputs.
        quantize: ``"round"`` (test time: rounded latents, eval mode) or ``"noise"``
            (the training proxy: additive uniform noise).

    Returns:
        ``(x_hat (n, P, P), bits per sample (n,))``.
    """
    if quantize not in ("round", "noise"):
        raise ValueError(f"quantize must be 'round' or 'noise', got {quantize!r}")
    codec.train(quantize == "noise")
    with torch.no_grad():
        x = torch.from_numpy(samples.reshape(len(samples), -1)).float()
        out = codec(x)
    codec.eval()
    return out["x_hat"].numpy().reshape(samples.shape).astype(np.float64), out["bits"].numpy().astype(np.float64)


# --------------------------------------------------------------------------- toy codecs vs theory


#: Columns of the per-frequency table of :func:`toy_codec_experiment` (one row per codec,
#: input and DFT bin), from which :func:`plot_toy_codec_spectra` draws.
TOY_SPECTRA_COLUMNS = ("codec", "input", "radius", "D vs input (measured)", "D vs input (theory)",
                       "input spectrum (theory)", "theta_eff")


def toy_codec_experiment(spectrum: np.ndarray, lmbda: float, clean: np.ndarray,
                         inputs: dict[str, tuple[np.ndarray, np.ndarray | float, np.ndarray | float]],
                         codecs: dict[str, int | None], steps: int = TOY_STEPS, seed: int = TOY_SEED
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train toy codecs on a Gaussian source and set what they do to shifted inputs against the theory.

    For each codec: build it and train it (:func:`train_toy_codec`, both seeded by ``seed``),
    code the clean test samples, and find its *effective water level* theta_eff, the theta
    whose matched distortion D(theta) (:func:`rate_distortion`) is the MSE it measured.
    Then code every input and predict it with :func:`mismatched_code` at that codec's own
    theta_eff: every prediction belongs to one codec, so a figure cannot draw one codec's
    theory beside another's measurement.

    Args:
        spectrum: (P, P) power spectrum S of the training source.
        lmbda: the rate-distortion trade-off of training (theory: theta = 1 / (2 ln2 lambda)).
        clean: (n, P, P) clean test samples of the source; the "D vs clean" reference.
        inputs: input name -> ``(x', gain, shift)``: the samples coded, (n, P, P), derived
            from ``clean`` (x' = g x + s), and their gain g and shift spectrum S_s as
            :func:`mismatched_code` takes them. The clean input is ``(clean, 1.0, 0.0)``.
        codecs: codec name -> MLP width, ``None`` for a linear transform code.
        steps: training steps of each codec.
        seed: seeds each codec's initial weights, its training data and its training noise.

    Returns:
        ``(summary, spectra)``. ``summary``: one row per codec and input: measured and
        predicted distortion against the input and the clean samples, measured rate and
        the fixed-model rate of the theory (bits per component), theta_eff, the theta
        lambda predicts and the relative loss change over the last 10% of the steps.
        ``spectra``: one row per codec, input and DFT bin (:data:`TOY_SPECTRA_COLUMNS`):
        the measured and predicted error power against the input and the input's spectrum S'.

    Raises:
        ValueError: if ``codecs`` or ``inputs`` is empty.
    """
    if not codecs or not inputs:
        raise ValueError("toy_codec_experiment needs at least one codec and one input")
    s = np.asarray(spectrum, dtype=np.float64)
    theta_lmbda = 1 / (2 * math.log(2) * lmbda)
    radius = radial_frequency(s.shape).ravel()
    rows, spectra = [], []
    for kind, hidden in codecs.items():
        codec = ToyTransformCodec(s.size, hidden, seed=seed)
        losses = train_toy_codec(codec, s, lmbda, steps=steps, seed=seed)
        tenth = max(len(losses) // 10, 1)
        loss_change = np.mean(losses[-tenth:]) / np.mean(losses[-2 * tenth:-tenth]) - 1
        x_hat, _ = run_toy_codec(codec, clean)
        # theta_eff: D(theta_eff) = the measured MSE (capped below mean S, where theta is finite)
        theta_eff = water_level(s, distortion=min(periodogram(x_hat - clean).mean(), 0.999 * s.mean()))
        for name, (x_in, gain, shift) in inputs.items():
            x_hat, bits = run_toy_codec(codec, x_in)
            pred = mismatched_code(s, theta_eff, gain=gain, shift=shift)
            rows.append({"codec": kind, "input": name, "steps": steps,
                         "D vs input (measured)": np.mean((x_hat - x_in) ** 2), "D vs input (theory)": pred["distortion_input"].mean(),
                         "D vs clean (measured)": np.mean((x_hat - clean) ** 2), "D vs clean (theory)": pred["distortion_clean"].mean(),
                         "R bits/comp (measured)": bits.mean() / s.size, "R fixed (theory)": pred["rate_fixed"].mean(),
                         "theta_eff": theta_eff, "theta from lambda": theta_lmbda, "loss change, last 10%": loss_change})
            spectra.append(pd.DataFrame({"codec": kind, "input": name, "radius": radius,
                                         "D vs input (measured)": periodogram(x_hat - x_in).ravel(),
                                         "D vs input (theory)": pred["distortion_input"].ravel(),
                                         "input spectrum (theory)": pred["input"].ravel(), "theta_eff": theta_eff}))
    return pd.DataFrame(rows), pd.concat(spectra, ignore_index=True)[list(TOY_SPECTRA_COLUMNS)]


#: Marker of each toy codec's measurements in :func:`plot_toy_codec_spectra` (others: "D").
TOY_MARKERS = {"linear": "o", "MLP": "s"}


def plot_toy_codec_spectra(spectra: pd.DataFrame, theory_of: str = "linear", figsize: tuple[float, float] = (13, 3.8)):
    """Error spectra of the toy codecs against the theory, one panel per input.

    Each codec's measured error power per DFT bin (markers, one colour per codec), the
    prediction of :func:`mismatched_code` at the effective water level of the codec
    ``theory_of`` (black dashes, labelled with that codec and its theta_eff) and the
    input's spectrum S' (grey crosses).

    Args:
        spectra: the per-frequency table of :func:`toy_codec_experiment`.
        theory_of: the codec whose prediction is drawn.
        figsize: matplotlib figure size (inches).

    Returns:
        The matplotlib Figure (saving is the caller's: :func:`nic_lib.plotting.save_figure`).

    Raises:
        ValueError: if ``theory_of`` is not a codec of ``spectra``.
    """
    import matplotlib.pyplot as plt

    codecs = list(dict.fromkeys(spectra["codec"]))
    if theory_of not in codecs:
        raise ValueError(f"no codec {theory_of!r} in the table (it has {', '.join(map(str, codecs))}); "
                         "pass theory_of= one of those")
    inputs = list(dict.fromkeys(spectra["input"]))
    fig, axes = plt.subplots(1, len(inputs), figsize=figsize, sharey=True, squeeze=False)
    for ax, name in zip(axes[0], inputs):
        panel = spectra[spectra["input"] == name]
        for i, kind in enumerate(codecs):
            rows = panel[panel["codec"] == kind]
            ax.semilogy(rows["radius"], rows["D vs input (measured)"], TOY_MARKERS.get(kind, "D"), c=f"C{i}", ms=4,
                        alpha=0.6, label=f"{kind}: measured D vs input")
        ref = panel[panel["codec"] == theory_of]
        ax.semilogy(ref["radius"], ref["D vs input (theory)"], "k_", ms=12, mew=2,
                    label=f"theory ({theory_of} code, θ_eff = {ref['theta_eff'].iloc[0]:.3f})")
        ax.semilogy(ref["radius"], ref["input spectrum (theory)"], "x", c="grey", label="input spectrum")
        ax.set(title=name, xlabel="radial frequency / Nyquist")
    axes[0, 0].set_ylabel("power per frequency")
    axes[0, 0].legend(fontsize=7)
    return fig
