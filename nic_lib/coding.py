"""The learned codecs' one path from image to bits and back: image <-> tensor, padding,
code / decode, and the rate, with one convention for each.

::

    uint8 (H, W, 3) ──to_tensor, pad_to (replicate, to the model's factor)──► x (1, 3, H', W')
        │ model.compress                                    model.forward (estimate only)
        ▼                                                     │
    strings, shape ──► bpp = payload_bits / (H·W)             ▼
        │ model.decompress                         bpp_est = Σ −log2 p / (H·W)
        ▼
    x_hat ──crop to H x W, round(255 · clamp(x_hat, 0, 1))──► uint8 (H, W, 3)

A model of :mod:`nic_lib.models` takes (1, 3, H', W') float in [0, 1] whose sides are
multiples of its ``downsampling_factor`` (2^6 = 64 for the hyperprior family: four
stride-2 layers in g_a, two in h_a). The convention here, CompressAI's evaluation's:

- x = uint8 / 255 (:func:`to_tensor`), no other scaling;
- pad on the bottom and the right only, to the next multiple of **the model's**
  ``downsampling_factor`` (:func:`downsampling_factor`), by repeating the last row and
  column ("replicate"; :func:`pad_to`, :func:`pad_image`, :func:`model_input`): the
  padded pixels are coded, the metrics use the original crop;
- back to pixels: keep the top-left H x W, v8 = round(255 · clamp(x, 0, 1))
  (:func:`from_tensor`, :func:`crop_to_image`, :func:`crop_to_images`).

The rate, one definition (H x W is the unpadded image):

- ``bpp`` = :func:`payload_bits` / (H·W): 8 x the bytes of every latent string that
  ``compress`` returns, the rANS payload (CompressAI's convention). The ``.nic`` file of
  :mod:`nic_lib.container` holds exactly these strings plus a header of a few dozen bytes
  (its ``NicHeader.bpp`` counts the whole file: payload + header).
- ``bpp_est`` = Σ −log2 p(ŷ) / (H·W) over every latent the coder writes
  (:func:`likelihood_bits`): the raster context models' likelihoods given the coder's own
  latents (``coded_likelihoods``), every other model's eval-mode ``forward``
  (:func:`estimated_likelihoods`). Real ≥ estimated, close to it: the trained cpu-profile
  hyperprior models are 0.3-1.1% apart on whole Kodak images, more on small crops (the
  coder's fixed costs: up to ~9% on 128-px crops).
- The fast path (:func:`forward_code`, :func:`forward_images`) runs ``forward`` alone and
  reports its likelihoods and reconstruction without any entropy coding. That number
  stands in for ``bpp`` only where :func:`check_estimate` found it within a tolerance
  (:data:`ESTIMATE_RTOL`) of real bits on a subset: it raises
  :class:`RateEstimateError` (or warns) with both numbers otherwise. The context models'
  ``forward`` rounds differently from their coder (:mod:`nic_lib.models.google` notes up
  to ~20%), so the check is what keeps such a number out of a table.

Callers: :mod:`nic_lib.container` (the ``.nic`` file: :func:`encode`,
:func:`crop_to_image`), :mod:`nic_lib.neural` (RD sweeps: :func:`code_image`),
:mod:`nic_lib.bench` (the OOD grid: :func:`encode`, :func:`decode`, :func:`forward_code`;
its estimate is checked by its own per-setting table, ``bench.check_likelihood_rate``,
at the same 2%), :mod:`nic_lib.spectral` (``nic_codec``: :func:`forward_images` checked
with :func:`check_estimate`), :mod:`nic_lib.models.calibration` (:func:`model_input`).

PQ-MIM (:mod:`nic_lib.models.pqmim`) takes the same path: its ``compress`` returns its own
estimate (Σ −log2 P over the MIM steps, the symbols it wrote), which :func:`encode` reports
as ``bits_est``; its decoder returns the codes it read, which :func:`decode` and
:func:`code_image` check against the encoder's (:class:`DecodeMismatchError`). Its forward
pass has no likelihoods, so the fast path is not for it. The extra rate columns of its
notebook (independent prior, fixed length, hybrid steps) are ``pqmim.code_image``'s.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from compressai.models.google import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior
from torch import nn

from nic_lib.codecs import check_image
from nic_lib.errors import NicReproError

__all__ = [
    "CROP_BAND_ROWS",
    "DEFAULT_DOWNSAMPLING_FACTOR",
    "DecodeMismatchError",
    "ESTIMATE_RTOL",
    "FORWARD_IS_CODER",
    "RateEstimateError",
    "RateEstimateWarning",
    "check_estimate",
    "code_image",
    "crop_to_image",
    "crop_to_images",
    "decode",
    "downsampling_factor",
    "encode",
    "estimated_likelihoods",
    "forward_code",
    "forward_images",
    "from_tensor",
    "likelihood_bits",
    "model_device",
    "model_input",
    "pad_image",
    "pad_to",
    "padding",
    "payload_bits",
    "to_tensor",
]

#: Factor assumed for a model that does not state its ``downsampling_factor``: the
#: hyperprior family's 2^6 (the largest stride of the models here).
DEFAULT_DOWNSAMPLING_FACTOR = 64
#: Rows of a decoded image converted to uint8 at a time by :func:`crop_to_image`.
CROP_BAND_ROWS = 256
#: Largest |bpp_est − bpp| / bpp with which a ``forward`` estimate may stand in for real
#: bits (:func:`check_estimate`): 2%, the bound the OOD grid has used since it was built;
#: the hyperprior models on whole Kodak images are within ~1%.
ESTIMATE_RTOL = 0.02
#: Models whose eval-mode forward quantizes exactly as their coder (no context model).
FORWARD_IS_CODER = (FactorizedPrior, ScaleHyperprior, MeanScaleHyperprior)


class RateEstimateError(NicReproError, RuntimeError):
    """A likelihood estimate differs from the real bitstream by more than its tolerance
    (the fix: code for real, :func:`code_image`)."""


class DecodeMismatchError(NicReproError, RuntimeError):
    """A decoder read other symbols than its encoder wrote (PQ-MIM: other codes), so its
    image is not the one the rate was measured for."""


class RateEstimateWarning(UserWarning):
    """:func:`check_estimate` with ``action="warn"`` found the estimate off by more than the tolerance."""


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1].

    Raises:
        ValueError: ``img`` is not an (H, W, 3) uint8 array (:func:`nic_lib.codecs.check_image`).
    """
    img = check_image(img)
    # x = v8 / 255; a copy: inputs may be read-only
    return torch.tensor(img).permute(2, 0, 1)[None].float().div(255)


