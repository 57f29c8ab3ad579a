"""Classic image codecs behind one small interface: ``encode(img, setting) -> bytes``,
``decode(bytes) -> img``.

Every codec takes and returns 8-bit RGB images as ``numpy`` arrays of shape (H, W, 3),
dtype ``uint8``, and reports the *whole decodable file* as bytes (container headers
included), so bpp = 8 * len(bytes) / (H * W) is the real rate. A codec's ``settings`` is
its default rate sweep on Kodak, listed in increasing-rate order; ``description`` says
exactly how it is configured (it goes into result tables and cache keys).

    image uint8 (H, W, 3) ──encode(img, setting)──► bytes ──decode──► image uint8 (H, W, 3)
                                                      │
    rate_sweep(images, codecs) ── bpp, PSNR, MS-SSIM (nic_lib.metrics) ──► one tidy row each

Codecs built on Pillow's own encoders (always available in the Pillow wheels):

====================  ==========================  =============================================
name                  library                     setting
====================  ==========================  =============================================
``jpeg``              libjpeg-turbo               quality 1..100
``webp``              libwebp                     quality 0..100
``jpeg2000``          OpenJPEG                    target bits per pixel (rate control)
``avif``              libavif + libaom (AV1)      quality 0..100
====================  ==========================  =============================================

Optional codecs, used only when their programs are on ``PATH`` (they are not pip-installable):
``bpg`` (``bpgenc``/``bpgdec``, HEVC intra) and ``vtm`` (VVC reference software
``EncoderAppStatic``/``DecoderAppStatic``); their setting is the quantisation parameter QP,
so their sweeps run from high to low QP.

Each class docstring records what was measured for the alternatives to its configuration
(Kodak, 24 images, BD-rate on mean-bpp / mean-PSNR-RGB curves, Akima, ``nic_lib.rd``;
negative = fewer bits for the same PSNR). With these configurations, BD-rate against
``jpeg2000`` on Kodak is: avif -19.9 %, webp +16.5 %, jpeg +81.5 %; each curve is better than
the published one for the same codec (``benchmarks/classic_codecs_vs_published.py``).

This module wraps the codecs' own libraries and programs; it implements no coding tool
itself. It imports only :mod:`nic_lib.metrics` from the project.

The package, one concern a file: :mod:`~nic_lib.codecs.base` (the :class:`Codec` interface,
:func:`check_image`), :mod:`~nic_lib.codecs.pillow` (JPEG, WebP, JPEG 2000, AVIF),
:mod:`~nic_lib.codecs.external` (BPG, VTM), :mod:`~nic_lib.codecs.registry` (:data:`CODECS`,
:func:`get_codec`), :mod:`~nic_lib.codecs.sweep` (:func:`rate_sweep`, :func:`encode_at_bpp`,
:func:`smallest`). Import from ``nic_lib.codecs``; the names below are its public face.
"""

from __future__ import annotations

from nic_lib.codecs.base import (
    CodecUnavailableError,
    check_image,
    Codec,
)
from nic_lib.codecs.pillow import (
    RAW_BPP,
    PillowCodec,
    JPEG_QUALITIES,
    JpegCodec,
    WEBP_QUALITIES,
    WebpCodec,
    JPEG2000_BPPS,
    Jpeg2000Codec,
    jpeg2000_header_bytes,
    AVIF_QUALITIES,
    AvifCodec,
)
from nic_lib.codecs.external import (
    ExternalCodec,
    HEVC_VVC_QPS,
    BpgCodec,
    BT709_KR_KB,
    VTM_CFG_ENV,
    VTM_CFG_NAME,
    VTM_SIZE_HEADER,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
    VtmCodec,
)
from nic_lib.codecs.registry import (
    CODECS,
    available_codecs,
    get_codec,
)
from nic_lib.codecs.sweep import (
    SWEEP_COLUMNS,
    spread_settings,
    rate_sweep,
    MATCH_RTOL,
    MATCH_MAX_STEPS,
    encode_at_bpp,
    smallest,
)

__all__ = [
    "CodecUnavailableError",
    "check_image",
    "Codec",
    "RAW_BPP",
    "PillowCodec",
    "JPEG_QUALITIES",
    "JpegCodec",
    "WEBP_QUALITIES",
    "WebpCodec",
    "JPEG2000_BPPS",
    "Jpeg2000Codec",
    "jpeg2000_header_bytes",
    "AVIF_QUALITIES",
    "AvifCodec",
    "ExternalCodec",
    "HEVC_VVC_QPS",
    "BpgCodec",
    "BT709_KR_KB",
    "VTM_CFG_ENV",
    "VTM_CFG_NAME",
    "VTM_SIZE_HEADER",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "VtmCodec",
    "CODECS",
    "available_codecs",
    "get_codec",
    "SWEEP_COLUMNS",
    "spread_settings",
    "rate_sweep",
    "MATCH_RTOL",
    "MATCH_MAX_STEPS",
    "encode_at_bpp",
    "smallest",
]
