"""Learned codecs in the same tidy tables as the classic ones.

:func:`nic_lib.codecs.rate_sweep` gives one row per image x codec x setting for JPEG &
co.; :func:`rate_sweep` here gives the same columns for models of :mod:`nic_lib.models`
(setting = quality), so :func:`nic_lib.rd.rd_table` and the BD-rate tools treat both
alike. Two extra columns keep the learned codec honest:

- ``bpp`` is measured on the real bitstream: 8 · Σ len(strings) / (H·W), the rANS
  payload of every latent (CompressAI's convention: no container header; the ``.nic``
  file adds a fixed header of a few dozen bytes).
- ``bpp_est`` is the entropy model's estimate, Σ −log2 p(ŷ) / (H·W) of the symbols the
  coder writes. Real ≥ estimated (an entropy coder cannot beat the model's own
  probabilities by more than a few bytes of rounding) and close to it.

Both, the padding (edge replication to the model's downsampling factor) and the coding of
one image (:func:`nic_lib.coding.code_image`) are :mod:`nic_lib.coding`'s, the learned
codecs' one path; a checkpoint's digest for result caches is
:func:`nic_lib.models.checkpoints.checkpoint_digest`.

PQ-MIM takes the same sweeps: its shipped rate points (one file each) are the qualities of
one family, lowest rate first (:func:`quality_models` with ``"pqmim"``,
:func:`nic_lib.models.pqmim.rate_points`); its ``bpp_est`` is its own Σ −log2 P over the
MIM steps, and every decoded image comes with a check that the decoder read the codes the
encoder wrote (:class:`nic_lib.coding.DecodeMismatchError`).

Every function runs on the device its model sits on (``get_model(..., device=DEVICE)``;
:func:`nic_lib.models.default_device` picks a GPU when there is one): the image goes
there, the results come back to the CPU. Where the coder's parameters are computed, and why
that keeps a bitstream decodable on another device, is :mod:`nic_lib.models.google`'s
business; ``tests/test_device.py`` states the property.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nic_lib import cache, metrics
from nic_lib.coding import code_image, estimated_likelihoods, model_input
from nic_lib.models import checkpoints, hub, identity, pqmim, variable_rate

__all__ = [
    "SWEEP_COLUMNS",
    "bits_by_latent",
    "cached_rate_sweep",
    "estimated_bits_by_part",
    "latent_statistics",
    "quality_models",
    "rate_sweep",
]

#: Columns of :func:`rate_sweep`: those of ``nic_lib.codecs.rate_sweep`` plus the estimate.
SWEEP_COLUMNS = ("image", "codec", "setting", "bytes", "bpp", "bpp_est", "psnr_rgb",
                 "ms_ssim", "encode_s", "decode_s")


def rate_sweep(
    images: Iterable[tuple[str, np.ndarray]],
    models: Mapping[str, Mapping[int, torch.nn.Module]],
    decode: bool | int = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Code every image with every model at every quality; one tidy row each.

    Args:
        images: ``(name, uint8 (H, W, 3))`` pairs.
        models: ``{label: {quality: model}}``, e.g.
            ``{"mbt2018": {q: get_model("mbt2018", q) for q in range(1, 7)}}``; the label
            becomes the ``codec`` column, the quality the ``setting`` column.
        decode: True (default) decodes every bitstream, and the metrics come from the
            real decoder's output; an int decodes only the first that many images and
            takes the others from the forward pass (see :func:`nic_lib.coding.code_image` for the
            models where that differs); False decodes none.
        progress: show a tqdm bar.

    Returns:
        DataFrame with :data:`SWEEP_COLUMNS`.

    Raises:
        nic_lib.coding.DecodeMismatchError: a decoder read other symbols than its encoder
            wrote (PQ-MIM, whose decoder returns its codes).
    """
    images = list(images)
    total = len(images) * sum(len(v) for v in models.values())
    rows = []
    with tqdm(total=total, disable=not progress, desc="learned codecs", unit="image") as bar:
        for label, by_quality in models.items():
            for quality, model in by_quality.items():
                for i, (name, img) in enumerate(images):
                    run_decoder = decode is True or (decode is not False and i < int(decode))
                    r = code_image(model, img, decode=run_decoder)
                    rows.append({
                        "image": name, "codec": label, "setting": quality,
                        "bytes": r["bytes"], "bpp": r["bpp"], "bpp_est": r["bpp_est"],
                        "psnr_rgb": metrics.psnr(img, r["x_hat"]),
                        # NaN below MS-SSIM's minimum side, as codecs.rate_sweep
                        "ms_ssim": (metrics.ms_ssim(img, r["x_hat"])
                                    if min(img.shape[:2]) >= metrics.MS_SSIM_MIN_SIDE
                                    else float("nan")),
                        "encode_s": r["encode_s"], "decode_s": r["decode_s"]})
                    bar.update(1)
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