def from_tensor(x: torch.Tensor) -> np.ndarray:
    """float (1, 3, H, W) in [0, 1] -> uint8 (H, W, 3), rounded to nearest.

    For a decoder's output of any size, possibly NaN, use :func:`crop_to_image`.
    """
    # v8 = round(255 * clamp(x, 0, 1))
    return x.clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).cpu().numpy()


def padding(height: int, width: int, factor: int) -> tuple[int, int]:
    """Rows below and columns right of an image that make its sides multiples of ``factor``.

    Returns:
        ``(pad_bottom, pad_right)``, each in 0..factor-1.
    """
    # pad = (-side) mod factor: the distance to the next multiple
    return (-height) % factor, (-width) % factor


def pad_to(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Pad (N, C, H, W) on the bottom/right to multiples of ``factor`` (edge replication)."""
    ph, pw = padding(*x.shape[-2:], factor)
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def pad_image(img: np.ndarray, factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Turn a uint8 image into a model's padded input, and say how much was added.

    Args:
        img: (H, W, 3) uint8 RGB.
        factor: pad H and W up to multiples of this (``model.downsampling_factor``).

    Returns:
        ``(x, (pad_bottom, pad_right))``: x is (1, 3, H + pad_bottom, W + pad_right)
        float32 in [0, 1], padded by repeating the last row and column.

    Raises:
        ValueError: ``img`` is not (H, W, 3) uint8.
    """
    x = to_tensor(img)
    return pad_to(x, factor), padding(*x.shape[-2:], factor)


def crop_to_image(x_hat: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Turn a model's (1, 3, H', W') output into the uint8 image it stands for.

    Converts in bands of :data:`CROP_BAND_ROWS` rows, so the temporaries stay small for
    the largest images a ``.nic`` file may hold.

    Args:
        x_hat: decoder output in [0, 1] (NaN, which only garbage streams produce, -> 0).
        height, width: the unpadded size; the top-left corner is kept.

    Returns:
        (height, width, 3) uint8 RGB, rounded from x_hat * 255.
    """
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, CROP_BAND_ROWS):
        bottom = min(top + CROP_BAND_ROWS, height)
        x = torch.nan_to_num(x_hat[0, :, top:bottom, :width].detach().float().cpu(), nan=0.0)
        # v8 = round(255 * clamp(x, 0, 1))
        out[top:bottom] = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return out


def downsampling_factor(model: nn.Module) -> int:
    """What a model's input sides must be multiples of (:data:`DEFAULT_DOWNSAMPLING_FACTOR`
    for a model that does not say)."""
    return int(getattr(model, "downsampling_factor", DEFAULT_DOWNSAMPLING_FACTOR))


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def model_input(model: nn.Module, img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H', W') on the model's device, padded to its factor."""
    return pad_to(to_tensor(img).to(model_device(model)), downsampling_factor(model))


def crop_to_images(x_hat: torch.Tensor, height: int, width: int) -> np.ndarray:
    """A batch of model outputs (B, 3, H', W') -> uint8 (B, height, width, 3), top-left kept.

    The batch form of :func:`crop_to_image` (one rounding rule: v8 = round(255 · clamp(x, 0, 1))).
    """
    x = x_hat[..., :height, :width].detach().float()
    # v8 = round(255 * clamp(x, 0, 1))
    return np.ascontiguousarray(x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())


# --------------------------------------------------------------------------- the rate


def payload_bits(strings: Sequence[Sequence[bytes]]) -> int:
    """Bits of a ``compress`` result's ``strings``: 8 x the bytes of every latent's strings.

    The numerator of ``bpp`` (the rANS payload; no container header).
    """
    # bits = 8 * sum over latents, over images of len(string)
    return 8 * sum(len(s) for streams in strings for s in streams)


def likelihood_bits(likelihoods: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Σ −log2 p over every latent of each image: (B,) bits, the numerator of ``bpp_est``."""
    # bits_b = Σ_latents −log2 p(ŷ_b)
    return sum(-torch.log2(v).flatten(1).sum(1) for v in likelihoods.values())


def estimated_likelihoods(model: nn.Module, x: torch.Tensor,
                          coded: dict | None = None) -> tuple[dict, dict | None]:
    """The likelihoods behind ``bpp_est``: those of the symbols the coder writes.

    The raster context models' given the coder's latents (``coded_likelihoods``, from
    ``coded`` or a fresh ``compress``); every other model's ``forward``.

    Returns:
        ``(likelihoods, out)``: out is ``forward``'s output (None when forward did not run).
    """
    if hasattr(model, "coded_likelihoods"):
        if coded is None or "y_hat" not in coded:
            coded = model.compress(x, return_y_hat=True)
        return model.coded_likelihoods(x, coded["y_hat"]), None
    out = model(x)
    return out["likelihoods"], out


def check_estimate(bits: float, bits_est: float, rtol: float = ESTIMATE_RTOL,
                   what: str = "estimate", action: str = "raise") -> float:
    """Check an estimated rate against the real bits of the same images.

    Args:
        bits: real payload bits (:func:`payload_bits`), summed over the checked images.
        bits_est: the estimate of the same images (:func:`likelihood_bits`), summed.
        rtol: largest accepted |bits_est − bits| / bits.
        what: names the codec and images in the message.
        action: ``"raise"`` (:class:`RateEstimateError`) or ``"warn"``
            (:class:`RateEstimateWarning`) when the check fails.

    Returns:
        The relative difference |bits_est − bits| / bits.

    Raises:
        RateEstimateError: the difference exceeds ``rtol`` and ``action="raise"``.
        ValueError: ``action`` is neither.
    """
    if action not in ("raise", "warn"):
        raise ValueError(f"action must be 'raise' or 'warn', got {action!r}")
    # relative difference = |estimate - real| / real
    rel = abs(bits_est - bits) / bits if bits > 0 else float("inf")
    if rel > rtol:
        message = (f"{what}: the likelihood estimate is {bits_est:.0f} bits, the real bitstream "
                   f"{bits:.0f} bits ({rel:.2%} apart, tolerance {rtol:.0%}); use the real coder "
                   "(nic_lib.coding.code_image) for this model, or raise the tolerance knowingly")
        if action == "raise":
            raise RateEstimateError(message)
        warnings.warn(message, RateEstimateWarning, stacklevel=2)
    return rel


# --------------------------------------------------------------------------- code / decode


def encode(model: nn.Module, img: np.ndarray, estimate: bool = True, **options) -> dict:
    """Compress one uint8 image with a model: the real bits, and the estimate beside them.

    Args:
        model: a model in eval mode with coder tables built (``get_model`` gives one).
        img: uint8 (H, W, 3).
        estimate: also compute ``bits_est`` (one ``forward``, or the context models'
            ``coded_likelihoods``; a coder whose ``compress`` returns its own ``bits_est``,
            PQ-MIM's Σ −log2 P of the symbols it wrote, gives that).
        **options: passed to ``model.compress`` (PQ-MIM: ``steps``, ``transmit_steps``,
            ``radius``).

    Returns:
        ``{"strings", "shape"`` (``compress``'s), ``"bits"`` (:func:`payload_bits`),
        ``"bpp"``, ``"bits_est"``, ``"bpp_est"`` (NaN without ``estimate``),
        ``"encode_s"``, ``"x"`` (the padded input), ``"y_hat"`` (the raster context
        models' coded latents, else None), ``"forward"`` (``forward``'s output where it
        ran, else None), ``"coded"`` (all of ``compress``'s output: PQ-MIM's codes)}``.
    """
    h, w = img.shape[:2]
    x = model_input(model, img)
    # the raster context models can hand back the encoder's own latents, which their
    # decoder reproduces bit for bit (tests/test_wavefront.py)
    gives_y_hat = "return_y_hat" in inspect.signature(model.compress).parameters
    with torch.no_grad():
        t0 = time.perf_counter()
        coded = (model.compress(x, return_y_hat=True, **options) if gives_y_hat
                 else model.compress(x, **options))
        encode_s = time.perf_counter() - t0
        bits_est, out = float("nan"), None
        if estimate and "bits_est" in coded:  # the coder's own estimate of what it wrote
            bits_est = float(coded["bits_est"])
        elif estimate:
            likelihoods, out = estimated_likelihoods(model, x, coded)
            # bits_est = Σ over latent tensors of Σ −log2 p (summed per tensor, in float)
            bits_est = sum(float(-torch.log2(v).sum()) for v in likelihoods.values())
    bits = payload_bits(coded["strings"])
    return {"strings": coded["strings"], "shape": coded["shape"], "bits": bits,
            "bpp": bits / (h * w), "bits_est": bits_est, "bpp_est": bits_est / (h * w),
            "encode_s": encode_s, "x": x, "y_hat": coded.get("y_hat"), "forward": out,
            "coded": coded}


def decode(model: nn.Module, strings, shape, height: int, width: int,
           expected_codes: torch.Tensor | None = None, **options) -> np.ndarray:
    """Decompress ``compress``'s strings and shape to the uint8 (height, width, 3) image.

    Args:
        model, strings, shape: the model and what its ``compress`` returned.
        height, width: the unpadded size.
        expected_codes: the symbols the encoder wrote (:func:`encode`'s
            ``coded["codes"]``, PQ-MIM's, every step transmitted): checked against those
            the decoder read.
        **options: passed to ``model.decompress`` (PQ-MIM: ``temperature``, ``seed``).

    Raises:
        DecodeMismatchError: the decoder read other codes than ``expected_codes``.
    """
    return crop_to_image(_decompress(model, strings, shape, expected_codes, **options), height, width)


def _decompress(model: nn.Module, strings, shape, expected_codes: torch.Tensor | None = None,
                **options) -> torch.Tensor:
    """``model.decompress(strings, shape)["x_hat"]``, its codes checked where it returns them."""
    with torch.no_grad():
        out = model.decompress(strings, shape, **options)
    read = out.get("codes")
    if expected_codes is not None and read is not None and not torch.equal(read.cpu(), expected_codes.cpu()):
        wrong = int((read.cpu() != expected_codes.cpu()).sum())
        raise DecodeMismatchError(
            f"{type(model).__name__}: the decoder read {wrong} of {read.numel()} codes other than the "
            "encoder wrote, so encoder and decoder computed different probabilities; encode and decode "
            "on one device with one thread count (tests/test_device.py states the property), and report "
            "the image if they already do")
    return out["x_hat"]


def code_image(model: nn.Module, img: np.ndarray, decode: bool = True) -> dict:
    """Compress one image with a model (and decode it), measuring everything.

    Args:
        model: a model in eval mode with coder tables built (``get_model`` gives one).
        img: uint8 (H, W, 3).
        decode: run the real decoder (default). False skips it where the decoder's
            output is known without it: the raster context models return the encoder's
            latents (``compress(x, return_y_hat=True)``, which their decoder reproduces
            bit for bit) and ``g_s`` of those is the reconstruction; the models in
            :data:`FORWARD_IS_CODER` quantize in forward exactly as their coder does.
            PQ-MIM's reconstruction is ``g_s`` of the codes it wrote (what its decoder
            returns from the same codes, which it checks wherever it runs).
            Any other model (e.g. the checkerboard, whose forward pass rounds
            differently from its two-pass coder) is decoded anyway. Not the eval-mode
            forward of the raster models: it rounds ``y`` without the serially predicted
            mean, while the coder rounds ``y − μ``.

    Returns:
        ``{"bytes", "bpp", "bpp_est", "x_hat" (uint8 image), "encode_s", "decode_s"
        (NaN when not decoded), "strings", "shape"}``: ``bpp`` and ``bpp_est`` as this
        module's docstring defines them.

    Raises:
        DecodeMismatchError: PQ-MIM's decoder read other codes than its encoder wrote.
    """
    h, w = img.shape[:2]
    enc = encode(model, img)
    codes = enc["coded"].get("codes")  # PQ-MIM's, all transmitted (no options here)
    decode_s = float("nan")
    with torch.no_grad():
        if not decode and enc["y_hat"] is not None:
            x_hat = model.synthesize(enc["y_hat"])  # what decompress returns, bit for bit
        elif not decode and isinstance(model, FORWARD_IS_CODER):
            x_hat = enc["forward"]["x_hat"]
        elif not decode and codes is not None and hasattr(model, "decode_codes_to_image"):
            x_hat = model.decode_codes_to_image(codes[None])  # g_s of the codes the decoder reads
        else:
            t0 = time.perf_counter()
            x_hat = _decompress(model, enc["strings"], enc["shape"], codes)
            decode_s = time.perf_counter() - t0
    return {"bytes": enc["bits"] // 8, "bpp": enc["bpp"], "bpp_est": enc["bpp_est"],
            "x_hat": crop_to_image(x_hat, h, w), "encode_s": enc["encode_s"],
            "decode_s": decode_s, "strings": enc["strings"], "shape": enc["shape"]}


# --------------------------------------------------------------------------- estimate only


def forward_code(model: nn.Module, x: torch.Tensor, height: int, width: int,
                 latents: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The fast path: one eval-mode ``forward`` in place of the coder.

    Args:
        model: a model in eval mode.
        x: (B, 3, H', W') padded input (:func:`model_input`, :func:`pad_to`).
        height, width: the unpadded size.
        latents: ``model.g_a(x)`` when already computed (one analysis for several rate
            levels of a variable-rate model): the model runs ``forward_latents`` on it.

    Returns:
        ``(x_hat uint8 (B, height, width, 3), bits_est (B,) float64)``: forward's
        reconstruction and :func:`likelihood_bits` of its likelihoods. An estimate:
        use it for a rate only after :func:`check_estimate`.
    """
    with torch.no_grad():
        out = model(x) if latents is None else model.forward_latents(latents)
        bits = likelihood_bits(out["likelihoods"])
    return crop_to_images(out["x_hat"], height, width), bits.double().cpu().numpy()


def forward_images(model: nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`forward_code` of a uint8 batch (B, H, W, 3), padded by this module's rule.

    Returns:
        ``(x_hat uint8 (B, H, W, 3), bpp_est (B,))``, bits over the H·W unpadded pixels.

    Raises:
        ValueError: ``images`` is not a uint8 (B, H, W, 3) batch.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected a uint8 batch (B, H, W, 3), got {images.dtype} {images.shape}; "
                         "stack images with np.stack")
    _, h, w, _ = images.shape
    # x = v8 / 255, a copy (inputs may be read-only), padded by replication
    x = torch.tensor(images, device=model_device(model)).permute(0, 3, 1, 2).float().div(255)
    x_hat, bits = forward_code(model, pad_to(x, downsampling_factor(model)), h, w)
    # bpp = bits / (H · W) of the unpadded image
    return x_hat, bits / (h * w)
