"""The NIC variants of the OOD benchmark (issue 30): which checkpoint is which variant.

Lieberman et al. (OOD-NIC) compare codec *variants* under distribution shift: scale
hyperprior vs ELIC, fixed- vs variable-rate, dense vs pruned, MSE- vs MS-SSIM-trained.
Beyond the paper, two variants ask whether the training data's spectrum causes the bias:
the same model trained on blurred or on noisy crops (:data:`DATA_SPECTRUM_VARIANTS`;
notebook 03 draws their error spectra beside the dense control's).
This project trains its own small versions (``scripts/train_cpu_profile.py``'s ``ood-*``
stages) and ships them under ``checkpoints/ood/``. :data:`OOD_VARIANTS` names each one,
its files and the stages that train them; notebook 02 takes a ``label -> files`` table
(its ``NIC_VARIANTS`` parameter), evaluates the present variants through the same grid as
the main NIC (:func:`variant_codecs`), and prints for every missing one the command that
trains it.

A variant is one or more checkpoint files whose rate levels together are its settings:

- a variable-rate file (``--qualities``) holds one level per quality;
- a fixed-rate file (``--quality q``) holds one model, quality q (ELIC and the fixed-rate
  mbt2018: one file per λ).

Every mbt2018 variant is a fine-tuning of the main line's shipped ``mbt2018/n96.pt`` for
the same number of steps, and ``mbt2018-dense`` is the control: the same fine-tuning
without pruning, at the same variable rate, on unaltered crops, so "dense vs pruned",
"fixed vs variable" and "unaltered vs blurred / noisy data" compare models with equal
training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nic_lib import bench, spectral
from nic_lib.models import checkpoint_dir, load_checkpoint, registry, variable_rate

__all__ = ["DATA_SPECTRUM_VARIANTS", "OOD_VARIANTS", "Variant", "load_variant",
           "missing_notice", "variant_codecs", "variant_spectra", "variant_table"]

#: Fixed-rate variants (ELIC, fixed-rate mbt2018) are trained at these qualities: four
#: points (the fewest a BD metric takes) spanning the grid's qualities 1-6, q3 among them
#: (the notebooks' middle quality, where "matched λ" is read).
FIXED_QUALITIES = (1, 3, 4, 6)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One NIC variant of the benchmark.

    Attributes:
        label: its name in tables and figures.
        files: its checkpoints, relative to the checkpoint folder (``checkpoints/``).
        stages: the ``scripts/train_cpu_profile.py`` stages that train them.
        varies: what it contrasts with the main line, in the paper's words.
    """

    label: str
    files: tuple[str, ...]
    stages: tuple[str, ...]
    varies: str


