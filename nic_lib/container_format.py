"""The bytes of a ``.nic`` file: header, streams, CRC; versions, limits and errors.

:mod:`nic_lib.container` puts a model's ``compress`` output into these bytes and decodes it;
this module is the format alone (no model, no torch). All integers are big-endian.

==========  ===========  ==============================================================
bytes       type         field
==========  ===========  ==============================================================
8           bytes        magic ``89 4E 49 43 0D 0A 1A 0A`` (``\\x89NIC\\r\\n\\x1a\\n``, PNG's
                         trick: the high byte and CR/LF catch 7-bit and text-mode copies)
1           u8           format version, :data:`FORMAT_VERSION` (see :data:`FORMAT_HISTORY`)
1           u8           n = length of the model name, 1..:data:`MAX_NAME_BYTES`
n           ASCII        model name, a registry key (``mbt2018``) or a single-rate model's
                         checkpoint name (``pqmim-M4-K256``), ``[A-Za-z0-9._-]``
1           u8           quality, 1..255 (the registry uses 1..8)
1           u8           p = length of the weights profile, 0..:data:`MAX_NAME_BYTES`
p           ASCII        weights profile (``cpu``, ``full``; empty if unknown)
16          bytes        weights fingerprint, :func:`nic_lib.container.weights_fingerprint`
2           u16          image height H, 1..:data:`MAX_IMAGE_SIDE`
2           u16          image width W, 1..:data:`MAX_IMAGE_SIDE`; H*W <= :data:`MAX_IMAGE_PIXELS`
1           u8           padding below the image (rows), 0..255
1           u8           padding right of the image (columns), 0..255
2           u16          latent height h (the ``shape`` ``compress`` returned)
2           u16          latent width w; (H+pad)/h = (W+pad)/w = a power of two
1           u8           number of streams S, 1..:data:`MAX_STREAMS`
4*S         u32          length in bytes of each stream
sum         bytes        the streams, concatenated in ``strings`` order
4           u32          CRC32 (zlib) of every byte before it
==========  ===========  ==============================================================

The image is padded on the bottom and right to multiples of the model's
``downsampling_factor`` by repeating its last row and column ("replicate"), coded, and
cropped back after decoding (:mod:`nic_lib.coding`, the learned codecs' one rule).

Reading is strict and bounded: every length is checked against the bytes that remain
before anything is sliced, sizes are capped by the constants below, and a wrong magic,
a future or retired version, a CRC mismatch, missing or trailing bytes are refused. A
file made with another model, quality, profile or other weights is refused before any
decoding (:class:`NicModelMismatchError`). A file that passes every check but whose
streams are still wrong (made by hand to pass the CRC) decodes to garbage of the right
size or raises :class:`NicDecodeError`; it cannot hang or read outside its buffers (see
:func:`nic_lib.container._guarded`).
"""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from collections.abc import Sequence

from nic_lib.errors import NicReproError


