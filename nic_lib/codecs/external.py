"""The optional codecs run as command-line programs: BPG (HEVC intra) and VTM (VVC).

Used only when their programs are on ``PATH`` (they are not pip-installable); their setting is
the quantisation parameter QP. VTM takes 10-bit YCbCr planes (:func:`rgb_to_ycbcr`).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from nic_lib.codecs.base import Codec, CodecUnavailableError, _open_image


# --------------------------------------------------------------------------- external programs


class ExternalCodec(Codec):
    """A codec run as command-line programs on temporary files (for codecs Pillow lacks).

    Subclasses name their programs and build the command lines in :meth:`encode_command`
    and :meth:`decode_command` (kept separate so they can be checked without the programs).
    """

    #: Candidate program names per role, first found on PATH wins.
    encoder_programs: ClassVar[tuple[str, ...]]
    decoder_programs: ClassVar[tuple[str, ...]]
    #: Where to get the programs (shown when they are missing).
    install_hint: ClassVar[str]
    #: Seconds before a program run is abandoned (VTM needs minutes per Kodak image at low QP).
    timeout_s: ClassVar[float] = 3600.0

    @staticmethod
    def _which(candidates: Sequence[str]) -> str | None:
        return next((path for path in map(shutil.which, candidates) if path), None)

    @classmethod
    def is_available(cls) -> bool:
        return bool(cls._which(cls.encoder_programs) and cls._which(cls.decoder_programs))

    @classmethod
    def missing_message(cls) -> str:
        missing = [
            " or ".join(programs)
            for programs in (cls.encoder_programs, cls.decoder_programs)
            if not cls._which(programs)
        ]
        return f"codec needs {' and '.join(missing)} on PATH (not found); {cls.install_hint}"

    def _programs(self) -> tuple[str, str]:
        encoder, decoder = self._which(self.encoder_programs), self._which(self.decoder_programs)
        if not (encoder and decoder):
            raise CodecUnavailableError(f"{self.name}: {self.missing_message()}")
        return encoder, decoder

    def _run(self, command: Sequence[str]) -> None:
        """Run one program, raising RuntimeError with its output if it fails."""
        result = subprocess.run(
            [str(c) for c in command], capture_output=True, text=True, timeout=self.timeout_s, check=False
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-2000:]
            raise RuntimeError(
                f"{self.name}: `{' '.join(map(str, command))}` exited with {result.returncode}:\n{output}\n"
                "check that the program is the expected build (see this codec's docstring)"
            )

    def library(self) -> str:
        found = [self._which(self.encoder_programs), self._which(self.decoder_programs)]
        return "programs " + ", ".join(path or "(missing)" for path in found)


#: BPG / VTM sweep in QP, high to low QP = increasing rate, meant to span the published
#: bpg444-x265 and vtm Kodak anchors (0.05-1.9 bpp). Not measured here: the programs are
#: not installed on the machines this was written on; check the bpp range on first use.
HEVC_VVC_QPS = (47, 44, 41, 38, 35, 32, 29, 26, 23, 20)


@dataclass(frozen=True)
class BpgCodec(ExternalCodec):
    """BPG (Bellard's HEVC-intra still-image format) through the ``bpgenc``/``bpgdec`` programs.

    Configuration as in the published ``bpg444-x265`` anchor (YCbCr 4:4:4, 8 bits, x265),
    at compression level 9 (bpgenc's slowest and best; its default is 8). The setting is HEVC's QP
    (0..51, lower = more bits). Not measured here: the programs are not installable with pip
    (build from https://bellard.org/bpg/, or ``brew install libbpg`` on macOS).
    """

    name: str = "bpg"
    settings: tuple = HEVC_VVC_QPS
    chroma_format: str = "444"
    color_space: str = "ycbcr"
    bit_depth: int = 8
    hevc_encoder: str = "x265"
    compression_level: int = 9

    setting_name: ClassVar[str] = "qp"
    setting_range: ClassVar[tuple[float, float]] = (0, 51)
    encoder_programs: ClassVar[tuple[str, ...]] = ("bpgenc",)
    decoder_programs: ClassVar[tuple[str, ...]] = ("bpgdec",)
    install_hint: ClassVar[str] = (
        "install libbpg (build it from https://bellard.org/bpg/ with `make`, or `brew install libbpg` "
        "on macOS) and put bpgenc and bpgdec on PATH"
    )

    def encode_command(self, encoder: str, png_path: str, bpg_path: str, qp: int) -> list[str]:
        """The bpgenc command that encodes ``png_path`` into ``bpg_path`` at QP ``qp``."""
        return [
            encoder, "-q", str(qp), "-f", self.chroma_format, "-c", self.color_space,
            "-b", str(self.bit_depth), "-e", self.hevc_encoder, "-m", str(self.compression_level),
            "-o", bpg_path, png_path,
        ]  # fmt: skip

    def decode_command(self, decoder: str, bpg_path: str, png_path: str) -> list[str]:
        """The bpgdec command that decodes ``bpg_path`` into an 8-bit PNG ``png_path``."""
        return [decoder, "-o", png_path, bpg_path]

    def _encode(self, img: np.ndarray, setting: float) -> bytes:
        encoder, _ = self._programs()
        with tempfile.TemporaryDirectory(prefix="nic-bpg-") as tmp:
            png_path, bpg_path = os.path.join(tmp, "in.png"), os.path.join(tmp, "out.bpg")
            Image.fromarray(img).save(png_path)
            self._run(self.encode_command(encoder, png_path, bpg_path, setting))
            return Path(bpg_path).read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        _, decoder = self._programs()
        with tempfile.TemporaryDirectory(prefix="nic-bpg-") as tmp:
            bpg_path, png_path = os.path.join(tmp, "in.bpg"), os.path.join(tmp, "out.png")
            Path(bpg_path).write_bytes(bytes(data))
            self._run(self.decode_command(decoder, bpg_path, png_path))
            return _open_image(Path(png_path).read_bytes(), self.name)


#: BT.709 luma weights (Kr, Kb), the colour matrix of CompressAI's VTM anchor.
BT709_KR_KB = (0.2126, 0.0722)
#: Environment variable naming VTM's all-intra configuration file.
VTM_CFG_ENV = "NIC_VTM_CFG"
#: The all-intra configuration shipped in VTM's source tree (cfg/encoder_intra_vtm.cfg).
VTM_CFG_NAME = "encoder_intra_vtm.cfg"
#: VTM streams are prefixed with the image height and width (struct format: 2 x uint16,
#: big-endian), counted in the rate: the raw YUV the decoder writes has no header, and
#: 4 bytes cost 8e-5 bpp on a Kodak image.
VTM_SIZE_HEADER = ">HH"


def rgb_to_ycbcr(img: np.ndarray, bit_depth: int) -> np.ndarray:
    """Full-range BT.709 YCbCr of an RGB uint8 image, as planar integers at ``bit_depth`` bits.

    Args:
        img: uint8 array (H, W, 3).
        bit_depth: bits per sample of the output (8 or 10); 10 bits make the conversion
            invertible for 8-bit RGB.

    Returns:
        uint16 array (3, H, W): Y, Cb, Cr.
    """
    kr, kb = BT709_KR_KB
    r, g, b = np.moveaxis(img.astype(np.float64) / 255.0, -1, 0)
    # Y = Kr R + (1 - Kr - Kb) G + Kb B;  Cb = (B - Y) / (2 (1 - Kb)) + 1/2;  Cr = (R - Y) / (2 (1 - Kr)) + 1/2
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    cb = (b - y) / (2.0 * (1.0 - kb)) + 0.5
    cr = (r - y) / (2.0 * (1.0 - kr)) + 0.5
    peak = 2**bit_depth - 1
    return np.clip(np.rint(np.stack([y, cb, cr]) * peak), 0, peak).astype(np.uint16)


def ycbcr_to_rgb(planes: np.ndarray, bit_depth: int) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`: planar YCbCr integers (3, H, W) -> RGB uint8 (H, W, 3)."""
    kr, kb = BT709_KR_KB
    y, cb, cr = planes.astype(np.float64) / (2**bit_depth - 1)
    # R = Y + 2 (1 - Kr) (Cr - 1/2);  B = Y + 2 (1 - Kb) (Cb - 1/2);  G = (Y - Kr R - Kb B) / (1 - Kr - Kb)
    r = y + 2.0 * (1.0 - kr) * (cr - 0.5)
    b = y + 2.0 * (1.0 - kb) * (cb - 0.5)
    g = (y - kr * r - kb * b) / (1.0 - kr - kb)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1) * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class VtmCodec(ExternalCodec):
    """VVC intra through the VTM reference software (``EncoderAppStatic``/``DecoderAppStatic``).

    Configuration: VTM's all-intra configuration file (``encoder_intra_vtm.cfg``), input
    converted to full-range BT.709 YCbCr 4:4:4 at 10 bits (invertible for 8-bit RGB, and
    VTM's usual internal depth), conformance-window padding to VTM's block size. The setting
    is QP (0..63, lower = more bits). The configuration file is found through the
    ``NIC_VTM_CFG`` environment variable, else in ``cfg/`` beside or above the programs'
    folder (VTM's source layout). Not measured here: VTM is built from source
    (https://vcgit.hhi.fraunhofer.de/jvet/VVCSoftware_VTM).
    """

    name: str = "vtm"
    settings: tuple = HEVC_VVC_QPS
    bit_depth: int = 10
    config_path: str | None = None

    setting_name: ClassVar[str] = "qp"
    setting_range: ClassVar[tuple[float, float]] = (0, 63)
    encoder_programs: ClassVar[tuple[str, ...]] = ("EncoderAppStatic", "EncoderApp")
    decoder_programs: ClassVar[tuple[str, ...]] = ("DecoderAppStatic", "DecoderApp")
    install_hint: ClassVar[str] = (
        "build VTM (git clone https://vcgit.hhi.fraunhofer.de/jvet/VVCSoftware_VTM; cmake -B build "
        "-DCMAKE_BUILD_TYPE=Release; cmake --build build) and put its bin/ folder on PATH"
    )

    @classmethod
    def find_config(cls, config_path: str | None = None) -> str | None:
        """The all-intra configuration file: ``config_path``, ``$NIC_VTM_CFG``, or VTM's ``cfg/`` folder."""
        explicit = config_path or os.environ.get(VTM_CFG_ENV)
        if explicit:
            return explicit if os.path.isfile(explicit) else None
        encoder = cls._which(cls.encoder_programs)
        if encoder is None:
            return None
        folder = Path(encoder).resolve().parent
        for base in (folder, *list(folder.parents)[:3]):
            candidate = base / "cfg" / VTM_CFG_NAME
            if candidate.is_file():
                return str(candidate)
        return None

    @classmethod
    def is_available(cls) -> bool:
        return super().is_available() and cls.find_config() is not None

    @classmethod
    def missing_message(cls) -> str:
        if super().is_available():
            return (
                f"VTM's all-intra configuration {VTM_CFG_NAME} was not found; set {VTM_CFG_ENV}="
                f"/path/to/VVCSoftware_VTM/cfg/{VTM_CFG_NAME}"
            )
        return super().missing_message()

    def _config(self) -> str:
        config = self.find_config(self.config_path)
        if config is None:
            raise CodecUnavailableError(f"{self.name}: {self.missing_message()}")
        return config

    def _sample_dtype(self) -> str:
        return "<u2" if self.bit_depth > 8 else "u1"

    def encode_command(
        self, encoder: str, config: str, yuv_path: str, bin_path: str, height: int, width: int, qp: int
    ) -> list[str]:
        """The EncoderApp command that encodes one 4:4:4 YCbCr frame ``yuv_path`` into ``bin_path``."""
        depth = str(self.bit_depth)
        return [
            encoder, "-c", config, "-i", yuv_path, "-b", bin_path, "-o", os.devnull,
            "-wdt", str(width), "-hgt", str(height), "-q", str(qp), "-fr", "1", "-f", "1",
            "--InputChromaFormat=444", f"--InputBitDepth={depth}", f"--InternalBitDepth={depth}",
            f"--OutputBitDepth={depth}", "--ConformanceWindowMode=1",
        ]  # fmt: skip

    def decode_command(self, decoder: str, bin_path: str, yuv_path: str) -> list[str]:
        """The DecoderApp command that decodes ``bin_path`` into raw planar YCbCr ``yuv_path``."""
        return [decoder, "-b", bin_path, "-o", yuv_path, "-d", str(self.bit_depth)]

    def _encode(self, img: np.ndarray, setting: float) -> bytes:
        encoder, _ = self._programs()
        config = self._config()
        height, width = img.shape[:2]
        if max(height, width) > np.iinfo(np.uint16).max:
            raise ValueError(f"vtm: images up to 65535 px a side, got {height}x{width}; crop or tile the image")
        with tempfile.TemporaryDirectory(prefix="nic-vtm-") as tmp:
            yuv_path, bin_path = os.path.join(tmp, "in.yuv"), os.path.join(tmp, "out.bin")
            # VTM's raw files hold one byte per 8-bit sample, a little-endian 16-bit word above 8 bits
            rgb_to_ycbcr(img, self.bit_depth).astype(self._sample_dtype()).tofile(yuv_path)
            self._run(self.encode_command(encoder, config, yuv_path, bin_path, height, width, setting))
            return struct.pack(VTM_SIZE_HEADER, height, width) + Path(bin_path).read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        _, decoder = self._programs()
        data = bytes(data)
        header = struct.calcsize(VTM_SIZE_HEADER)
        if len(data) <= header:
            raise ValueError(f"vtm: {len(data)} bytes is no VTM stream; pass the bytes returned by encode()")
        height, width = struct.unpack(VTM_SIZE_HEADER, data[:header])
        with tempfile.TemporaryDirectory(prefix="nic-vtm-") as tmp:
            bin_path, yuv_path = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.yuv")
            Path(bin_path).write_bytes(data[header:])
            self._run(self.decode_command(decoder, bin_path, yuv_path))
            planes = np.fromfile(yuv_path, dtype=self._sample_dtype())
        if planes.size != 3 * height * width:
            raise RuntimeError(
                f"vtm: decoder wrote {planes.size} samples, expected 3 x {height} x {width}; "
                "check that the decoder matches the encoder's VTM version"
            )
        return ycbcr_to_rgb(planes.reshape(3, height, width), self.bit_depth)
