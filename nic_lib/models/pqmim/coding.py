r"""Entropy coding of PQ-MIM's codes: categorical CDF tables and CompressAI's rANS.

.. code-block:: none

    codes (H, W, M) ─► S steps of :func:`~.schedule.coding_schedule`; step s:
        MaskedTokenModel(codes of steps < s) ─► P(c) of group s ─► CDF tables ─► rANS
    stream = HEADER (7 bytes: H, W, S, transmitted steps, radius) + rANS bytes

:func:`encode_codes` / :func:`decode_codes` code with the MIM model (hybrid mode: the
decoder samples the steps that were not transmitted); :func:`bits_per_step` is the
same estimate without coding. :func:`encode_independent` / :func:`decode_independent`
and :func:`estimate_bits` are the independent per-codebook prior baseline,
:func:`fixed_length_bits` the fixed-length one. Written by hand: the per-symbol
categorical tables (quantized by CompressAI's ``pmf_to_quantized_cdf``, coded by its
rANS).
"""

from __future__ import annotations

import math
import struct

import numpy as np
import torch
from compressai._CXX import pmf_to_quantized_cdf as _pmf_to_quantized_cdf
from compressai.ans import BufferedRansEncoder, RansDecoder
from torch import Tensor

from .entropy_model import GLOBAL_ATTENTION, MaskedTokenModel
from .schedule import DEFAULT_STEPS, coding_schedule

#: Bits of the rANS coder's probabilities (CompressAI's default).
ENTROPY_CODER_PRECISION = 16
#: Hybrid mode: generated codes are sampled at this temperature (1 = the model's own
#: distribution; 0 = argmax).
HYBRID_TEMPERATURE = 1.0
#: Seed of the decoder's sampler in hybrid mode (the decoder must be deterministic).
HYBRID_SEED = 0
#: Header of a PQ-MIM bitstream: grid height, grid width (uint16), S, transmitted steps,
#: attention radius (uint8; 0 = global attention), big-endian: 7 bytes, counted in every bpp.
HEADER = struct.Struct(">HHBBB")


def categorical_cdfs(probs: Tensor, precision: int = ENTROPY_CODER_PRECISION) -> list[list[int]]:
    """rANS tables of categorical distributions, one per row.

    Each row's K probabilities plus an empty escape bin (CompressAI's table layout: the
    coder escapes values >= cdf_length − 2) are quantized by CompressAI's
    ``pmf_to_quantized_cdf``, which gives every bin at least one count, so every code
    stays codable whatever the model predicts. That floor also caps a code's cost at
    about ``precision`` bits: codes the model gives less than 2^-precision cost fewer real
    bits than their −log2 P (the stream then undercuts the estimate).

    Args:
        probs: (n, K) probabilities (rows sum to 1).
        precision: coder precision in bits.

    Returns:
        n CDF tables of K + 2 integers.
    """
    return [_pmf_to_quantized_cdf(row + [0.0], precision)
            for row in probs.double().tolist()]


def _code_table_args(cdfs: list[list[int]], K: int) -> tuple[list[int], list[int], list[int]]:
    """(indexes, cdf lengths, offsets) for ``encode_with_indexes``: symbol i uses table i."""
    n = len(cdfs)
    return list(range(n)), [K + 2] * n, [0] * n


#: Fewest symbols a CompressAI ``BufferedRansEncoder`` may flush: its output buffer holds
#: one 32-bit word per symbol, and a stream of n symbols of up to 16 bits needs up to
#: n/2 + 2 words (renormalisation words plus the 64-bit final state), so streams of 1-3
#: symbols overrun it (one symbol aborts the process with a double free).
_MIN_RANS_SYMBOLS = 4
#: Table of the padding symbols: two equiprobable values (the decoder never reads them).
_PAD_CDF = _pmf_to_quantized_cdf([0.5, 0.5, 0.0], ENTROPY_CODER_PRECISION)


def _flush(encoder: BufferedRansEncoder, symbols: int) -> bytes:
    """``encoder.flush()``, first padding a stream of fewer than :data:`_MIN_RANS_SYMBOLS`
    symbols with zeros (1 bit each, after the real symbols: decoders stop before them)."""
    pad = _MIN_RANS_SYMBOLS - symbols
    if pad > 0:
        encoder.encode_with_indexes([0] * pad, [0] * pad, [_PAD_CDF], [len(_PAD_CDF)], [0])
    return encoder.flush()


