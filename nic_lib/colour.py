r"""Colour shift of a reconstruction: CIELAB differences, hue shift, chroma ratio, colour map.

Issue 31: PQ-MIM's decoded colours shift (kodim23's yellow macaw turns orange). PSNR says
*how much* a reconstruction differs, not *how* its colours moved. :func:`colour_shift`
measures the how, on a pair of 8-bit RGB images:

- the mean error per RGB channel (a constant offset is a bias, e.g. a normalisation
  mean applied on encode and not undone on decode);
- the mean ΔL*, Δa*, Δb* and ΔE*ab in CIELAB (a perceptual space: Δb* < 0 is "less
  yellow", Δa* > 0 "more red");
- on saturated pixels of the original (C* above a threshold): the mean hue shift, signed
  and absolute, and the chroma ratio (below 1: washed-out colours);
- the affine colour map x̂ ≈ A x + t fitted by least squares over the pixels: a channel
  swap is a permutation A (:data:`IDENTITY_ORDER` broken), a wrong normalisation a
  diagonal A ≠ I or an offset t; averaging of hues by a small model (capacity) a shrunk,
  mixing A (desaturation pulls each channel toward the others). Loss of detail alone also
  shrinks A's diagonal, with an offset t that keeps the mean (least squares regresses
  toward the image's mean colour: a 16x16 block average of Kodak has diagonals ~0.75), so
  the colour-specific signs are the channel order and off-diagonals, not diag(A) < 1.

:func:`hue_shift_profile` splits the hue shift and chroma ratio by the original's hue
(pooled over several images): a bug moves every hue alike (a swap, a constant offset),
hue averaging pulls the hues on either side of a common one toward it.

Colour space (written by hand: numpy only, ``skimage.color`` is not a dependency), sRGB
with the D65 white, IEC 61966-2-1 and CIE 15:

.. code-block:: none

    c = v8 / 255;   c_lin = c / 12.92                    if c <= 0.04045
                    c_lin = ((c + 0.055) / 1.055)^2.4    otherwise
    (X, Y, Z) = M · (R_lin, G_lin, B_lin),  M = SRGB_TO_XYZ;  white (Xn, Yn, Zn) = M · (1, 1, 1)
    f(t) = t^(1/3)                       if t > δ³,  δ = 6/29
         = t / (3 δ²) + 4/29             otherwise
    L* = 116 f(Y/Yn) − 16;   a* = 500 (f(X/Xn) − f(Y/Yn));   b* = 200 (f(Y/Yn) − f(Z/Zn))
    C* = √(a*² + b*²);   h = atan2(b*, a*)

The white is M's row sums (0.95047, 1, 1.08883: D65), so (255, 255, 255) has a* = b* = 0
exactly. :func:`lab_to_srgb` inverts every step (tests build hue rotations with it).
"""

from __future__ import annotations

import numpy as np

#: Linear sRGB -> CIE XYZ (D65), IEC 61966-2-1.
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
#: The reference white (Xn, Yn, Zn): the XYZ of linear RGB (1, 1, 1), D65.
WHITE = SRGB_TO_XYZ.sum(axis=1)
#: δ of CIELAB's f: the cube root below δ³ is replaced by a line (CIE 15).
LAB_DELTA = 6.0 / 29.0
#: Saturated pixels: original chroma C* above this. 20 leaves out greys, skin in shadow and
#: the near-neutral backgrounds whose hue angle is noise (C* = 20 is a pastel; the macaw's
#: yellow is ~80), so the hue shift is measured where a viewer sees a hue.
SATURATED_CHROMA = 20.0
#: The channel order of an identity colour map: output channel i comes from input channel i.
IDENTITY_ORDER = (0, 1, 2)


