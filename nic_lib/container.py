"""The ``.nic`` file format: one image coded by a learned model, safe to read.

A ``.nic`` file holds what a model's ``compress`` returns (its rANS strings and latent
shape) plus everything a decoder must check before trusting them: which model, which
quality, a fingerprint of the exact weights, the image size and padding, the length of
every stream, and a CRC32 over the whole file. All integers are big-endian.

The byte layout (a table of every field) and the strict, bounded reading are
:mod:`nic_lib.container_format`'s (header, CRC, versions, limits, errors: :func:`pack`,
:func:`unpack`, :func:`read_header`); this module puts a model's streams into it and takes
them out (:func:`encode_image`, :func:`decode_image`, the decode budget) and re-exports
every public name of the format, so ``nic_lib.container`` is the one import.

Decoding has a budget. A header of a few hundred bytes may announce the format's largest
image (:data:`MAX_IMAGE_PIXELS`), and the model would allocate for it whatever the
streams hold. :func:`decode_image` therefore states up front how many pixels
(``max_pixels``) and how much working memory (``max_memory``, bytes, estimated by
:func:`decode_memory_bytes` before anything is allocated) it will spend, and refuses a
file that asks for more (:class:`NicBudgetError`, naming ``nic decompress``'s
``--max-pixels`` / ``--max-memory-mb``). The models of :mod:`nic_lib.models.google` run
their transforms in tiles (:mod:`nic_lib.models.tiling`), so at the default budget the
largest image the format allows decodes in it.

Every error is a :class:`NicError` (a ``ValueError``); messages name the cause and the
fix. Typical use::

    data = encode_image(model, img, "mbt2018", quality=3, profile="cpu")
    img_hat = decode_image(data, lambda name, q: get_model(name, q, "cpu"))
    print(read_header(data).bpp)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import numpy as np
import torch
from torch import nn

from nic_lib import coding
from nic_lib.container_format import (  # noqa: F401  re-exported: import them from here
    check_image_size,
    FINGERPRINT_BYTES,
    FORMAT_HISTORY,
    FORMAT_VERSION,
    MAGIC,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    MAX_NAME_BYTES,
    MAX_STREAMS,
    NicBudgetError,
    NicDecodeError,
    NicError,
    NicFormatError,
    NicHeader,
    NicImageSizeError,
    NicModelMismatchError,
    NicVersionError,
    pack,
    read_header,
    unpack,
)


# nic_lib.models is imported inside the functions that need a model (registry names,
# calibration, tables, tiling): importing that package loads every model class and
# CompressAI's, which more than doubles the start of `nic info`, whose header reading
# needs none of them. There is no import cycle behind it (nic_lib.models never imports
# this module).

__all__ = [
    "FORMAT_HISTORY",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "MAX_STREAMS",
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_MAX_PIXELS",
    "NicBudgetError",
    "NicDecodeError",
    "NicError",
    "NicFormatError",
    "NicHeader",
    "NicImageSizeError",
    "NicModelMismatchError",
    "NicVersionError",
    "check_image_size",
    "check_model",
    "decode_image",
    "decode_memory_bytes",
    "encode_image",
    "pack",
    "read_header",
    "unpack",
    "weights_fingerprint",
]

#: Default pixel budget of a decode: the format's own limit; the memory budget below is
#: the one that binds for wide models.
DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS
#: Default working-memory budget of a decode, bytes: 1 GiB keeps a decoding process under
#: 2 GB with the ~0.9 GB that Python, PyTorch (0.5), CompressAI (0.3) and a model take
#: (measured). A 16 MP image at the shipped widths (mbt2018 N=64, M=192) needs ~0.75 GB;
#: the format's largest (33.5 MP) ~1.2 GB, so it is refused unless the budget is raised
#: (then measured: 1.87 GB peak RSS; benchmarks/decode_speed.py --scaling).
DEFAULT_MAX_MEMORY = 2**30
_DEFAULT_MAX_CHANNELS = 320
#: Stride of the densest latent the family codes (y, after four stride-2 layers).
_LATENT_STRIDE = 16


# --------------------------------------------------------------------------------------
# Sizes, padding, fingerprints
# --------------------------------------------------------------------------------------


def _factor(model: nn.Module) -> int:
    """The model's ``downsampling_factor`` (what padded sides must be multiples of)."""
    factor = coding.downsampling_factor(model)
    if not 1 <= factor <= 256:
        raise ValueError(f"downsampling_factor {factor} is outside 1..256, the padding "
                         "fields' range; this model cannot be stored in a .nic file")
    return factor


