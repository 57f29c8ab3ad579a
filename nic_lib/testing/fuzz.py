"""Fuzzing the .nic reader: mutate valid files, decode each, classify what happens.

Every mutant must either decode to an image of the size its header announces or raise
a :class:`nic_lib.container.NicError`; any other exception, or a decode that outlives
:data:`DECODE_TIMEOUT_S`, is a failure. ``tests/test_fuzz.py`` runs a few hundred cases
of this generator; ``benchmarks/fuzz_nic.py`` runs as many as you ask, and
``benchmarks/decode_speed.py`` makes its decompression bombs with :func:`forge_size`.

Mutation kinds (:data:`KINDS`), drawn with a seeded RNG:

- ``empty``, ``random``: no file; random bytes (alone, after the magic, or after the
  magic and version byte);
- ``truncate``: the first k bytes, for random k;
- ``bitflip`` / ``byteset``: 1-8 bits flipped / bytes overwritten anywhere (CRC left stale);
- ``insert`` / ``delete``: bytes inserted or deleted anywhere;
- ``forged-*``: the same mutations with the CRC recomputed, so they reach the deeper
  checks; ``forged-stream`` rewrites a stream (flip, cut, extend, replace) and re-packs
  with correct lengths and CRC, so the model's entropy decoder sees garbage;
- ``forged-large``: decompression bombs. The header is rewritten to announce a larger
  image (padding and latent shape made consistent, CRC recomputed, streams kept), of
  log-uniform pixel count up to the format's maximum, sometimes exactly the maximum or
  a side beyond :data:`~nic_lib.container.MAX_IMAGE_SIDE`. Every decode runs within
  :data:`FUZZ_MAX_MEMORY`: a bomb must be refused up front (``NicBudgetError``) when
  :func:`~nic_lib.container.decode_memory_bytes` exceeds it, and decode otherwise.

The models are tiny and untrained (N=8, M=12): what is fuzzed is the reader and the
decoding path, which do not depend on the weights' quality.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import torch

from nic_lib import container
from nic_lib.models import build_model, default_config

#: Seconds one decode may take before it counts as a hang (a 64x64 tiny-model decode
#: takes milliseconds; the bound is generous for a loaded machine).
DECODE_TIMEOUT_S = 60
#: Side of the fuzzed image: one 64x64 block, the smallest the models code.
IMAGE_SIDE = 64
#: Tiny widths: decoding stays in milliseconds, so thousands of cases run in minutes.
TINY_WIDTHS = {"N": 8, "M": 12}
#: Models fuzzed: the hyperprior (fast) and the context model (serial/wavefront coder).
MODELS = ("mbt2018-mean", "mbt2018")
#: Mutation kinds, drawn uniformly.
KINDS = ("empty", "random", "truncate", "bitflip", "byteset", "insert", "delete",
         "forged-bitflip", "forged-byteset", "forged-insert", "forged-delete",
         "forged-stream", "forged-large")
#: Outcome label of a mutant that decoded to an image of its header's size.
DECODED = "decoded"
#: Working-memory budget of every fuzzed decode: images up to ~1 MP decode (in well
#: under a second at the tiny widths), larger bombs must be refused.
FUZZ_MAX_MEMORY = 64 * 2**20
#: Fraction of forged-large mutants announcing exactly the format's maximum image.
MAX_SIZE_SHARE = 0.25


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    """An untrained tiny model with coder tables, in eval mode.

    Args:
        name: registry key.
        seed: torch seed for the initial weights.

    Returns:
        The model.
    """
    torch.manual_seed(seed)
    config = default_config(name, 1, "cpu")
    config.update(TINY_WIDTHS)
    model = build_model(name, **config)
    model.update(force=True)
    return model.eval()


def valid_file(model: torch.nn.Module, seed: int = 0) -> bytes:
    """A .nic file of a random 64x64 image (quality 1, profile cpu)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    return container.encode_image(model, img, None, 1, "cpu")