#: First bytes of every .nic file (PNG-style: non-ASCII byte, name, CR LF, ^Z, LF).
MAGIC = b"\x89NIC\r\n\x1a\n"
#: The version this module writes and the only one it reads: larger ones are a newer
#: writer's files, smaller ones were retired (:data:`FORMAT_HISTORY`).
FORMAT_VERSION = 2
#: What each version changed. The byte layout is the same in both; what differs is the
#: table of scales the Gaussian coders have CDFs for (:mod:`nic_lib.models.tables`).
FORMAT_HISTORY = {
    1: "Gaussian coders use CompressAI's 64-scale table (nic-repro before 2026-11-30; "
       "retired: no file of it is left in the tree)",
    2: "Gaussian coders use nic_lib.models.tables.scale_table() (256 scales)",
}
#: The last commit whose code decodes version 1 (named in the error that refuses it).
_LAST_VERSION_1_READER = "a3eedac"
#: Longest model name / profile in bytes: registry keys are ~20 characters.
MAX_NAME_BYTES = 64
#: Largest image side: 16384 covers every camera and the 8K standard with room to spare.
MAX_IMAGE_SIDE = 16384
#: Largest image, in pixels (2^25 ~ 33.5 MP, an 8K frame fits): decoding it at N=192
#: already needs ~6.4 GB for g_s's largest activation (H/2 * W/2 * N floats).
MAX_IMAGE_PIXELS = 1 << 25
#: Most streams a file may hold: models return 1 (y) or 2 (y, z); room for a few more.
MAX_STREAMS = 8
#: Bytes of the weights fingerprint (first 16 of a SHA-256: 2^-128 collision odds).
FINGERPRINT_BYTES = 16
#: Width of a name field's characters: registry keys and profile names.
_NAME_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Most channels a latent of these models has (CompressAI's largest M): bounds the
#: number of symbols the entropy decoder may read for a model that does not say.
_U32 = struct.Struct(">I")
_FIXED_TAIL = struct.Struct(">HHBBHHB")  # H, W, pad_bottom, pad_right, h, w, S


class NicError(NicReproError, ValueError):
    """Base class of every error this module raises for a bad file or a wrong model (a
    :class:`nic_lib.errors.NicReproError`: the user's to fix)."""


class NicFormatError(NicError):
    """The bytes are not a valid .nic file (wrong magic, truncated, corrupt, CRC...)."""


class NicVersionError(NicFormatError):
    """The file uses a format version this code does not read: a newer one, or a retired
    one (:data:`FORMAT_HISTORY`)."""


class NicModelMismatchError(NicError):
    """The file was made with another model, quality, profile or other weights."""


class NicDecodeError(NicError):
    """The model or its entropy coder failed on streams that passed every check."""


class NicImageSizeError(NicError):
    """An image is empty or beyond :data:`MAX_IMAGE_SIDE` / :data:`MAX_IMAGE_PIXELS`."""


class NicBudgetError(NicError):
    """A valid file whose decoding needs more pixels or memory than the decode's budget."""


@dataclasses.dataclass(frozen=True)
class NicHeader:
    """Every field of a .nic header (see the module docstring for the byte layout).

    Attributes:
        model: registry key of the model that made the file.
        quality: its quality level.
        profile: weights profile (``"cpu"``, ``"full"``), ``""`` if not given.
        fingerprint: :func:`weights_fingerprint` of the encoder's model (16 bytes).
        height, width: image size in pixels, before padding.
        pad_bottom, pad_right: rows/columns of replicate padding added before coding.
        latent_shape: the ``shape`` the model's ``compress`` returned (h, w).
        stream_lengths: bytes of each stream, in ``strings`` order.
        version: format version of the file.
        file_bytes: size of the whole file (0 until packed or read).
    """

    model: str
    quality: int
    profile: str
    fingerprint: bytes
    height: int
    width: int
    pad_bottom: int
    pad_right: int
    latent_shape: tuple[int, int]
    stream_lengths: tuple[int, ...] = ()
    version: int = FORMAT_VERSION
    file_bytes: int = 0

    @property
    def padded_height(self) -> int:
        """Height the model coded, H + pad_bottom."""
        return self.height + self.pad_bottom

    @property
    def padded_width(self) -> int:
        """Width the model coded, W + pad_right."""
        return self.width + self.pad_right

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file (header and CRC included)."""
        # bpp = 8 * bytes / (H * W)
        return 8.0 * self.file_bytes / (self.height * self.width)

    def describe(self) -> dict[str, object]:
        """The fields as plain values for display (``nic info``).

        Returns:
            Ordered ``{field: value}``; the fingerprint as hex, bpp rounded to 4 digits.
        """
        return {
            "format_version": self.version,
            "model": self.model,
            "quality": self.quality,
            "profile": self.profile or "(not recorded)",
            "weights_fingerprint": self.fingerprint.hex(),
            "height": self.height,
            "width": self.width,
            "padding": f"{self.pad_bottom} rows below, {self.pad_right} columns right "
                       f"(coded {self.padded_height}x{self.padded_width})",
            "latent_shape": "x".join(map(str, self.latent_shape)),
            "streams": ", ".join(f"{n} B" for n in self.stream_lengths),
            "file_bytes": self.file_bytes,
            "bpp": round(self.bpp, 4),
        }


def check_image_size(height: int, width: int, what: str = "image") -> None:
    """Refuse images outside the format's limits, with the limit in the message.

    Args:
        height, width: image size in pixels.
        what: how to name the image in the message (a file path, say).

    Raises:
        NicImageSizeError: a side is < 1 or > :data:`MAX_IMAGE_SIDE`, or the pixel count
            exceeds :data:`MAX_IMAGE_PIXELS`.
    """
    if height < 1 or width < 1:
        raise NicImageSizeError(f"{what} is empty ({height}x{width}); give an image with pixels")
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE or height * width > MAX_IMAGE_PIXELS:
        raise NicImageSizeError(
            f"{what} is {height}x{width} = {height * width / 1e6:.1f} MP; the .nic format "
            f"allows sides up to {MAX_IMAGE_SIDE} and {MAX_IMAGE_PIXELS / 1e6:.1f} MP "
            "(nic_lib.container.MAX_IMAGE_SIDE / MAX_IMAGE_PIXELS); downscale or tile it"
        )


# --------------------------------------------------------------------------------------
# Bytes <-> (header, streams)
# --------------------------------------------------------------------------------------


def _name_bytes(value: str, field: str, allow_empty: bool) -> bytes:
    raw = value.encode("ascii", "replace")
    if not raw and allow_empty:
        return raw
    if len(raw) > MAX_NAME_BYTES or not _NAME_RE.fullmatch(raw):
        raise ValueError(f"{field} {value!r} must be 1..{MAX_NAME_BYTES} characters of "
                         "[A-Za-z0-9._-] starting with a letter or digit")
    return raw


def _check_geometry(h: NicHeader) -> None:
    """Semantic checks shared by pack and read: sizes, padding, latent shape."""
    check_image_size(h.height, h.width, "the image")
    if not (0 <= h.pad_bottom <= 255 and 0 <= h.pad_right <= 255):
        raise ValueError(f"padding ({h.pad_bottom}, {h.pad_right}) is outside 0..255")
    lat_h, lat_w = h.latent_shape
    if lat_h < 1 or lat_w < 1 or h.padded_height % lat_h or h.padded_width % lat_w:
        raise ValueError(f"latent shape {lat_h}x{lat_w} does not divide the coded size "
                         f"{h.padded_height}x{h.padded_width}")
    ratio = h.padded_height // lat_h
    if ratio != h.padded_width // lat_w or ratio & (ratio - 1) or ratio > 256:
        raise ValueError(f"latent shape {lat_h}x{lat_w} is not the coded size "
                         f"{h.padded_height}x{h.padded_width} divided by one power of two")
    if not 1 <= len(h.stream_lengths) <= MAX_STREAMS:
        raise ValueError(f"{len(h.stream_lengths)} streams; the format holds 1..{MAX_STREAMS}")


def pack(header: NicHeader, streams: Sequence[bytes]) -> bytes:
    """Serialize a header and its streams to the bytes of a .nic file.

    Args:
        header: the fields; ``stream_lengths``, ``version`` and ``file_bytes`` are
            filled in from ``streams`` and the output.
        streams: the byte strings, in the order ``decompress`` takes them.

    Returns:
        The file's bytes, CRC32 included.

    Raises:
        ValueError: a field is outside the format's limits (the message says which).
    """
    streams = [bytes(s) for s in streams]
    header = dataclasses.replace(header, stream_lengths=tuple(map(len, streams)),
                                 version=FORMAT_VERSION)
    if not 1 <= header.quality <= 255:
        raise ValueError(f"quality {header.quality} is outside 1..255")
    if len(header.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes (weights_fingerprint)")
    if any(n >= 1 << 32 for n in header.stream_lengths):
        raise ValueError("a stream is 4 GiB or longer; the format stores u32 lengths")
    _check_geometry(header)
    name = _name_bytes(header.model, "model name", allow_empty=False)
    profile = _name_bytes(header.profile, "profile", allow_empty=True)
    out = bytearray(MAGIC)
    out += bytes([FORMAT_VERSION, len(name)]) + name
    out += bytes([header.quality, len(profile)]) + profile + header.fingerprint
    out += _FIXED_TAIL.pack(header.height, header.width, header.pad_bottom, header.pad_right,
                            *header.latent_shape, len(streams))
    out += b"".join(_U32.pack(n) for n in header.stream_lengths)
    out += b"".join(streams)
    out += _U32.pack(zlib.crc32(out))
    return bytes(out)


class _Malformed(Exception):
    """A structural problem found while parsing; :func:`unpack` words the final error."""


class _Reader:
    """Bounded cursor over the file's bytes: every read checks what remains."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise _Malformed(f"{what} needs {n} bytes at offset {self.pos} but only "
                             f"{len(self.data) - self.pos} remain")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]


