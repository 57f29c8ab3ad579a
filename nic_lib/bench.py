"""The OOD evaluation grid: images x conditions x codecs x rate points -> one tidy row each.

Lieberman et al. (NeurIPS 2023) compress every image of Kodak-C / CLIC-C with classic and
learned codecs and report, per image, the real bpp, PSNR against the codec's input (the
corrupted image), PSNR against the clean image, and MS-SSIM. :class:`Grid` describes such an
experiment; :func:`run_grid` computes it (or one shard of it), caching on disk as it goes;
:func:`merge_shards` joins the shards into the table one unsharded run gives.

    clean image ──corrupt (nic_lib.corruptions, read from <dataset>-C/)──► codec input
                                                                             │ encode/decode
    row: image, codec, setting, corruption, severity, bpp,  ◄── metrics ◄──  x_hat
         psnr_vs_input, psnr_vs_clean, ms_ssim, rate_source

Conditions are ``clean`` (``corruption="clean"``, ``severity=0``) and every corruption x
severity. ``ms_ssim`` is against the codec's input, like ``psnr_vs_input``; NaN when switched
off (it costs ~100x a PSNR) or when a side is under 161 px.

Codecs (:class:`ClassicCodec`, :class:`NicCodec`) share one small contract: ``name``,
``settings``, ``description`` (what the cache key records) and
``code(img, setting) -> (x_hat, bpp, rate_source)``.

- Classic codecs (``nic_lib.codecs``) report bpp from the bytes of the whole file.
- NIC models (the hyperprior family, ELIC, PQ-MIM's rate points) report bpp from the real
  bitstream (``model.compress``: the bytes of every latent string; PQ-MIM's 7-byte stream
  header included; the few bytes of image shape a container would add are not counted), or,
  with ``rate="likelihood"`` (not PQ-MIM, whose forward pass has none), from the entropy
  model's estimate (sum of -log2 likelihoods)
  and ``forward``'s reconstruction, which skips the slow serial entropy coder. The grid uses
  the estimate only after :func:`check_likelihood_rate` has found it within 2% of the real
  bitstreams on the clean images (:data:`LIKELIHOOD_RTOL`), and raises otherwise.
  Padding, coding, decoding, the estimate and the rounding of the reconstruction are
  :mod:`nic_lib.coding`'s (edge replication to each model's ``downsampling_factor``, 64
  for the hyperprior family as in the reference code, 16 for PQ-MIM); bpp counts the
  original pixels only. PQ-MIM's decoded codes are checked against those its encoder wrote.

Caching, resuming, sharding. The grid is a list of *units* (condition x image x codec, all
rate points of a codec in one unit) in a fixed order; shard ``i/n`` takes every codec's units
of the (condition, image) pairs ``i, i+n, i+2n, ...``. Results go under ``<cache_dir>/<hash of the grid's key>/``: finished units are
written every :data:`FLUSH_EVERY_S` seconds as ``shard-i-of-n/part-KKKKK.csv`` (atomically),
so an interrupted run resumes after the last part; a finished shard is
``shard-i-of-n.csv``. Any change to the grid (images, codec configuration or weights,
settings, conditions, the corruption recipe) is a new key, hence a new folder; but before
computing a unit, a run looks in the other folders of the same cache directory and copies
that unit's rows where an earlier run computed them for the same codec (same configuration
and weights), data and recipe — so grids that share codecs share work, and an unsharded run
after ``n`` shards only joins their rows.

Command line::

    python -m nic_lib.bench run kodak --codecs jpeg jpeg2000 --shard 0/4 [--limit N] [...]
    python -m nic_lib.bench merge kodak --codecs jpeg jpeg2000 --shards 4 --output table.csv

Three files: this one (the grid, running and merging it, the command line), the grid's
vocabulary and codecs in :mod:`nic_lib.bench_codecs`, the comparisons of its tables in
:mod:`nic_lib.bench_tables`; import their names from here. Together they import
:mod:`nic_lib.data`, :mod:`nic_lib.codecs`, :mod:`nic_lib.metrics`, :mod:`nic_lib.corruptions`,
:mod:`nic_lib.cache`, :mod:`nic_lib.rd` and :mod:`nic_lib.fileio` (and torch for NIC models).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nic_lib import cache, corruptions, data, fileio, metrics
from nic_lib.bench_codecs import (  # noqa: F401  re-exported: import them from here
    ALL_CORRUPTIONS,
    ALL_SEVERITIES,
    _channels_last,
    CHANNELS_LAST_MODULES,
    check_likelihood_rate,
    classic_codec,
    ClassicCodec,
    CLEAN,
    CLEAN_SEVERITY,
    COLUMNS,
    GRID_AVIF_SPEED,
    GRID_SETTINGS,
    likelihood_rate_table,
    likelihood_rate_under_shift,
    LIKELIHOOD_RTOL,
    LikelihoodRateMismatchError,
    NicCodec,
    _raise_if_mismatched,
)
from nic_lib.bench_tables import (  # noqa: F401  re-exported: import them from here
    delta_at_setting,
    MATCH_POINTS,
    matched_bpp_delta,
    rd_points,
)


#: Finished units are written to disk at least this often (seconds): a crash loses at most this much work.
FLUSH_EVERY_S = 30.0
#: Version of the row recipe, part of every cache key: bump it when the way rows are computed changes.
BENCH_VERSION = 1
#: Where grid results are cached when no folder is given (git-ignored).
DEFAULT_CACHE_DIR = data.REPO_ROOT / "build" / "results" / "bench"


class ShardsIncompleteError(RuntimeError):
    """:func:`merge_shards` found shards missing; the message names the commands that make them."""


# ---------------------------------------------------------------------------------------
# The grid


@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """One OOD experiment: which images, conditions, codecs and rate points.

    Attributes:
        dataset: the clean dataset (``"kodak"``); conditions read ``<dataset>-C``.
        codecs: :class:`ClassicCodec` / :class:`NicCodec` objects (names must differ).
        corruptions: corruptions to include (default all 15).
        severities: severities to include (default 1-5).
        limit: only the first ``limit`` images.
        include_clean: add the clean condition.
        with_ms_ssim: compute MS-SSIM (~0.1-0.3 s per 768x512 image on this machine).
        corrupted_out: where ``<dataset>-C/`` is (see :func:`nic_lib.corruptions.corrupted_dir`).
        root: where the clean dataset is (see :func:`nic_lib.data.dataset_dir`).
    """

    dataset: str
    codecs: Sequence
    corruptions: Sequence[str] = ALL_CORRUPTIONS
    severities: Sequence[int] = ALL_SEVERITIES
    limit: int | None = None
    include_clean: bool = True
    with_ms_ssim: bool = True
    corrupted_out: str | None = None
    root: str | None = None

    def __post_init__(self):
        names = [c.name for c in self.codecs]
        if len(set(names)) != len(names):
            raise ValueError(f"codec names repeat in {names}; give each its own name")
        for c in self.corruptions:
            for s in self.severities:
                corruptions._check(c, s)

    def conditions(self) -> list[tuple[str, int]]:
        """(corruption, severity) pairs in table order, ``("clean", 0)`` first."""
        conds = [(CLEAN, CLEAN_SEVERITY)] if self.include_clean else []
        return conds + [(c, int(s)) for c in self.corruptions for s in self.severities]

    def image_names(self) -> list[str]:
        """The clean dataset's image names (first ``limit``)."""
        return [name for name, _ in corruptions._sources(self.dataset, self.limit, self.root)]

    def units(self) -> list[tuple[str, int, str, str]]:
        """Every unit of work, in the grid's fixed order: (corruption, severity, image, codec)."""
        images = self.image_names()
        return [(c, s, image, codec.name) for c, s in self.conditions() for image in images for codec in self.codecs]

    def shard_units(self, i: int, n: int) -> list[tuple[str, int, str, str]]:
        """Shard ``i`` of ``n``: every codec's units of the (condition, image) pairs i, i+n, ...

        Splitting by (condition, image) rather than by unit gives each shard every codec in
        equal measure (an i::n split of units would hand all of a slow codec to one shard
        whenever n divides the number of codecs) and reads each -C image in one shard only.
        """
        per_pair = len(self.codecs)
        return [u for k, u in enumerate(self.units()) if (k // per_pair) % n == i]

    def key(self) -> dict:
        """Everything the table depends on (JSON), hashed into the cache folder's name."""
        return {
            "bench_version": BENCH_VERSION,
            "dataset": self.dataset,
            "images": self.image_names(),
            "conditions": [list(c) for c in self.conditions()],
            "codecs": [{"name": c.name, "description": c.description, "settings": [_jsonable(s) for s in c.settings]}
                       for c in self.codecs],
            "with_ms_ssim": self.with_ms_ssim,
            "corruption_recipe": corruptions._build_key(self.dataset),
        }

    def folder(self, cache_dir: str | os.PathLike | None = None) -> Path:
        """The cache folder of this grid: ``<cache_dir>/<dataset>-<first 12 hex of the key's SHA-256>``."""
        text = json.dumps(self.key(), sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return Path(cache_dir or DEFAULT_CACHE_DIR) / f"{self.dataset.replace('/', '_')}-{digest}"


def _jsonable(value):
    return value.item() if isinstance(value, np.generic) else value


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with 0 <= i < n.

    Raises:
        ValueError: for anything else (the message shows the expected form).
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ValueError(f"shard must be 'i/n' with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(match[1]), int(match[2])


def _sorted(table: pd.DataFrame, grid: Grid) -> pd.DataFrame:
    """Rows in the grid's fixed order (units, then each codec's settings), index 0..N-1."""
    order = {u: k for k, u in enumerate(grid.units())}
    setting_rank = {(c.name, float(s)): k for c in grid.codecs for k, s in enumerate(c.settings)}
    rank = [order[(r.corruption, int(r.severity), str(r.image), r.codec)] for r in table.itertuples()]
    srank = [setting_rank.get((r.codec, float(r.setting)), 0) for r in table.itertuples()]
    return (table.assign(_u=rank, _s=srank).sort_values(["_u", "_s"], kind="stable")
            .drop(columns=["_u", "_s"]).reset_index(drop=True))


def _read_csvs(paths: Iterable[Path]) -> pd.DataFrame:
    text_columns = {c: str for c in ("image", "codec", "corruption", "rate_source")}
    frames = [pd.read_csv(p, dtype=text_columns, keep_default_na=False, na_values=[""]) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))


def _reread(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Write ``table`` to ``path`` and read it back, so every table has a CSV round trip's dtypes."""
    cache.write_table(table, path)
    return _read_csvs([path])


def _rows_for_unit(grid: Grid, codec, image: str, clean: np.ndarray, shifted: np.ndarray,
                   corruption: str, severity: int) -> list[dict]:
    rows = []
    ms_ok = grid.with_ms_ssim and min(clean.shape[:2]) >= metrics.MS_SSIM_MIN_SIDE
    coded = codec.code_many(shifted) if hasattr(codec, "code_many") else [codec.code(shifted, s) for s in codec.settings]
    # MS-SSIM of every rate point against the same input: the input's statistics computed once
    ms = metrics.ms_ssim_many(shifted, [x_hat for x_hat, _, _ in coded]) if ms_ok else [float("nan")] * len(coded)
    for setting, (x_hat, bpp, source), ms_value in zip(codec.settings, coded, ms):
        rows.append({"image": image, "codec": codec.name, "setting": _jsonable(setting),
                     "corruption": corruption, "severity": severity, "bpp": bpp,
                     "psnr_vs_input": metrics.psnr(shifted, x_hat), "psnr_vs_clean": metrics.psnr(clean, x_hat),
                     "ms_ssim": ms_value, "rate_source": source})
    return rows


def _likelihood_gate(grid: Grid, folder: Path, clean: list[tuple[str, np.ndarray]]) -> None:
    """Run (once, cached in ``folder``) the likelihood-vs-bitstream check of every likelihood NIC."""
    for codec in grid.codecs:
        if isinstance(codec, NicCodec) and codec.rate == "likelihood":
            key = {"codec": codec.description, "images": [n for n, _ in clean]}
            table = cache.cached_table(folder / f"likelihood_check-{codec.name}.csv", key,
                                       lambda c=codec: likelihood_rate_table(c, clean),
                                       data=clean, models=codec.model_ids)
            _raise_if_mismatched(table, codec.name, LIKELIHOOD_RTOL, len(clean))


def run_grid(grid: Grid, cache_dir: str | os.PathLike | None = None, shard: tuple[int, int] | str = (0, 1),
             progress: bool = True, refresh: bool = False) -> pd.DataFrame:
    """Compute one shard of the grid (the whole grid by default), resuming from the cache.

    Args:
        grid: the experiment.
        cache_dir: folder of grid caches (default :data:`DEFAULT_CACHE_DIR`).
        shard: ``(i, n)`` or ``"i/n"``: this process does the units of :meth:`Grid.shard_units`.
        progress: tqdm progress bar (one step per unit).
        refresh: discard this shard's cached parts and recompute.

    Returns:
        This shard's rows (:data:`COLUMNS`), in the grid's order, as read back from CSV.

    Raises:
        LikelihoodRateMismatchError: a likelihood-rate NIC fails the 2% check.
        nic_lib.corruptions.CorruptedDatasetError, nic_lib.data.DatasetNotFoundError: data missing.
    """
    i, n = parse_shard(shard) if isinstance(shard, str) else parse_shard(f"{shard[0]}/{shard[1]}")
    folder = grid.folder(cache_dir)
    fileio.atomic_write_text(folder / "key.json", json.dumps(grid.key(), indent=1, sort_keys=True))
    final = folder / f"shard-{i}-of-{n}.csv"
    parts_dir = folder / f"shard-{i}-of-{n}"
    if refresh:
        final.unlink(missing_ok=True)
        for p in parts_dir.glob("part-*.csv"):
            p.unlink()
    if final.is_file():
        return _read_csvs([final])
    mine = grid.shard_units(i, n)
    done_table = _read_csvs(sorted(parts_dir.glob("part-*.csv")))
    done = set(_units_of(done_table))
    todo = [u for u in mine if u not in done]
    if todo and not refresh:
        todo = _adopt_finished_rows(grid, folder, parts_dir, todo)
    clean = dict(corruptions.load_clean(grid.dataset, grid.limit, grid.root))
    _likelihood_gate(grid, folder, list(clean.items()))
    by_name = {c.name: c for c in grid.codecs}
    pending: list[dict] = []
    part = len(list(parts_dir.glob("part-*.csv")))
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal part, last_flush
        if pending:
            cache.write_table(pd.DataFrame(pending, columns=list(COLUMNS)), parts_dir / f"part-{part:05d}.csv")
            part += 1
            pending.clear()
        last_flush = time.monotonic()

    shifted_cache: tuple = (None, {})
    with tqdm(total=len(todo), desc=f"grid {i}/{n}", unit="unit", disable=not progress) as bar:
        try:
            for corruption, severity, image, codec_name in todo:
                if shifted_cache[0] != (corruption, severity):  # units come condition by condition
                    shifted = clean if corruption == CLEAN else dict(corruptions.load_corrupted(
                        grid.dataset, corruption, severity, grid.limit, grid.corrupted_out, root=grid.root))
                    shifted_cache = ((corruption, severity), shifted)
                pending += _rows_for_unit(grid, by_name[codec_name], image, clean[image],
                                          shifted_cache[1][image], corruption, severity)
                bar.update()
                if time.monotonic() - last_flush > FLUSH_EVERY_S:
                    flush()
        finally:
            flush()  # keep finished units, also on Ctrl-C or an error
    table = _read_csvs(sorted(parts_dir.glob("part-*.csv")))
    # only this shard's units (parts may hold others' from an earlier sharding rule), once each
    mine_set = set(mine)
    table = table[[u in mine_set for u in _units_of(table)]]
    table = table.drop_duplicates(subset=["corruption", "severity", "image", "codec", "setting"])
    return _reread(_sorted(table, grid), final)


def _units_of(table: pd.DataFrame) -> list[tuple[str, int, str, str]]:
    """The unit (corruption, severity, image, codec) of every row."""
    return [(r.corruption, int(r.severity), str(r.image), r.codec) for r in table.itertuples()]


def _adopt_finished_rows(grid: Grid, folder: Path, parts_dir: Path, todo: list) -> list:
    """Copy rows other runs already computed for units in ``todo``; return the units left.

    A unit's rows depend only on the dataset, the image, the condition, the codec (name,
    configuration, weights: its ``description``), its settings, the corruption recipe and
    whether MS-SSIM is on. So rows are taken from any grid folder beside this one whose
    ``key.json`` agrees on those (another codec mix, other shards of this grid, a
    benchmark's run of one codec) and whose codec has every setting of ours. This is what
    lets the notebook's all-codec grid reuse a classic-only run and a NIC-only run, and an
    unsharded run finish from shards.
    """
    wanted = {(c.name, c.description): {float(s) for s in c.settings} for c in grid.codecs}
    mine = grid.key()
    shared = ("bench_version", "dataset", "with_ms_ssim", "corruption_recipe")
    todo_set = set(todo)
    found: dict[tuple, list] = {}
    for key_path in sorted(folder.parent.glob("*/key.json")):
        try:
            other = json.loads(key_path.read_text())
        except (OSError, ValueError):
            continue
        if any(other.get(k) != mine[k] for k in shared):
            continue
        usable = {c["name"] for c in other.get("codecs", [])
                  if (c["name"], c["description"]) in wanted
                  and wanted[(c["name"], c["description"])] <= {float(v) for v in c["settings"]}}
        if not usable:
            continue
        paths = [p for p in key_path.parent.rglob("*.csv")
                 if p.parent != parts_dir and (p.name.startswith(("shard-", "part-", "merged-")))]
        for path in paths:
            table = _read_csvs([path])
            table = table[table["codec"].isin(usable)]
            for unit, rows in table.groupby(["corruption", "severity", "image", "codec"], sort=False):
                unit = (unit[0], int(unit[1]), str(unit[2]), unit[3])
                if unit in todo_set and unit not in found:
                    settings = wanted[next(k for k in wanted if k[0] == unit[3])]
                    rows = rows[rows["setting"].astype(float).isin(settings)]
                    if len(rows) == len(settings):
                        found[unit] = rows
    if not found:
        return todo
    adopted = _sorted(pd.concat(found.values(), ignore_index=True), grid)
    part = len(list(parts_dir.glob("part-*.csv")))
    cache.write_table(adopted[list(COLUMNS)], parts_dir / f"part-{part:05d}.csv")
    return [u for u in todo if u not in found]


def merge_shards(grid: Grid, n: int, cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Join the ``n`` finished shards of a grid into the table one unsharded run gives.

    Args:
        grid: the same grid every shard ran.
        n: the number of shards.
        cache_dir: as given to :func:`run_grid`.

    Returns:
        The whole table (:data:`COLUMNS`), in the grid's order; also written to
        ``<grid folder>/merged-of-{n}.csv``.

    Raises:
        ShardsIncompleteError: some shard has not finished (the message gives its command).
    """
    folder = grid.folder(cache_dir)
    paths = [folder / f"shard-{i}-of-{n}.csv" for i in range(n)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        raise ShardsIncompleteError(
            f"shards {missing} of {n} have not finished in {folder}; run them with "
            f"run_grid(grid, shard='i/{n}') (`python -m nic_lib.bench run ... --shard i/{n}`, the same "
            "grid arguments), then merge again")
    table = _sorted(_read_csvs(paths), grid)
    return _reread(table, folder / f"merged-of-{n}.csv")


# ---------------------------------------------------------------------------------------
# Command line


def nic_codecs_from_checkpoints(specs: Sequence[str], rate: str = "bitstream", profile: str = "cpu") -> list[NicCodec]:
    """Learned codecs from ``MODEL[:Q1,Q2,...]`` specs (qualities 1-6 when none are listed).

    ``pqmim`` is PQ-MIM's rate points, one file each, as qualities 1..n lowest rate first
    (every shipped one when none are listed; :func:`nic_lib.neural.quality_models`). It
    always codes for real (``rate="bitstream"``, as its rows' ``rate_source`` says): its
    forward pass has no likelihoods.

    Args:
        specs: e.g. ``["mbt2018", "mbt2018-mean:1,3,5", "pqmim:1,3"]``.
        rate: the rate source of every codec but PQ-MIM (see :class:`NicCodec`).
        profile: ``"cpu"`` (this project's checkpoints) or ``"full"`` (published weights;
            PQ-MIM has only this project's).

    Returns:
        One :class:`NicCodec` per spec.

    Raises:
        nic_lib.models.CheckpointNotFoundError: a checkpoint is missing (the message gives the
            training command).
        ValueError: ``pqmim`` with ``profile="full"``, or a quality it does not hold.
    """
    # here: a classic-codec grid never loads the models
    from nic_lib.models import get_model
    from nic_lib.neural import quality_models

    out = []
    for spec in specs:
        name, _, qs = spec.partition(":")
        qualities = [int(q) for q in qs.split(",")] if qs else None
        if name == "pqmim":
            if profile != "cpu":
                raise ValueError(f"{spec}: PQ-MIM has no published weights, only this project's "
                                 "checkpoints/pqmim/*.pt; use profile 'cpu'")
            out.append(NicCodec(name, quality_models(name, qualities), rate="bitstream"))
            continue
        out.append(NicCodec(name, {q: get_model(name, q, profile=profile) for q in qualities or range(1, 7)},
                            rate=rate))
    return out


def _grid_from_args(args) -> Grid:
    settings = {}
    for spec in args.settings or []:
        name, _, values = spec.partition("=")
        settings[name] = [float(v) if "." in v else int(v) for v in values.split(",")]
    entries = [classic_codec(name, settings.get(name)) for name in args.codecs]
    entries += nic_codecs_from_checkpoints(args.nic or [], args.rate)
    return Grid(args.dataset, entries, corruptions=args.corruptions or corruptions.CORRUPTIONS,
                severities=args.severities or corruptions.SEVERITIES, limit=args.limit,
                include_clean=not args.no_clean, with_ms_ssim=not args.no_ms_ssim,
                corrupted_out=args.corrupted_out, root=args.root)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``run`` one shard, or ``merge`` finished shards.

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        Exit status: 0 on success, 1 on missing data or unfinished shards.
    """
    parser = argparse.ArgumentParser(prog="python -m nic_lib.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("run", "merge"):
        p = sub.add_parser(command)
        p.add_argument("dataset", help="clean dataset, e.g. kodak (its -C version is built on demand)")
        p.add_argument("--codecs", nargs="*", default=["jpeg", "webp", "jpeg2000", "avif"], help="classic codecs")
        p.add_argument("--settings", nargs="*", metavar="CODEC=A,B,..", help="override a codec's rate points")
        p.add_argument("--nic", nargs="*", metavar="MODEL[:Q1,Q2,..]",
                       help="cpu-profile checkpoints to include (pqmim: its rate points, qualities 1..3)")
        p.add_argument("--rate", choices=("bitstream", "likelihood"), default="bitstream",
                       help="NIC rate source (PQ-MIM always codes: bitstream)")
        p.add_argument("--corruptions", nargs="*", choices=corruptions.CORRUPTIONS, metavar="NAME")
        p.add_argument("--severities", nargs="*", type=int, choices=corruptions.SEVERITIES)
        p.add_argument("--limit", type=int, help="only the first N images")
        p.add_argument("--no-clean", action="store_true", help="leave out the clean condition")
        p.add_argument("--no-ms-ssim", action="store_true", help="skip MS-SSIM (the costliest metric)")
        p.add_argument("--corrupted-out", help="folder holding DATASET-C/ (see nic_lib.corruptions)")
        p.add_argument("--root", help="folder holding the clean dataset")
        p.add_argument("--cache", help=f"grid cache folder (default {DEFAULT_CACHE_DIR})")
        p.add_argument("--output", help="also write the resulting table to this CSV")
        if command == "run":
            p.add_argument("--shard", default="0/1", help="i/n: this process's share of the grid")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
        else:
            p.add_argument("--shards", type=int, required=True, help="n, as in --shard i/n")
    args = parser.parse_args(argv)
    try:
        grid = _grid_from_args(args)
        if args.command == "run":
            table = run_grid(grid, args.cache, args.shard, progress=not args.quiet)
        else:
            table = merge_shards(grid, args.shards, args.cache)
    except (ShardsIncompleteError, LikelihoodRateMismatchError, corruptions.CorruptedDatasetError,
            data.DatasetNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.output:
        cache.write_table(table, args.output)
    print(f"{len(table)} rows; cache {grid.folder(args.cache)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