#: State-dict keys :func:`weights_fingerprint` hashes through :func:`_coding_settings`
#: instead: the scale calibration's factors (``nic_lib.models.calibration.BUFFER``), of
#: which only the current level's codes.
FINGERPRINT_SKIPS = frozenset({"scale_calibration"})


def _coding_settings(model: nn.Module) -> dict[str, object]:
    """:func:`nic_lib.models.identity.coding_settings` (the settings the fingerprint hashes)."""
    from nic_lib.models import identity  # inside: see the note at the imports

    return identity.coding_settings(model)


def weights_fingerprint(model: nn.Module) -> bytes:
    """What makes a decoder reproduce its encoder, hashed: weights and coder settings.

    The first :data:`FINGERPRINT_BYTES` bytes of :func:`nic_lib.models.identity.model_digest`
    (the state dict in sorted key order, entropy-coder tables included, then the settings
    that change the bitstream without being weights: ``coding_order``, a variable-rate
    model's level, a scale calibration factor), with the scale-calibration buffer
    (:data:`FINGERPRINT_SKIPS`) left out: it enters as the current level's factor among the
    settings, so a file coded when the factors lived beside the checkpoint keeps its
    fingerprint.

    Args:
        model: any ``nn.Module``.

    Returns:
        :data:`FINGERPRINT_BYTES` bytes.
    """
    from nic_lib.models import identity  # inside: see the note at the imports

    return identity.model_digest(model, skip=FINGERPRINT_SKIPS)[:FINGERPRINT_BYTES]


# --------------------------------------------------------------------------------------
# Image <-> bytes with a model
# --------------------------------------------------------------------------------------

ModelOrLoader = Union[nn.Module, Callable[[str, int], nn.Module]]


def encode_image(
    model: nn.Module,
    img: np.ndarray,
    model_name: str | None = None,
    quality: int = 1,
    profile: str = "",
) -> bytes:
    """Compress a uint8 image with a model into the bytes of a .nic file.

    Args:
        model: a registered model in eval mode with coder tables built
            (``update(force=True)``), e.g. from ``nic_lib.models.get_model``.
        img: (H, W, 3) uint8 RGB, any size within the limits (1x1 works: padding).
        model_name: model name stored in the file: a registry key, or a single-rate model's
            checkpoint name (``pqmim-M4-K256``, what ``get_model`` loads); ``None`` reads
            the key from the model.
        quality: quality level stored in the file (the model does not know its own).
        profile: weights profile stored in the file (``"cpu"``/``"full"``), so
            ``nic decompress`` loads the same weights.

    Returns:
        The file's bytes.

    Raises:
        NicImageSizeError: the image is empty or beyond the limits.
        ValueError: ``img`` is not uint8 RGB, or ``compress`` returned more streams or
            images than the format holds.
        KeyError: ``model_name`` is None and the model is not registered.
    """
    if model_name is None:
        from nic_lib.models import registry  # inside: see the note at the imports

        model_name = registry.model_name(model)
    if isinstance(img, np.ndarray) and img.ndim == 3:
        check_image_size(img.shape[0], img.shape[1])
    factor = _factor(model)
    out = coding.encode(model, img, estimate=False)  # checks img; pads to the factor
    strings, x = out["strings"], out["x"]
    pad_bottom, pad_right = coding.padding(img.shape[0], img.shape[1], factor)
    if any(len(s) != 1 for s in strings):
        raise ValueError("compress returned a batch; a .nic file holds one image")
    latent_shape = tuple(int(v) for v in out["shape"])
    if [v * factor for v in latent_shape] != list(x.shape[-2:]):
        raise ValueError(
            f"compress returned shape {latent_shape} for a {tuple(x.shape[-2:])} input; the "
            ".nic format stores models whose shape is the input size / downsampling_factor")
    header = NicHeader(
        model=model_name, quality=int(quality), profile=profile,
        fingerprint=weights_fingerprint(model), height=img.shape[0], width=img.shape[1],
        pad_bottom=pad_bottom, pad_right=pad_right,
        latent_shape=latent_shape,
    )  # fmt: skip
    return pack(header, [s[0] for s in strings])