@torch.no_grad()
def latent_statistics(model: torch.nn.Module, img: np.ndarray) -> dict[str, np.ndarray]:
    """Per-latent maps of what a model's entropy model predicts for one image.

    Works for the Gaussian models with a ``gaussian_conditional`` (hyperprior, mean-scale,
    joint, context-only; GMM reports its bits only). Everything is in the coded domain
    (after any gain unit): the symbols the coder sees.

    Args:
        model: a model in eval mode.
        img: uint8 (H, W, 3).

    Returns:
        ``{"bits": (M, h, w) −log2 p(ŷ), "y_hat": (M, h, w)}`` plus, when the model
        predicts them, ``"scales"`` and ``"means"`` (M, h, w).
    """
    x = model_input(model, img)
    captured: dict[str, torch.Tensor] = {}
    gc = getattr(model, "gaussian_conditional", None)
    handle = None
    if gc is not None:
        def grab(module, args, kwargs, output):
            # GaussianConditional.forward(inputs, scales, means=None)
            captured["scales"] = args[1] if len(args) > 1 else kwargs["scales"]
            means = args[2] if len(args) > 2 else kwargs.get("means")
            if means is not None:
                captured["means"] = means
            captured["likelihoods"] = output[1]
            captured["y_hat"] = output[0]
        handle = gc.register_forward_hook(grab, with_kwargs=True)
    try:
        out = model(x)
    finally:
        if handle is not None:
            handle.remove()
    likelihoods = captured.get("likelihoods", out["likelihoods"]["y"])
    result = {"bits": (-torch.log2(likelihoods))[0].cpu().numpy()}
    if "y_hat" in captured:
        result["y_hat"] = captured["y_hat"][0].cpu().numpy()
    for key in ("scales", "means"):
        if key in captured:
            result[key] = captured[key][0].cpu().numpy()
    return result


#: Bits above which one latent's −log2 p exceeds what the rANS coder pays for it: a
#: symbol outside a CDF table is coded as the escape symbol (its probability quantized to
#: at least 2^-16) plus its overflow in bypass bits, while −log2 p keeps growing with the
#: distance (to ~29.9 bits at CompressAI's likelihood floor 1e-9).
TAIL_BITS = 16.0


@torch.no_grad()
def tail_bits(model: torch.nn.Module, img: np.ndarray, threshold: float = TAIL_BITS) -> dict:
    """How much of a model's estimated rate sits in latents it predicted very badly.

    The estimate Σ −log2 p and the real bitstream part ways where the entropy model is
    overconfident: a latent far outside its predicted scale has a tiny likelihood, and
    −log2 p counts more bits for it than the coder's escape code spends. A large share
    of bits in such latents makes the real bitstream *smaller* than the estimate, the
    sign of a mis-fitted entropy model (not of a good coder). The likelihoods are those
    behind :func:`nic_lib.coding.code_image`'s ``bpp_est`` (the coded latents' for the context models).

    Args:
        model: a model in eval mode.
        img: uint8 (H, W, 3).
        threshold: bits per latent counted as "tail" (default :data:`TAIL_BITS`).

    Returns:
        ``{"bpp_est", "tail_fraction" (of all latents, every likelihood tensor),
        "tail_share" (of the estimated bits), "at_floor" (latents at the likelihood
        floor 1e-9)}``.
    """
    h, w = img.shape[:2]
    likelihoods, _ = estimated_likelihoods(model, model_input(model, img))
    bits = torch.cat([-torch.log2(v).reshape(-1) for v in likelihoods.values()])
    tail = bits > threshold
    total = float(bits.sum())
    return {"bpp_est": total / (h * w), "tail_fraction": float(tail.float().mean()),
            "tail_share": float(bits[tail].sum()) / total if total > 0 else 0.0,
            "at_floor": int((bits >= -math.log2(1.01e-9)).sum())}