def _step_probs(entropy_model: MaskedTokenModel, codes: Tensor, visible: Tensor,
                group: Tensor, radius: int) -> Tensor:
    """(G, K) probabilities of a group's codes (unit indices) given the visible codes."""
    logits = entropy_model(codes[None], visible[None], radius)[0]  # (H, W, M, K)
    H, W, M, K = logits.shape
    return logits.reshape(H * W * M, K)[group].float().softmax(-1)


def _radius(entropy_model: MaskedTokenModel, radius: int | None) -> int:
    """The radius to code with: ``radius``, or the model's ``attention_radius`` when None."""
    r = int(getattr(entropy_model, "attention_radius", GLOBAL_ATTENTION) if radius is None
            else radius)
    if not 0 <= r <= 255:
        raise ValueError(f"attention radius must lie in 0..255 (one header byte; 0 = global "
                         f"attention); got {radius}")
    return r


@torch.no_grad()
def encode_codes(entropy_model: MaskedTokenModel, codes: Tensor, steps: int = DEFAULT_STEPS,
                 transmit_steps: int | None = None, radius: int | None = None) -> dict:
    """Entropy-code a code grid with the MIM model, step by step.

    The encoder runs exactly the computations the decoder will (one forward pass per
    step, batch of one), so both see bit-identical probabilities.

    Args:
        entropy_model: the MIM model (eval mode).
        codes: (H, W, M) long.
        steps: S.
        transmit_steps: code only the first s groups (hybrid mode); default all S.
        radius: attention radius (0 = global); default ``entropy_model.attention_radius``.
            Written in the header: the decoder uses the encoder's radius.

    Returns:
        ``{"bytes"`` (header + rANS stream), ``"bits_est"`` (Σ −log2 P of the coded codes),
        ``"bits_per_step"`` (list of S estimates; NaN for untransmitted steps), ``"radius"``
        (the radius used)``}``.
    """
    H, W, M = codes.shape
    s_max = steps if transmit_steps is None else int(transmit_steps)
    if not 0 <= s_max <= steps:
        raise ValueError(f"transmit_steps={transmit_steps} must lie in 0..steps={steps}")
    radius = _radius(entropy_model, radius)
    groups = coding_schedule(H, W, steps, M=M)
    flat = codes.reshape(-1)  # unit p·M + m
    visible = torch.zeros(H, W, M, dtype=torch.bool, device=codes.device)
    encoder = BufferedRansEncoder()
    per_step = [float("nan")] * steps
    coded = 0
    for s in range(s_max):
        group = groups[s]
        probs = _step_probs(entropy_model, codes, visible, group, radius)
        symbols = flat[group]
        # bits = Σ −log2 P(c)
        p = probs.double().gather(1, symbols[:, None].to(probs.device))
        per_step[s] = float(-torch.log2(p).sum())
        cdfs = categorical_cdfs(probs)
        indexes, lengths, offsets = _code_table_args(cdfs, entropy_model.K)
        encoder.encode_with_indexes(symbols.tolist(), indexes, cdfs, lengths, offsets)
        coded += len(group)
        visible.view(-1)[group] = True
    stream = _flush(encoder, coded)
    header = HEADER.pack(H, W, steps, s_max, radius)
    return {"bytes": header + stream, "bits_est": float(np.nansum(per_step)),
            "bits_per_step": per_step, "radius": radius}