def _registry_key(name: str) -> str | None:
    """The registry key a header's model name refers to (``pqmim-M4-K256`` -> ``pqmim``),
    None if it refers to no registered model."""
    from nic_lib.models import registry  # inside: see the note at the imports

    try:
        return registry.model_key(name)
    except KeyError:
        return None


def _resolve_model(header: NicHeader, model: ModelOrLoader) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    from nic_lib.models import registry  # inside: see the note at the imports

    if _registry_key(header.model) is None:
        raise NicModelMismatchError(
            f"file was made with model {header.model!r}, which this nic-repro does not "
            f"have (available: {', '.join(registry.available_models())}); update nic-repro"
        )
    return model(header.model, header.quality)


def check_model(header: NicHeader, model: nn.Module, quality: int | None = None) -> None:
    """Refuse a model that is not the one a file was made with, before decoding.

    Args:
        header: the file's header.
        model: the model about to decode it.
        quality: the quality the caller loaded, if known; compared with the file's.

    Raises:
        NicModelMismatchError: other model class, quality, weights, coder settings, or a
            downsampling factor that does not match the file's padding and latent shape.
    """
    from nic_lib.models import registry  # inside: see the note at the imports

    try:
        name = registry.model_name(model)
    except KeyError:
        name = type(model).__name__
    where = f"{header.model} q{header.quality}" + (f" --profile {header.profile}"
                                                    if header.profile else "")
    if name != _registry_key(header.model):
        raise NicModelMismatchError(
            f"file was made with model {header.model!r}, not {name!r}; decode it with "
            f"get_model({header.model!r}, {header.quality}, ...) (`nic decompress` does this)")
    if quality is not None and int(quality) != header.quality:
        raise NicModelMismatchError(
            f"file was made at quality {header.quality}, not {quality}; load {where}")
    if weights_fingerprint(model) != header.fingerprint:
        raise NicModelMismatchError(
            f"file was made with other weights or coder settings than this {name} model "
            f"(fingerprint {header.fingerprint.hex()} vs {weights_fingerprint(model).hex()}); "
            f"decode it with the exact checkpoint that encoded it ({where}; "
            "same coding_order and rate level), or re-encode the image")
    factor = _factor(model)
    if (header.pad_bottom, header.pad_right) != coding.padding(header.height, header.width,
                                                               factor):
        raise NicModelMismatchError(
            f"file's padding ({header.pad_bottom}, {header.pad_right}) does not match this "
            f"model's downsampling factor {factor}; the file is corrupt or from another model")
    if header.padded_height != header.latent_shape[0] * factor:
        # (_check_geometry made both axes share one ratio.) This also bounds the
        # decoder's work: it allocates latents of this shape.
        raise NicModelMismatchError(
            f"file's latent shape {header.latent_shape} is not its coded size "
            f"{header.padded_height}x{header.padded_width} / {factor} (the model's "
            "downsampling factor); the file is corrupt or from another model")


def _guard_bytes(stream_length: int, header: NicHeader, model: nn.Module) -> int:
    """Zero bytes :func:`_guarded` appends to a stream of this length."""
    channels = max(int(getattr(model, "M", 0) or 0), int(getattr(model, "N", 0) or 0))
    channels = channels or _DEFAULT_MAX_CHANNELS
    # symbols <= channels * coded pixels / stride^2 (the densest latent, y)
    symbols = channels * header.padded_height * header.padded_width // _LATENT_STRIDE**2
    # guard = 4 bytes per symbol + 16 per stream byte + slack for the initial state
    return 4 * symbols + 16 * stream_length + 64


def _guarded(stream: bytes, header: NicHeader, model: nn.Module) -> bytes:
    """The stream followed by enough zero bytes that no decode can read past it.

    CompressAI's C++ rANS decoder reads its input without bounds checks. A valid stream
    is never over-read (the decoder consumes exactly what the encoder wrote, so extra
    bytes change nothing), but a forged one can make it read on: at most one 32-bit
    word per decoded symbol once the state hits zero, and fewer than 16 bytes per
    stream byte through the escape (bypass) code. Zeros end every bypass run, so the
    guard below bounds the read; it is not an optimization, it is memory safety.
    """
    return stream + bytes(_guard_bytes(len(stream), header, model))