def _as_rgb(img, name: str) -> np.ndarray:
    """An (H, W, 3) image on the 0..255 scale as float64; clear errors otherwise."""
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name} must be an RGB image of shape (H, W, 3), got {a.shape}; load "
                         "images with nic_lib.data.load_image and decode with nic_lib.coding")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{name} must hold numbers (uint8 or float on the 0..255 scale), "
                        f"got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.size == 0:
        raise ValueError(f"{name} is empty ({a.shape})")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if a.min() < 0 or a.max() > 255:
        raise ValueError(f"{name} must lie on the 0..255 scale, got values in "
                         f"[{a.min():.3g}, {a.max():.3g}]; a model output x in [0, 1] is "
                         "255 · x (nic_lib.coding.from_tensor rounds and clamps it)")
    return a


def srgb_to_lab(img) -> np.ndarray:
    """sRGB (H, W, 3) on the 0..255 scale (uint8 or float) -> CIELAB (H, W, 3) float64.

    The equations are in the module docstring.

    Raises:
        ValueError, TypeError: ``img`` is not an (H, W, 3) numeric array in 0..255.
    """
    c = _as_rgb(img, "img") / 255.0
    # c_lin = c / 12.92 (c <= 0.04045), ((c + 0.055) / 1.055)^2.4 (otherwise)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    # (X, Y, Z) / (Xn, Yn, Zn),  XYZ = M · RGB_lin
    t = (lin @ SRGB_TO_XYZ.T) / WHITE
    # f(t) = t^(1/3) above δ³, t / (3δ²) + 4/29 below
    f = np.where(t > LAB_DELTA**3, np.cbrt(t), t / (3 * LAB_DELTA**2) + 4.0 / 29.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    # L* = 116 f(Y) − 16;  a* = 500 (f(X) − f(Y));  b* = 200 (f(Y) − f(Z))
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_srgb(lab) -> np.ndarray:
    """CIELAB (..., 3) -> sRGB (..., 3) float64 on the 0..255 scale, the inverse of
    :func:`srgb_to_lab` step by step. Not clipped: colours outside the sRGB gamut come out
    below 0 or above 255 (callers that need pixels clip; tests pick in-gamut colours).

    Raises:
        ValueError: ``lab``'s last axis is not 3 or it holds NaN/inf.
    """
    lab = np.asarray(lab, dtype=np.float64)
    if lab.shape[-1:] != (3,) or not np.isfinite(lab).all():
        raise ValueError(f"lab must be a finite array of shape (..., 3), got {lab.shape}")
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    # f⁻¹(f) = f³ above δ, 3δ² (f − 4/29) below
    t = np.where(f > LAB_DELTA, f**3, 3 * LAB_DELTA**2 * (f - 4.0 / 29.0))
    lin = (t * WHITE) @ np.linalg.inv(SRGB_TO_XYZ).T
    # c = 12.92 c_lin (c_lin <= 0.0031308), 1.055 c_lin^(1/2.4) − 0.055 (otherwise)
    c = np.where(lin <= 0.0031308, 12.92 * lin,
                 1.055 * np.sign(lin) * np.abs(lin) ** (1 / 2.4) - 0.055)
    return 255.0 * c


def colour_map(x, x_hat) -> tuple[np.ndarray, np.ndarray]:
    """The affine map x̂ ≈ A x + t that best maps original to reconstructed colours.

    Least squares over all pixels, on the 0..255 scale: minimise Σ_p ‖x̂_p − A x_p − t‖²
    (``numpy.linalg.lstsq`` on the design matrix [x_p, 1]).

    Returns:
        ``(A (3, 3), t (3,))``; row i of A says how output channel i mixes R, G, B.

    Raises:
        ValueError: shapes differ, or the original's colours span less than 3 dimensions
            (a grey or two-colour image: A is not determined).
    """
    a, b = _pair(x, x_hat)
    design = np.concatenate([a.reshape(-1, 3), np.ones((a.shape[0] * a.shape[1], 1))], axis=1)
    if np.linalg.matrix_rank(design) < 4:
        raise ValueError("the original's colours span fewer than 3 dimensions (a grey or "
                         "few-colour image): the colour map is not determined; use a "
                         "natural image")
    coef = np.linalg.lstsq(design, b.reshape(-1, 3), rcond=None)[0]  # (4, 3)
    return coef[:3].T, coef[3]


def _pair(x, x_hat) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_rgb(x, "x"), _as_rgb(x_hat, "x_hat")
    if a.shape != b.shape:
        raise ValueError(f"x and x_hat differ in shape: {a.shape} vs {b.shape}; crop the "
                         "reconstruction to the original's size (nic_lib.coding.crop_to_image)")
    return a, b


def colour_shift(x, x_hat, saturated_chroma: float = SATURATED_CHROMA) -> dict:
    """How the colours of ``x_hat`` moved away from those of ``x`` (see the module docstring).

    Args:
        x: original (H, W, 3), uint8 or float on the 0..255 scale.
        x_hat: reconstruction, same shape and scale.
        saturated_chroma: C* of the original above which a pixel counts as saturated.

    Returns:
        ``{"bias_r", "bias_g", "bias_b"`` (mean x̂ − x per channel, grey levels),
        ``"delta_L", "delta_a", "delta_b"`` (mean differences in CIELAB, x̂ − x),
        ``"delta_E"`` (mean ΔE*ab = ‖Lab(x̂) − Lab(x)‖ per pixel), ``"saturated"``
        (fraction of saturated pixels), ``"hue_shift"`` (mean signed Δh in degrees over
        saturated pixels, wrapped to [−180, 180), positive = counter-clockwise in the
        a*b* plane: red -> yellow -> green -> blue), ``"hue_shift_abs"`` (mean |Δh|),
        ``"chroma_ratio"`` (Σ C*(x̂) / Σ C*(x) over saturated pixels), ``"colour_map"``
        (A, 3x3 nested list), ``"colour_offset"`` (t, 3 values), ``"channel_order"``
        (for each output channel the input channel with the largest coefficient of A;
        :data:`IDENTITY_ORDER` unless channels are swapped)``}``. Hue and chroma entries are
        NaN when no pixel is saturated; the map entries NaN when it is not determined
        (:func:`colour_map`).

    Raises:
        ValueError, TypeError: the images are not RGB arrays of one shape on 0..255, or
            ``saturated_chroma`` is negative.
    """
    if not saturated_chroma >= 0:
        raise ValueError(f"saturated_chroma must be >= 0, got {saturated_chroma!r}")
    a, b = _pair(x, x_hat)
    bias = (b - a).reshape(-1, 3).mean(axis=0)
    lab, lab_hat = srgb_to_lab(a).reshape(-1, 3), srgb_to_lab(b).reshape(-1, 3)
    d = (lab_hat - lab).mean(axis=0)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    chroma_hat = np.hypot(lab_hat[:, 1], lab_hat[:, 2])
    sat = chroma > saturated_chroma
    out = {"bias_r": bias[0], "bias_g": bias[1], "bias_b": bias[2],
           "delta_L": d[0], "delta_a": d[1], "delta_b": d[2],
           "delta_E": np.linalg.norm(lab_hat - lab, axis=1).mean(),
           "saturated": sat.mean()}
    if sat.any():
        h = np.arctan2(lab[sat, 2], lab[sat, 1])
        h_hat = np.arctan2(lab_hat[sat, 2], lab_hat[sat, 1])
        # Δh = h(x̂) − h(x) wrapped to [−180°, 180°)
        dh = (np.degrees(h_hat - h) + 180.0) % 360.0 - 180.0
        out |= {"hue_shift": dh.mean(), "hue_shift_abs": np.abs(dh).mean(),
                "chroma_ratio": chroma_hat[sat].sum() / chroma[sat].sum()}
    else:
        out |= {"hue_shift": np.nan, "hue_shift_abs": np.nan, "chroma_ratio": np.nan}
    out = {k: float(v) for k, v in out.items()}
    try:
        A, t = colour_map(a, b)
        out |= {"colour_map": A.tolist(), "colour_offset": t.tolist(),
                "channel_order": tuple(int(i) for i in np.abs(A).argmax(axis=1))}
    except ValueError:
        out |= {"colour_map": np.full((3, 3), np.nan).tolist(),
                "colour_offset": [np.nan] * 3, "channel_order": (-1, -1, -1)}
    return out


#: Width of the hue bins of :func:`hue_shift_profile`, degrees: 12 bins, each about one
#: named hue (red, orange, yellow, yellow-green, ...).
HUE_BIN_DEGREES = 30


def hue_shift_profile(originals, reconstructions, bin_width: float = HUE_BIN_DEGREES,
                      saturated_chroma: float = SATURATED_CHROMA) -> list[dict]:
    """Hue shift and chroma ratio per hue of the original, pooled over images.

    Saturated pixels (original C* > ``saturated_chroma``) are binned by their original hue
    h = atan2(b*, a*) in [−180°, 180°); per bin, Δh = h(x̂) − h(x) wrapped to [−180°, 180°)
    is averaged and the chroma ratio is Σ C*(x̂) / Σ C*(x), as in :func:`colour_shift`.

    Args:
        originals: one (H, W, 3) array on the 0..255 scale, or a sequence of images (of
            any sizes: Kodak mixes landscape and portrait).
        reconstructions: the same number of images, each the shape of its original.
        bin_width: degrees per bin; must divide 360.
        saturated_chroma: C* above which a pixel is counted.

    Returns:
        One row per bin holding pixels, in hue order: ``{"hue_from", "hue_to"`` (degrees),
        ``"pixels"``, ``"hue_shift"`` (mean signed Δh, degrees), ``"chroma_ratio"}``.

    Raises:
        ValueError, TypeError: images as :func:`colour_shift` refuses them, different
            numbers of originals and reconstructions, or a ``bin_width`` that does not
            divide 360.
    """
    if not (0 < bin_width <= 360 and (360 / bin_width).is_integer()):
        raise ValueError(f"bin_width must divide 360 degrees, got {bin_width!r}")
    if not saturated_chroma >= 0:
        raise ValueError(f"saturated_chroma must be >= 0, got {saturated_chroma!r}")
    single = isinstance(originals, np.ndarray) and originals.ndim == 3  # one image, not a list
    xs = [originals] if single else list(originals)
    ys = [reconstructions] if single else list(reconstructions)
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"got {len(xs)} originals and {len(ys)} reconstructions; pass one "
                         "reconstruction per original (at least one pair)")
    n_bins = int(round(360 / bin_width))
    pixels, shift, chroma, chroma_hat = (np.zeros(n_bins) for _ in range(4))
    for x, x_hat in zip(xs, ys):
        a, b = _pair(x, x_hat)
        lab, lab_hat = srgb_to_lab(a).reshape(-1, 3), srgb_to_lab(b).reshape(-1, 3)
        c = np.hypot(lab[:, 1], lab[:, 2])
        sat = c > saturated_chroma
        h = np.degrees(np.arctan2(lab[sat, 2], lab[sat, 1]))
        h_hat = np.degrees(np.arctan2(lab_hat[sat, 2], lab_hat[sat, 1]))
        dh = (h_hat - h + 180.0) % 360.0 - 180.0
        k = np.minimum(((h + 180.0) // bin_width).astype(int), n_bins - 1)  # h = 180 -> last
        pixels += np.bincount(k, minlength=n_bins)
        shift += np.bincount(k, dh, minlength=n_bins)
        chroma += np.bincount(k, c[sat], minlength=n_bins)
        chroma_hat += np.bincount(k, np.hypot(lab_hat[sat, 1], lab_hat[sat, 2]), minlength=n_bins)
    return [{"hue_from": -180.0 + i * bin_width, "hue_to": -180.0 + (i + 1) * bin_width,
             "pixels": int(pixels[i]), "hue_shift": float(shift[i] / pixels[i]),
             "chroma_ratio": float(chroma_hat[i] / chroma[i])}
            for i in range(n_bins) if pixels[i]]