def fix_crc(data: bytes) -> bytes:
    """Recompute the trailing CRC32 (a forger's step)."""
    body = data[:-4] if len(data) >= 4 else data
    return body + zlib.crc32(body).to_bytes(4, "big")


def _raw_mutation(kind: str, data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    n = len(buf)
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(n))
            buf[i] ^= 1 << int(rng.integers(8))
    elif kind == "byteset":
        for _ in range(int(rng.integers(1, 9))):
            buf[int(rng.integers(n))] = int(rng.integers(256))
    elif kind == "insert":
        i = int(rng.integers(n + 1))
        buf[i:i] = rng.bytes(int(rng.integers(1, 17)))
    elif kind == "delete":
        i = int(rng.integers(n))
        del buf[i : i + int(rng.integers(1, 17))]
    return bytes(buf)


def _forged_stream(data: bytes, rng: np.random.Generator) -> bytes:
    """Rewrite one stream and re-pack with correct lengths and CRC."""
    header, streams = container.unpack(data)
    i = int(rng.integers(len(streams)))
    s = bytearray(streams[i])
    how = int(rng.integers(4))
    if how == 0 and s:
        for _ in range(int(rng.integers(1, 5))):
            s[int(rng.integers(len(s)))] ^= 1 << int(rng.integers(8))
    elif how == 1:
        s = s[: int(rng.integers(len(s) + 1))]
    elif how == 2:
        s += rng.bytes(int(rng.integers(1, 64)))
    else:
        s = bytearray(rng.bytes(int(rng.integers(0, 2 * len(s) + 8))))
    streams[i] = bytes(s)
    return container.pack(header, streams)