#: Bytes per y symbol a whole-latent Gaussian coder (CompressAI's, in the hyperprior
#: models) holds while decoding: means and scales (2 x 4), indexes (4, and 4 for their
#: int copy), decoded symbols (4) and y_hat (4) as tensors, and the indexes and symbols
#: as Python lists (8 B per reference, up to 32 B per int object outside -5..256).
_WHOLE_LATENT_CODER_BYTES = 2 * 4 + 4 + 4 + 4 + 4 + 2 * 8 + 32
#: Bytes per y symbol of the wavefront coder (models with a context model): hyperprior
#: features 2M float64 (16), the y_hat buffer float64 (8) and its float32 copy (4).
_WAVEFRONT_CODER_BYTES = 2 * 8 + 8 + 4
#: Working memory per coded pixel assumed for a model whose g_s is not a tileable chain.
_UNKNOWN_MODEL_BYTES_PER_PIXEL = 512


def decode_memory_bytes(header: NicHeader, model: nn.Module) -> int:
    """Upper bound of the working memory :func:`decode_image` needs for a file.

    Computed from the header and the model's widths alone, before anything is
    allocated. With P coded pixels, L = P / 256 positions of y and M its channels:

        streams + their guards (:func:`_guarded`)
        + max( entropy decoding:  M L x (28 B wavefront coder | 80 B whole-latent coder)
                                  (a model's own ``coder_memory_bytes(latent_shape)``
                                  where it has one: PQ-MIM) + 2 tiles of h_s,
               synthesis:         y_hat float32 (4 M L) + x_hat float32 (12 P) + 2 tiles of g_s,
               conversion:        x_hat (12 P) + the uint8 image (3 H W) + one band )

    Two tiles: the one being computed and, measured, up to as much again in the GEMM
    path's buffers and the allocator's free lists (one tile alone underestimated the
    peak RSS of a 4 and a 16 MP decode by 46 and 71 MB).

    A tile is what :func:`nic_lib.models.tiling.tile_memory_bytes` gives for the tile
    side the tiled models (those with ``tile_memory``, :mod:`nic_lib.models.google`)
    pick, at most the image; another model's g_s counts as one tile of the whole image.
    Not counted: the model's weights and the interpreter (~0.5 GB together, the reason
    the default budget is 1 GiB).

    Args:
        header: the file's header.
        model: the model that will decode it.

    Returns:
        Bytes.
    """
    from nic_lib.models import tiling  # inside: see the note at the imports

    pixels = header.padded_height * header.padded_width
    symbols = int(getattr(model, "M", 0) or _DEFAULT_MAX_CHANNELS) * pixels // _LATENT_STRIDE**2
    streams = sum(n + _guard_bytes(n, header, model) for n in header.stream_lengths)
    per_symbol = (_WAVEFRONT_CODER_BYTES if hasattr(model, "coding_order")
                  else _WHOLE_LATENT_CODER_BYTES)
    # a model whose coder is not CompressAI's says what it needs (PQ-MIM: its transformer)
    own_coder = getattr(model, "coder_memory_bytes", None)
    coder = (own_coder(header.latent_shape) if callable(own_coder)
             else per_symbol * symbols)
    channels = int(getattr(model, "M", 0) or _DEFAULT_MAX_CHANNELS)
    side = -(-max(header.padded_height, header.padded_width) // _LATENT_STRIDE)
    budget = getattr(model, "tile_memory", None)
    try:
        tiles = []
        for module, width, dtype, scale in ((model.g_s, channels, torch.float32, 1),
                                            (getattr(model, "h_s", None), 0, torch.float64, 4)):
            if module is None:
                continue
            width = width or int(getattr(model, "N", 0) or _DEFAULT_MAX_CHANNELS)
            coarse = -(-side // scale)
            if budget is not None:  # the tiled models' tile, never more than the image
                coarse = min(coarse, tiling.tile_for_memory(module, width, dtype, budget))
            widest = tiling.largest_tile(coarse, -(-side // scale))  # a merged remainder
            tiles.append(tiling.tile_memory_bytes(module, width, widest, dtype))
        tile = 2 * max(tiles)
    except (AttributeError, ValueError):  # no g_s, or not a chain tiling understands
        tile = _UNKNOWN_MODEL_BYTES_PER_PIXEL * pixels
    x_hat = 3 * 4 * pixels
    band = 3 * 4 * 4 * coding.CROP_BAND_ROWS * header.padded_width
    phases = (coder + tile,
              4 * symbols + x_hat + tile,
              x_hat + 3 * header.height * header.width + band)
    return int(streams + max(phases))


def _check_budget(header: NicHeader, max_pixels: int, max_memory: int | None,
                  model: nn.Module | None = None) -> None:
    """Refuse a file beyond the decode budget (pixels without a model, then memory)."""
    size = (f"a {header.width}x{header.height} image "
            f"({header.height * header.width / 1e6:.1f} MP)")
    trust = "if you trust the file and have the memory"
    if header.height * header.width > max_pixels:
        raise NicBudgetError(
            f"file announces {size}, more than this decode's budget of {max_pixels} pixels; "
            f"{trust}, raise it: `nic decompress --max-pixels N` "
            "(decode_image(..., max_pixels=N))")
    if model is not None and max_memory is not None:
        need = decode_memory_bytes(header, model)
        if need > max_memory:
            raise NicBudgetError(
                f"file announces {size} whose decoding with {header.model} needs about "
                f"{need / 2**20:.0f} MiB, more than this decode's budget of "
                f"{max_memory / 2**20:.0f} MiB; {trust}, raise it: "
                f"`nic decompress --max-memory-mb {-(-need // 2**20)}` "
                "(decode_image(..., max_memory=bytes))")


def decode_image(
    data: bytes, model: ModelOrLoader, quality: int | None = None, *,
    max_pixels: int = DEFAULT_MAX_PIXELS, max_memory: int | None = DEFAULT_MAX_MEMORY,
) -> np.ndarray:
    """Decompress the bytes of a .nic file to the uint8 image, within a budget.

    Args:
        data: the whole file.
        model: the model that made it, or a loader ``(name, quality) -> model`` called
            with the header's fields (e.g. ``lambda n, q: get_model(n, q, "cpu")``).
        quality: with a model, the quality it was loaded at, checked against the file.
        max_pixels: largest image (H * W) this decode accepts; checked before the
            model is loaded.
        max_memory: largest working memory in bytes (:func:`decode_memory_bytes`),
            checked before decoding allocates anything; None: no memory limit.

    Returns:
        (H, W, 3) uint8 RGB of the header's size.

    Raises:
        NicFormatError, NicVersionError: as :func:`unpack`.
        NicBudgetError: the header asks for more pixels or memory than the budget.
        NicModelMismatchError: as :func:`check_model`.
        NicDecodeError: the model failed on the streams, or returned the wrong size.
        Whatever the loader raises (e.g. ``CheckpointNotFoundError``).
    """
    header, streams = unpack(data)
    _check_budget(header, max_pixels, None)
    model = _resolve_model(header, model)
    check_model(header, model, quality)
    _check_budget(header, max_pixels, max_memory, model)
    strings = [[_guarded(s, header, model)] for s in streams]
    expected = (1, 3, header.padded_height, header.padded_width)
    try:
        with torch.no_grad():
            x_hat = model.decompress(strings, torch.Size(header.latent_shape))["x_hat"]
    except MemoryError:
        raise
    except Exception as exc:  # the model and coder raise anything on forged streams
        raise NicDecodeError(
            f"{header.model} could not decode the file's streams ({type(exc).__name__}: "
            f"{exc}); the file is corrupt although its CRC matches: re-create it"
        ) from exc
    if not isinstance(x_hat, torch.Tensor) or tuple(x_hat.shape) != expected:
        raise NicDecodeError(
            f"{header.model} decoded a {tuple(getattr(x_hat, 'shape', ()))} tensor, the "
            f"file announces {expected}; the file is corrupt although its CRC matches")
    return coding.crop_to_image(x_hat, header.height, header.width)