def _read_name(reader: _Reader, what: str, allow_empty: bool) -> str:
    n = reader.u8(f"{what} length")
    if n > MAX_NAME_BYTES or (n == 0 and not allow_empty):
        raise _Malformed(f"{what} length {n} is outside {int(not allow_empty)}..{MAX_NAME_BYTES}")
    raw = reader.take(n, what)
    if raw and not _NAME_RE.fullmatch(raw):
        raise _Malformed(f"{what} {raw!r} is not a name of [A-Za-z0-9._-]")
    return raw.decode("ascii")


def _parse(data: bytes, version: int) -> tuple[NicHeader, list[bytes]]:
    """Fields and streams of a file whose magic is checked (every version has this
    layout); raises _Malformed."""
    reader = _Reader(data)
    reader.take(len(MAGIC) + 1, "magic and version")
    model = _read_name(reader, "model name", allow_empty=False)
    quality = reader.u8("quality")
    if quality < 1:
        raise _Malformed("quality 0")
    profile = _read_name(reader, "profile", allow_empty=True)
    fingerprint = reader.take(FINGERPRINT_BYTES, "weights fingerprint")
    height, width, pad_b, pad_r, lat_h, lat_w, n_streams = _FIXED_TAIL.unpack(
        reader.take(_FIXED_TAIL.size, "image size, padding and stream count"))
    if not 1 <= n_streams <= MAX_STREAMS:
        raise _Malformed(f"{n_streams} streams (the format holds 1..{MAX_STREAMS})")
    lengths = tuple(_U32.unpack(reader.take(4, f"length of stream {i}"))[0]
                    for i in range(n_streams))
    header = NicHeader(model, quality, profile, fingerprint, height, width, pad_b, pad_r,
                       (lat_h, lat_w), lengths, version, len(data))
    try:
        _check_geometry(header)
    except ValueError as exc:  # NicImageSizeError included
        raise _Malformed(str(exc)) from None
    expected = reader.pos + sum(lengths) + _U32.size
    if len(data) < expected:
        raise _Malformed(f"{len(data)} bytes, the header announces {expected}")
    if len(data) > expected:
        raise _Malformed(f"{len(data) - expected} unexpected bytes after its end at {expected}")
    return header, [reader.take(n, f"stream {i}") for i, n in enumerate(lengths)]


