"""Every classic codec by name (:data:`CODECS`), and :func:`get_codec` to fetch one.
"""

from __future__ import annotations

from nic_lib.codecs.base import Codec, CodecUnavailableError
from nic_lib.codecs.external import BpgCodec, VtmCodec
from nic_lib.codecs.pillow import AvifCodec, Jpeg2000Codec, JpegCodec, WebpCodec


# --------------------------------------------------------------------------- registry

#: Every codec this module knows, by name, in its default configuration (frozen: share freely).
CODECS: dict[str, Codec] = {
    codec.name: codec for codec in (JpegCodec(), WebpCodec(), Jpeg2000Codec(), AvifCodec(), BpgCodec(), VtmCodec())
}


def available_codecs() -> list[str]:
    """Names of the codecs that can run on this machine (Pillow's four; ``bpg``/``vtm`` when installed).

    Returns:
        Codec names in :data:`CODECS` order.
    """
    return [name for name, codec in CODECS.items() if codec.is_available()]


def get_codec(name: str) -> Codec:
    """The codec registered under ``name``, in its default configuration.

    Args:
        name: one of :data:`CODECS` (``"jpeg"``, ``"webp"``, ``"jpeg2000"``, ``"avif"``,
            ``"bpg"``, ``"vtm"``).

    Returns:
        A frozen :class:`Codec`; make a variant with ``dataclasses.replace(codec, ...)``.

    Raises:
        ValueError: if no codec has that name (the message lists them).
        CodecUnavailableError: if the codec's library or programs are missing (the message
            names what to install).
    """
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; choose one of {list(CODECS)} (available here: {available_codecs()})")
    codec = CODECS[name]
    if not codec.is_available():
        raise CodecUnavailableError(f"{name}: {codec.missing_message()}")
    return codec