def _fixed(model: str, stage: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Files and stages of a fixed-rate variant: one per quality of FIXED_QUALITIES."""
    files = tuple(f"ood/{model}-q{q}.pt" for q in FIXED_QUALITIES)
    return files, tuple(f"{stage}-q{q}" for q in FIXED_QUALITIES)


#: Label -> variant: what scripts/train_cpu_profile.py's ood-* stages ship (its test checks
#: that the two agree).
OOD_VARIANTS: dict[str, Variant] = {v.label: v for v in [
    Variant("mbt2018-dense", ("ood/mbt2018-dense.pt",), ("ood-dense",),
            "control: n96 fine-tuned like the pruned models, unpruned (variable rate)"),
    Variant("mbt2018-pruned-50", ("ood/mbt2018-pruned-50.pt",), ("ood-pruned-50",),
            "dense vs pruned: 50% of the transforms' kernel weights zero"),
    Variant("mbt2018-pruned-80", ("ood/mbt2018-pruned-80.pt",), ("ood-pruned-80",),
            "dense vs pruned: 80% of the transforms' kernel weights zero"),
    Variant("mbt2018-fixed", *_fixed("mbt2018-fixed", "ood-fixed"),
            "fixed vs variable rate: one network per λ"),
    Variant("mbt2018-msssim", ("ood/mbt2018-msssim.pt",), ("ood-msssim",),
            "MSE vs MS-SSIM: trained on λ·(1 − MS-SSIM) + R"),
    Variant("elic2022", *_fixed("elic2022", "ood-elic"),
            "scale hyperprior family vs ELIC (one network per λ)"),
    Variant("mbt2018-data-blur", ("ood/mbt2018-data-blur.pt",), ("ood-data-blur",),
            "training data's spectrum: crops blurred (high band 10x down), vs mbt2018-dense"),
    Variant("mbt2018-data-noise", ("ood/mbt2018-data-noise.pt",), ("ood-data-noise",),
            "training data's spectrum: noise added to the crops (high band 8x up), vs "
            "mbt2018-dense"),
]}
#: The data-spectrum experiment (beyond the paper): its control first, then the variants
#: trained on spectrally altered crops (notebook 03's figure of their error spectra).
DATA_SPECTRUM_VARIANTS = ("mbt2018-dense", "mbt2018-data-blur", "mbt2018-data-noise")


def variant_table(variants: dict[str, Variant] | None = None) -> dict[str, list[str]]:
    """``label -> checkpoint files``: notebook 02's ``NIC_VARIANTS`` default.

    Args:
        variants: default :data:`OOD_VARIANTS`.

    Returns:
        Each label with its files (relative to the checkpoint folder, or absolute).
    """
    return {label: list(v.files) for label, v in (variants or OOD_VARIANTS).items()}


def _path(file: str | Path) -> Path:
    path = Path(file)
    return path if path.is_absolute() else checkpoint_dir() / path


def missing_notice(label: str, files) -> str | None:
    """None when every file of a variant exists, else the notice naming what trains them.

    Args:
        label: the variant's label (its stages are looked up in :data:`OOD_VARIANTS`).
        files: its checkpoint files.

    Returns:
        ``"NOTICE: <label> left out: <missing files>; train with python
        scripts/train_cpu_profile.py --only <stages>"`` (a label outside the table: train
        the files' models with ``python -m nic_lib.train``).
    """
    missing = [str(_path(f)) for f in files if not _path(f).is_file()]
    if not missing:
        return None
    known = OOD_VARIANTS.get(label)
    how = (f"python scripts/train_cpu_profile.py --only {' '.join(known.stages)}" if known
           else "python -m nic_lib.train (see scripts/train_cpu_profile.py's ood-* stages)")
    return f"NOTICE: {label} left out: missing {', '.join(missing)}; train with {how}"


def load_variant(files, qualities, device: str = "cpu") -> dict:
    """A variant's models, one per quality its files hold and ``qualities`` asks for.

    Args:
        files: its checkpoints (variable-rate: every level; fixed-rate: its quality).
        qualities: the grid's qualities (e.g. notebook 02's ``NIC_QUALITIES``).
        device: where to put the networks.

    Returns:
        ``{quality: model}`` in eval mode with coder tables built, in ``qualities``' order
        (a variable-rate file gives one loaded copy per level, set to it, as
        :func:`nic_lib.models.get_model` does).

    Raises:
        CheckpointError: a file is not a checkpoint; ValueError: two files hold the same
            quality, or a fixed-rate file has no quality of the registry's tables.
    """
    models = {}
    for file in files:
        path = _path(file)
        model, checkpoint = load_checkpoint(path, device=device)
        config = checkpoint["config"]
        levels = list(config.get("qualities") or [])
        if not levels:  # fixed rate: its quality, or the quality whose λ it was trained at
            table = registry.LAMBDA_MSSSIM if config.get("metric") == "ms-ssim" else registry.LAMBDA_MSE
            quality = config.get("quality") or next(
                (q for q, lm in table.items() if lm == config.get("lmbda")), None)
            if quality is None:
                raise ValueError(f"{path}: a fixed-rate checkpoint at λ={config.get('lmbda')}, "
                                 "which is no quality of the registry's tables; train it with "
                                 "--quality q instead of --lmbda")
            levels = [int(quality)]
        for level, quality in enumerate(levels):
            if quality not in qualities:
                continue
            if quality in models:
                raise ValueError(f"{path}: quality {quality} is also in another file of the variant")
            if level:  # one network object per setting, as get_model gives
                model = load_checkpoint(path, device=device)[0]
            models[quality] = (variable_rate.set_rate_level(model, level)
                               if variable_rate.is_variable_rate(model) else model)
    return {q: models[q] for q in qualities if q in models}


def variant_codecs(table: dict[str, list[str]], qualities, rate: str = "likelihood",
                   device: str = "cpu", evaluate: bool = True) -> list[bench.NicCodec]:
    """The grid's codecs of the present variants; a notice for each missing one.

    Args:
        table: ``label -> files`` (notebook 02's ``NIC_VARIANTS``).
        qualities: the grid's qualities.
        rate: :class:`nic_lib.bench.NicCodec`'s rate source.
        device: where to put the networks.
        evaluate: False lists which variants are present and loads none (the smoke
            profile, which runs no NIC in its grid).

    Returns:
        One :class:`nic_lib.bench.NicCodec` per present variant that holds at least one
        of ``qualities``, named by its label.
    """
    codecs = []
    for label, files in table.items():
        notice = missing_notice(label, files)
        if notice:
            print(notice)
            continue
        if not evaluate:
            print(f"{label}: present, not evaluated in this profile")
            continue
        models = load_variant(files, qualities, device=device)
        if not models:
            print(f"NOTICE: {label} left out: none of qualities {list(qualities)} "
                  "in its files")
            continue
        codecs.append(bench.NicCodec(label, models, rate=rate))
    return codecs


def variant_spectra(labels: Sequence[str], quality: int, names: Sequence[str], clean: Sequence[np.ndarray],
                    corrupted: Mapping[str, Sequence[np.ndarray]], window: str | None = spectral.DEFAULT_WINDOW,
                    channels: str = spectral.DEFAULT_CHANNELS, device: str = "cpu"
                    ) -> tuple[dict[str, dict], pd.DataFrame]:
    """Error spectra of the present variants at one quality (notebook 03's figure 9).

    Each present variant's model at ``quality`` codes every image under every condition
    (:func:`nic_lib.spectral.condition_spectra`: G, R and the shift); a missing variant is
    left out with its notice, the command that trains it (:func:`variant_codecs`).

    Args:
        labels: variants of :data:`OOD_VARIANTS` (e.g. :data:`DATA_SPECTRUM_VARIANTS`).
        quality: the rate level every variant runs at (one λ for all).
        names, clean: image names and clean images.
        corrupted: condition -> its images, in the order of ``clean``.
        window, channels: as in :func:`nic_lib.spectral.power_spectrum`.
        device: where the networks run.

    Returns:
        ``(maps, table)``: ``{label: {condition: {kind: spectrum}}}`` of the present
        variants in ``labels``' order, and :func:`~nic_lib.spectral.condition_spectra`'s
        rows with a ``codec`` column (the label); empty when none is present.

    Raises:
        KeyError: a label that is not in :data:`OOD_VARIANTS`.
    """
    table = {label: list(OOD_VARIANTS[label].files) for label in labels}
    maps, tables = {}, []
    for codec in variant_codecs(table, [quality], device=device):
        fn = spectral.nic_codec(codec.models[quality], device=device)
        maps[codec.name], rows = spectral.condition_spectra(names, clean, corrupted, [fn] * len(names), window,
                                                            channels)
        tables.append(rows.assign(codec=codec.name))
    columns = [*spectral.SPECTRA_COLUMNS, "condition", "codec"]
    return maps, (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns))