def unpack(data: bytes) -> tuple[NicHeader, list[bytes]]:
    """Parse and validate a .nic file (structure, limits, CRC; no model needed).

    The CRC32 is checked against the last 4 bytes first (every version ends with it),
    so a damaged file is reported as damaged, even where the damage hit the version
    byte or a length; a file whose CRC matches but whose fields break the rules was
    written that way (another program, a bug) and is reported as malformed.

    Args:
        data: the whole file.

    Returns:
        ``(header, streams)``.

    Raises:
        NicFormatError: not a .nic file, truncated, corrupt (CRC mismatch), or malformed.
        NicVersionError: an intact file of a format version other than
            :data:`FORMAT_VERSION` (newer, or retired: :data:`FORMAT_HISTORY`).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    fix = "re-copy the file, or re-create it with `nic compress`"
    if not data:
        raise NicFormatError(f"file is empty; {fix}")
    if len(data) <= len(MAGIC) and MAGIC.startswith(data):
        raise NicFormatError(f"file is truncated: {len(data)} bytes, no more than the "
                             f"magic number; {fix}")
    if not data.startswith(MAGIC):
        raise NicFormatError(f"not a .nic file (starts with {data[:8]!r}, expected "
                             f"{MAGIC!r}); make one with `nic compress IN.png OUT.nic`")
    version = data[len(MAGIC)]
    body, crc = data[: -_U32.size], data[-_U32.size :]
    intact = len(data) >= len(MAGIC) + 1 + _U32.size and zlib.crc32(body) == _U32.unpack(crc)[0]
    if version > FORMAT_VERSION and intact:
        raise NicVersionError(
            f"file uses .nic format version {version}, this nic-repro reads up to "
            f"{FORMAT_VERSION}; update nic-repro (git pull && pip install -e .)")
    if 1 <= version < FORMAT_VERSION and intact:
        raise NicVersionError(
            f"file uses .nic format version {version} ({FORMAT_HISTORY[version]}), this "
            f"nic-repro reads version {FORMAT_VERSION} only; re-encode the image with this "
            f"version (`nic compress IMAGE OUT.nic`), or first decode the file with "
            f"nic-repro {_LAST_VERSION_1_READER} (`git checkout {_LAST_VERSION_1_READER}`, "
            f"`nic decompress`)")
    try:
        if version != FORMAT_VERSION:
            raise _Malformed(f"format version byte reads {version} (this nic-repro reads "
                             f"{FORMAT_VERSION})")
        header, streams = _parse(data, version)
    except _Malformed as exc:
        if intact:
            raise NicFormatError(f"file is malformed: {exc} (its CRC32 matches, so it was "
                                 f"written this way); re-create it with `nic compress`") from None
        raise NicFormatError(f"file is truncated or corrupt: {exc}, and its CRC32 does not "
                             f"match; {fix}") from None
    if not intact:
        raise NicFormatError(f"file is corrupt: CRC32 mismatch (bytes changed after "
                             f"writing); {fix}")
    return header, streams


def read_header(data: bytes) -> NicHeader:
    """Header of a .nic file, after validating the whole file (see :func:`unpack`).

    Args:
        data: the whole file.

    Returns:
        The header; ``file_bytes`` and ``bpp`` refer to the whole file.

    Raises:
        NicFormatError, NicVersionError: as :func:`unpack`.
    """
    return unpack(data)[0]