@torch.no_grad()
def estimated_bits_by_part(model: torch.nn.Module, img: np.ndarray) -> dict[str, float]:
    """Σ −log2 p of each coded part of one image: the latents y and the side information z.

    The same likelihoods as :func:`nic_lib.coding.code_image`'s ``bpp_est`` (the coder's latents for the
    context models), split by their key in the model's ``likelihoods`` dict.

    Args:
        model: a model in eval mode.
        img: uint8 (H, W, 3).

    Returns:
        ``{part: bits}``, e.g. ``{"y": ..., "z": ...}`` (``{"y": ...}`` for a model without
        side information).
    """
    likelihoods, _ = estimated_likelihoods(model, model_input(model, img))
    return {part: float(-torch.log2(v).sum()) for part, v in likelihoods.items()}


def bits_by_latent(stats: Mapping[str, np.ndarray], reduce: str = "sum") -> np.ndarray:
    """Collapse an (M, h, w) bits map over channels: the spatial map of where bits go."""
    bits = stats["bits"]
    return bits.sum(axis=0) if reduce == "sum" else bits.mean(axis=0)



def quality_models(source, qualities: Sequence[int] | None = None,
                   device: str | torch.device = "cpu") -> dict[int, torch.nn.Module]:
    """One model per quality: the levels of a variable-rate checkpoint, or PQ-MIM's rate points.

    Args:
        source: a checkpoint path (e.g. ``checkpoints/mbt2018/n96-ctx3.pt``: a copy of its
            model at each level; ``checkpoints/mbt2018/n96.pt``: the main line's own 8
            levels, whatever else is shipped); a model key, which reads the cpu profile's
            files as :func:`~nic_lib.models.get_model` does, each quality from the file
            that holds it (:func:`nic_lib.models.hub.cpu_checkpoint_for`: ``n96-top.pt``
            where shipped, else ``n96.pt``); or ``"pqmim"``: the single-rate files of
            ``checkpoints/pqmim/`` as qualities 1..n, lowest rate first
            (:func:`nic_lib.models.pqmim.rate_points`: ``M2-K256``, ``M4-K256``, ``M8-K256``).
        qualities: the qualities wanted; default every quality the checkpoint (or, for a
            key, its files; or the folder) holds.
        device: where to put the models (their coder tables are built on the CPU first).

    Returns:
        ``{quality: model}`` in eval mode with coder tables built.

    Raises:
        CheckpointNotFoundError: a model key without a variable-rate checkpoint (or whose
            folder's file holds another model), or ``"pqmim"`` without trained rate points.
        ValueError: a quality the checkpoint does not hold.
    """
    if str(source) == "pqmim":
        return _rate_point_models(qualities, device)
    if str(source).endswith(".pt"):
        path = Path(source)
        return _levels(path, list(qualities) if qualities is not None else None, device)
    # a model key: each quality from the cpu-profile file that holds it
    wanted = list(qualities) if qualities is not None else hub.cpu_qualities(source)
    if not wanted:  # nothing shipped: name the main file and the command
        _levels(hub.variable_rate_checkpoint_path(source), None, device)
    by_file: dict[Path, list[int]] = {}
    for q in wanted:
        by_file.setdefault(hub.cpu_checkpoint_for(source, q), []).append(q)
    models = {}
    for path, qs in by_file.items():
        models.update(_levels(path, qs, device, name=source))
    return {q: models[q] for q in wanted}