@torch.no_grad()
def decode_codes(entropy_model: MaskedTokenModel, stream: bytes,
                 temperature: float = HYBRID_TEMPERATURE, seed: int = HYBRID_SEED) -> Tensor:
    """Decode a stream of :func:`encode_codes`; generate untransmitted steps (hybrid mode).

    The grid size, S, the transmitted steps and the attention radius come from the stream's
    header; the model's own ``attention_radius`` is not used.

    Args:
        entropy_model: the same MIM model as the encoder's (eval mode).
        stream: bytes from :func:`encode_codes`.
        temperature: sampling temperature of generated steps (0 = argmax).
        seed: seed of the sampler of generated steps.

    Returns:
        codes (H, W, M) long.

    Raises:
        ValueError: the stream is too short to hold a header.
    """
    if len(stream) < HEADER.size:
        raise ValueError(f"a PQ-MIM stream starts with a {HEADER.size}-byte header; got "
                         f"{len(stream)} bytes (was it written by encode_codes?)")
    H, W, steps, s_max, radius = HEADER.unpack(stream[:HEADER.size])
    M, K = entropy_model.M, entropy_model.K
    device = entropy_model.head.weight.device
    groups = coding_schedule(H, W, steps, M=M)
    codes = torch.zeros(H, W, M, dtype=torch.long, device=device)
    flat = codes.view(-1)
    visible = torch.zeros(H, W, M, dtype=torch.bool, device=device)
    decoder = RansDecoder()
    decoder.set_stream(stream[HEADER.size:])
    generator = torch.Generator().manual_seed(seed)
    for s, group in enumerate(groups):
        probs = _step_probs(entropy_model, codes, visible, group, radius)
        if s < s_max:
            cdfs = categorical_cdfs(probs)
            indexes, lengths, offsets = _code_table_args(cdfs, K)
            values = decoder.decode_stream(indexes, cdfs, lengths, offsets)
            values = torch.tensor(values, dtype=torch.long, device=device)
        else:
            values = _sample(probs.cpu(), temperature, generator).to(device)
        flat[group] = values
        visible.view(-1)[group] = True
    return codes


def _sample(probs: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """One code per row of (n, K) probabilities: argmax at 0, else p^(1/T) renormalised."""
    if temperature <= 0:
        return probs.argmax(-1)
    # p_T ∝ p^(1/T)
    logits = probs.clamp_min(1e-30).log() / temperature
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@torch.no_grad()
def bits_per_step(entropy_model: MaskedTokenModel, codes: Tensor,
                  steps: int = DEFAULT_STEPS, radius: int | None = None) -> list[float]:
    """Σ −log2 P of each step's codes given the previous steps (no coding).

    Args:
        entropy_model: the MIM model.
        codes: (H, W, M) long.
        steps: S.
        radius: attention radius (0 = global); default ``entropy_model.attention_radius``.

    Returns:
        S bit counts (their sum is the MIM rate estimate).
    """
    H, W, M = codes.shape
    flat = codes.reshape(-1)
    visible = torch.zeros(H, W, M, dtype=torch.bool, device=codes.device)
    radius = _radius(entropy_model, radius)
    out = []
    for group in coding_schedule(H, W, steps, M=M):
        probs = _step_probs(entropy_model, codes, visible, group, radius)  # (G, K)
        p = probs.double().gather(-1, flat[group][..., None])
        out.append(float(-torch.log2(p).sum()))
        visible.view(-1)[group] = True
    return out


def estimate_bits(probs: Tensor, codes: Tensor) -> float:
    """Σ −log2 P(code) of codes under per-codebook probabilities (the independent prior).

    Args:
        probs: (M, K) probabilities of each codebook's entries.
        codes: (..., M) long.

    Returns:
        Bits.
    """
    flat = codes.reshape(-1, probs.shape[0])
    p = probs.double()[torch.arange(probs.shape[0]), flat]
    return float(-torch.log2(p).sum())


def fixed_length_bits(codes: Tensor, K: int) -> float:
    """Fixed-length coding: log2 K bits per code."""
    return codes.numel() * math.log2(K)


def encode_independent(probs: Tensor, codes: Tensor) -> bytes:
    """rANS stream of codes (..., M), each coded with its codebook's fixed probabilities.

    Args:
        probs: (M, K) independent prior.
        codes: (..., M) long.

    Returns:
        The stream (no header: the grid size is the caller's).
    """
    M, K = probs.shape
    cdfs = categorical_cdfs(probs)
    symbols = codes.reshape(-1, M)
    indexes = torch.arange(M).repeat(symbols.shape[0]).tolist()
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols.reshape(-1).tolist(), indexes, cdfs, [K + 2] * M, [0] * M)
    return _flush(encoder, len(indexes))


def decode_independent(probs: Tensor, stream: bytes, positions: int) -> Tensor:
    """Inverse of :func:`encode_independent`: (positions, M) codes."""
    M, K = probs.shape
    cdfs = categorical_cdfs(probs)
    decoder = RansDecoder()
    decoder.set_stream(stream)
    values = decoder.decode_stream(torch.arange(M).repeat(positions).tolist(), cdfs,
                                   [K + 2] * M, [0] * M)
    return torch.tensor(values, dtype=torch.long).reshape(positions, M)
