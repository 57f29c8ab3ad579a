"""Reduced precision for the training forward (``--precision bf16``).

Parameters, gradients, optimizer state, densities, likelihoods and the loss stay float32;
only the model's convolution stacks compute under bfloat16 autocast.

bfloat16 pays only where the hardware computes it: on a CPU without AVX512-BF16 or AMX
(an AVX2-only AMD EPYC here) oneDNN emulates it, and a step of mbt2018 at N = 96, M = 192
(128² crops, batch 8, one thread) took 11.4 s in bf16 against 1.45 s in fp32. A run asked
for ``bf16`` therefore computes in fp32 on such a machine (:func:`for_this_machine`), says
so once, and records it; the two give the same losses to ~3 digits (the tests of this
module), so a run may move between machines.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import torch

from .config import PRECISIONS

#: The networks ``--precision bf16`` runs under bfloat16 autocast: every convolution
#: stack of the model. The entropy bottleneck and the Gaussian conditional are not among
#: them, so densities, likelihoods and the loss stay in float32. Of PQ-MIM's, g_a and g_s
#: (its stage A, :func:`nic_lib.training.pqmim.stage_a.train_step`): the product quantizer
#: and the MIM transformer (``entropy_model``) are not among them either.
REDUCED_PRECISION_MODULES = ("g_a", "g_s", "h_a", "h_s", "context_prediction",
                             "entropy_parameters")
#: Network -> module after it that casts the pair's output to float32 instead, when the
#: model has it: g_a's bfloat16 output is multiplied by the gain in bfloat16 first.
CAST_AFTER_GAIN = {"g_a": "gain"}


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether the device computes bfloat16 convolutions natively (not emulated)."""
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.lru_cache(maxsize=None)
def _say_fallback(device_type: str) -> None:
    print(f"--precision bf16: this {device_type} has no native bfloat16 "
          f"(capability {torch.backends.cpu.get_cpu_capability()}), where bf16 is ~8x slower "
          "than fp32: computing in fp32", file=sys.stderr, flush=True)


def for_this_machine(precision: str, device_type: str = "cpu") -> str:
    """The precision a run asked for as ``precision`` computes in on this machine:
    ``"bf16"`` only where :func:`native_bf16`, else ``"fp32"`` (said once on stderr)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and not native_bf16(device_type):
        _say_fallback(device_type)
        return "fp32"
    return precision


@contextlib.contextmanager
def reduced_precision(model: torch.nn.Module, precision: str = "fp32", device_type: str = "cpu"):
    """The model's networks compute in bfloat16 inside this block; everything else in float32.

    Mixed precision as on accelerators: parameters, gradients and optimizer state stay
    float32; only the forward of the networks in :data:`REDUCED_PRECISION_MODULES` runs
    under ``torch.autocast(bfloat16)`` (convolutions in bfloat16), and each network's output
    is cast back to float32, so that the densities of y and z, the likelihoods, the bits and
    the distortion are computed exactly as in fp32. On a CPU with AMX or AVX512-BF16
    (oneDNN) a training step of mbt2018 (128² crops, batch 8, one thread) is 2.0× faster at
    N = 64, M = 192 and 2.5× at N = 96 (``benchmarks/precision_throughput.py``: 0.39 → 0.19
    and 0.58 → 0.23 s/step, alternating in one process on a loaded machine). Used for the
    training forward only: evaluation, ``update()`` and the entropy coder never see it.

    Implemented with a forward pre-hook (enter autocast) and a forward hook (leave it, cast
    the output) on each network, removed when the block ends, so the model's state dict and
    code are untouched. A variable-rate model multiplies g_a's output by its gain
    (``y = g_a(x) ⊙ γ_l``, :mod:`nic_lib.models.variable_rate`): there g_a's bfloat16 output
    goes to the gain uncast, the product is taken in bfloat16 and the gain's output is cast
    to float32 (:data:`CAST_AFTER_GAIN`), the arithmetic of every run trained so far (when the
    gain was a hook on g_a, it ran before this cast). The inverse gain multiplies g_s's
    float32 input before g_s enters autocast.

    Args:
        model: the training model (unwrapped: DDP / compile wrappers call into it).
        precision: ``"fp32"`` (a no-op) or ``"bf16"``.
        device_type: ``"cpu"`` or ``"cuda"``, for ``torch.autocast``.
    """
    if precision == "fp32":
        yield
        return
    if precision != "bf16":
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    handles, active = [], []

    def enter(module, args):
        ctx = torch.autocast(device_type, dtype=torch.bfloat16)
        ctx.__enter__()
        active.append(ctx)

    def leave(module, args, output):
        active.pop().__exit__(None, None, None)
        return output.float()

    def leave_uncast(module, args, output):
        active.pop().__exit__(None, None, None)

    def cast(module, args, output):
        return output.float()

    for name in REDUCED_PRECISION_MODULES:
        net = getattr(model, name, None)
        if isinstance(net, torch.nn.Module):
            after = getattr(model, CAST_AFTER_GAIN.get(name, ""), None)
            if isinstance(after, torch.nn.Module):
                handles += [net.register_forward_pre_hook(enter),
                            net.register_forward_hook(leave_uncast),
                            after.register_forward_hook(cast)]
            else:
                handles += [net.register_forward_pre_hook(enter), net.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        while active:  # a forward that raised left its autocast open
            active.pop().__exit__(None, None, None)