def _levels(path: Path, qualities: list[int] | None, device,
            name: str | None = None) -> dict[int, torch.nn.Module]:
    """``{quality: model}`` of one variable-rate file, a copy per level (loaded once);
    every level it holds when ``qualities`` is None; ``name``: the model it must hold."""
    if not path.is_file():
        raise checkpoints.CheckpointNotFoundError(
            f"no variable-rate checkpoint at {path}; train the cpu profile with "
            "`python scripts/train_cpu_profile.py` (see README)")
    model, checkpoint = checkpoints.load_checkpoint(path)
    held = list(checkpoint["config"].get("qualities") or [])
    if name is not None and checkpoint["model"] != name:
        raise checkpoints.CheckpointNotFoundError(
            f"{path} holds {checkpoint['model']!r}, not {name!r}; move it out of that folder")
    wanted = list(qualities) if qualities is not None else held
    missing = [q for q in wanted if q not in held]
    if missing:
        raise ValueError(f"{path} holds qualities {held}; {missing} are not among them")
    return {q: variable_rate.set_rate_level(copy.deepcopy(model), held.index(q)).to(device) for q in wanted}


def _rate_point_models(qualities: Sequence[int] | None, device) -> dict[int, torch.nn.Module]:
    """PQ-MIM's rate points as ``{quality: model}`` (see :func:`quality_models`)."""
    paths = pqmim.rate_points()
    if not paths:
        raise checkpoints.CheckpointNotFoundError(
            f"no PQ-MIM rate points in {pqmim.checkpoint_dir()}; train one with "
            "`python -m nic_lib.train_pqmim --M 4 --K 256 --export checkpoints/pqmim/M4-K256.pt`")
    wanted = list(qualities) if qualities is not None else list(paths)
    missing = [q for q in wanted if q not in paths]
    if missing:
        raise ValueError(f"PQ-MIM's rate points are qualities {list(paths)} "
                         f"({', '.join(p.stem for p in paths.values())}); {missing} are not among them")
    return {q: hub.model_from_checkpoint(paths[q], 1, device)[0] for q in wanted}


def cached_rate_sweep(
    results_dir,
    label: str,
    family: Mapping[int, torch.nn.Module],
    digest: str,
    images: Sequence[tuple[str, np.ndarray]],
    context: Mapping,
    decode: bool | int = True,
    refresh: bool = False,
) -> pd.DataFrame:
    """:func:`rate_sweep` of one model, cached in ``results_dir/learned_<label>.csv``.

    One table per model, so retraining or adding a model recomputes only that one, and
    several processes can fill the cache for different models in parallel (the notebook
    then reads it).

    Args:
        results_dir: folder of the cached tables.
        label: the model's name in the tables.
        family: ``{quality: model}`` (:func:`quality_models`).
        digest: identifies the files the family came from (e.g.
            :func:`nic_lib.models.checkpoints.checkpoint_digest` of a variable-rate file; for
            PQ-MIM's rate points, ``{q: checkpoint_digest(p) for q, p in
            pqmim.rate_points().items()}``): any JSON value.
        images: ``(name, image)`` pairs.
        context: everything else the numbers depend on (dataset, crop, qualities...).
        decode: as :func:`rate_sweep`.
        refresh: recompute even when cached.

    Returns:
        The table (:data:`SWEEP_COLUMNS`).

    Raises:
        nic_lib.coding.DecodeMismatchError: as :func:`rate_sweep`.
    """
    key = {**dict(context), "images": [name for name, _ in images], "decode_images": decode,
           "model": label, "checkpoint": digest}
    # the models as they run, not only the files they came from: model_id covers the coder
    # tables built at loading (scale table, CDFs) and the coding settings (rate level,
    # calibration, attention radius); the code that builds and runs them is in the cache
    # key's code version (cache.code_version)
    models = {label: digest, "model_ids": identity.model_ids(dict(sorted(family.items())))}
    return cache.cached_table(Path(results_dir) / f"learned_{label}.csv", key,
                              lambda: rate_sweep(images, {label: family}, decode=decode),
                              refresh=refresh, data=images, models=models)