def forge_size(data: bytes, height: int, width: int) -> bytes:
    """A valid file's header rewritten to announce a height x width image, CRC fixed.

    The padding and latent shape are made consistent with the new size (the ratio of
    coded size to latent shape is kept), so only the budget stands between the file
    and a decoder allocating for the announced image. A side beyond the format's
    limit is written as it is (the reader must refuse it).

    Args:
        data: a valid .nic file.
        height, width: the size to announce, 1..65535.

    Returns:
        The forged file's bytes.
    """
    header, streams = container.unpack(data)
    ratio = header.padded_height // header.latent_shape[0]
    pad_b, pad_r = (-height) % ratio, (-width) % ratio
    fields = (height, width, pad_b, pad_r, (height + pad_b) // ratio, (width + pad_r) // ratio)
    # offset of the fixed tail: magic, version, name, quality, profile, fingerprint
    start = (len(container.MAGIC) + 2 + len(header.model) + 2 + len(header.profile)
             + container.FINGERPRINT_BYTES)
    tail = struct.pack(">HHBBHH", *fields)
    return fix_crc(data[:start] + tail + data[start + len(tail):])


def _forged_large(data: bytes, rng: np.random.Generator) -> bytes:
    """A bomb: the format's largest image, a random large one, or a side over the limit."""
    side, most = container.MAX_IMAGE_SIDE, container.MAX_IMAGE_PIXELS
    draw = rng.random()
    if draw < MAX_SIZE_SHARE:
        height = int(rng.choice([most // side, most // 4096, most // 8192, side]))
        return forge_size(data, height, most // height)
    if draw < MAX_SIZE_SHARE + 0.1:  # beyond the format: the reader refuses it
        return forge_size(data, int(rng.integers(side + 1, 1 << 16)), int(rng.integers(1, 64)))
    pixels = np.exp(rng.uniform(np.log(IMAGE_SIDE**2), np.log(most)))
    height = int(np.clip(np.exp(rng.uniform(np.log(pixels / side), np.log(side))), 1, side))
    return forge_size(data, height, int(np.clip(pixels // height, 1, side)))


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One mutant of a valid file.

    Args:
        data: a valid .nic file.
        kind: one of :data:`KINDS`.
        rng: the random generator.

    Returns:
        The mutated bytes.
    """
    if kind == "empty":
        return b""
    if kind == "random":  # junk; after the magic; after the magic and version byte
        junk = rng.bytes(int(rng.integers(1, 2 * len(data))))
        prefix = (b"", container.MAGIC, data[: len(container.MAGIC) + 1])[int(rng.integers(3))]
        return prefix + junk
    if kind == "truncate":
        return data[: int(rng.integers(len(data)))]
    if kind == "forged-stream":
        return _forged_stream(data, rng)
    if kind == "forged-large":
        return _forged_large(data, rng)
    if kind.startswith("forged-"):
        return fix_crc(_raw_mutation(kind.removeprefix("forged-"), data, rng))
    return _raw_mutation(kind, data, rng)


def mutants(data: bytes, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """``count`` (kind, mutant) pairs from a seeded RNG, every kind at least once.

    Args:
        data: a valid .nic file.
        count: number of mutants.
        seed: RNG seed (same seed, same mutants).

    Yields:
        ``(kind, bytes)``.
    """
    rng = np.random.default_rng(seed)
    for i in range(count):
        kind = KINDS[i] if i < len(KINDS) else KINDS[int(rng.integers(len(KINDS)))]
        yield kind, mutate(data, kind, rng)


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (SIGALRM; Unix only).

    A hang inside one C++ call is cut when it returns to Python; the coders' C++ calls
    are bounded (see ``nic_lib.container._guarded``), so a hang would be a Python loop.
    """
    def on_alarm(signum, frame):
        raise TimeoutError(f"decode took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def classify(data: bytes, model: torch.nn.Module, timeout_s: int = DECODE_TIMEOUT_S,
             max_memory: int = FUZZ_MAX_MEMORY) -> str:
    """Decode one mutant within a budget and name the outcome.

    Args:
        data: candidate file bytes.
        model: the model of the valid file it came from.
        timeout_s: hang bound.
        max_memory: the decode's working-memory budget (bytes).

    Returns:
        :data:`DECODED` or the :class:`~nic_lib.container.NicError` subclass name.

    Raises:
        AssertionError: the decoded image does not have the header's size, a file
            within the budget was refused for it, or one beyond it was not.
        Anything else the decoder raised (a bug): TimeoutError for a hang.
    """
    with time_limit(timeout_s):
        try:
            img = container.decode_image(data, model, max_memory=max_memory)
        except container.NicBudgetError:
            need = container.decode_memory_bytes(container.read_header(data), model)
            assert need > max_memory, f"refused at {need} B, within the budget {max_memory} B"
            return container.NicBudgetError.__name__
        except container.NicError as exc:
            return type(exc).__name__
    header = container.read_header(data)
    need = container.decode_memory_bytes(header, model)
    assert need <= max_memory, f"decoded although it needs {need} B > budget {max_memory} B"
    assert img.shape == (header.height, header.width, 3) and img.dtype == np.uint8, (
        f"decoded {img.shape} {img.dtype}, header says {header.height}x{header.width}")
    return DECODED


def fuzz(name: str, cases: int, seed: int) -> tuple[collections.Counter, list[str]]:
    """Fuzz one model's files.

    Args:
        name: registry key of the model.
        cases: number of mutants.
        seed: RNG seed.

    Returns:
        ``(outcomes, failures)``: counts per (kind, outcome) and a description of every
        mutant that raised something other than a NicError.
    """
    model = tiny_model(name, seed)
    data = valid_file(model, seed)
    outcomes: collections.Counter = collections.Counter()
    failures = []
    for i, (kind, mutant) in enumerate(mutants(data, cases, seed)):
        try:
            outcomes[kind, classify(mutant, model)] += 1
        except Exception as exc:  # noqa: BLE001  a failure to report, not to hide
            outcomes[kind, "FAILURE " + type(exc).__name__] += 1
            failures.append(f"{name} case {i} ({kind}, {len(mutant)} B): "
                            f"{type(exc).__name__}: {exc}")
    return outcomes, failures
