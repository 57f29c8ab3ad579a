# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 — Codecs under distribution shift: Kodak-C, and photos-hr-C as the CLIC-C stand-in
#
# Lieberman et al. (NeurIPS 2023) ask how learned image codecs (NIC) behave when the input
# is not like their training data. They corrupt Kodak and CLIC with the 15 ImageNet-C
# corruptions at 5 severities (**Kodak-C**, **CLIC-C**), group the corruptions by the
# frequencies they change (**low**: snow, frost, fog, brightness, contrast; **mid**: motion,
# zoom, defocus and glass blur, elastic transform, JPEG, pixelate; **high**: Gaussian, shot
# and impulse noise), and compress every corrupted image with classic and learned codecs.
#
# Two questions, two distortion measures per image:
#
# - **PSNR against the codec's input** (the corrupted image): how well does the codec do its
#   job on data unlike its training set?
# - **PSNR against the clean image**: what does a viewer of the decoded image get, compared
#   with the undamaged original?
#
# The path: `nic_lib.corruptions` (deterministic corruptions, the -C dataset on disk) →
# `nic_lib.bench` (the grid: images × conditions × codecs × rate points → one tidy row each,
# cached, resumable, shardable) → figures drawn from that table. bpp always counts the real
# file (classic codecs) or, for NIC models, the real bitstream or — only once checked within
# 2% of it on the clean images — the entropy model's estimate.
#
# The grid can be computed outside the notebook, split over processes or machines
# (`python -m nic_lib.bench run kodak --shard i/n ...`, then `merge`); the notebook reads the
# same cache when the grid arguments agree. The findings open with a table of the paper's
# claims against this run's numbers (`nic_lib.claims`).

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from nic_lib import bench, cache, claims, codecs, corruptions, data, notebook_setup, plotting, reproduce, shift, variants
from nic_lib.models import CheckpointError, get_model, zoo

# %% tags=["parameters"]
PROFILE = "cpu"  # smoke: 2 small embedded images, 3 corruptions, CI; cpu: full Kodak-C (committed figures); full: same, with every NIC variant of CompressAI's zoo (published weights)
SMOKE = None  # None -> PROFILE == "smoke"; True: smoke sizes with this profile's models (CI runs PROFILE=full so, against a stand-in zoo)
DEVICE = None  # None -> "cuda" when PyTorch sees a GPU, else "cpu": where the grid's NIC networks run (their entropy coders compute the coding parameters on the CPU either way, so the bitstreams do not depend on it)
DATASET = None  # None -> "kodak" (cpu/full) or "sample" (smoke: needs no data files): the dataset of figures 1-8
DATASETS = None  # None -> [DATASET, "photos-hr"]: the datasets figure 9 compares, each through the same grid; photos-hr-C is the CLIC-C stand-in (CLIC 2020 test is offline here; "clic2020-test" works where it is downloaded)
OTHER_N_IMAGES = None  # None -> every image (smoke: 1, a single 512x768 crop): images of each dataset after the first; photos-hr-C's 25 crops have Kodak's size, so its grid costs about Kodak-C's x 25/24 (measured beside training runs: JPEG 2000 291 s for 2 images, mbt2018 x 6 qualities 172 s for 1 image, one thread each)
N_IMAGES = None  # None -> every image (smoke: 2); an int takes the first N
CORRUPTIONS = None  # None -> all 15 (smoke: fog, pixelate, gaussian_noise: one per frequency group)
SEVERITIES = None  # None -> 1..5 (smoke: 1, 5)
CODECS = None  # None -> jpeg, webp, jpeg2000, avif (AVIF at speed 6, see nic_lib.bench; smoke leaves out AVIF, the slowest)
SETTINGS = None  # None -> nic_lib.bench.GRID_SETTINGS (6 rate points each; smoke: 4, the least a BD metric takes)
NIC_MODELS = None  # None -> ["mbt2018"] (cpu), every zoo variant of ZOO_VARIANTS (full), [] (smoke — the NIC path is tested in tests/test_bench.py); included only if their weights load. CI's smoke-size full run (tests/test_notebooks_full.py) passes 2 of the 8 zoo variants (this project's joint model and a variable-rate CompressAI class) on the smoke dataset alone; tests/test_zoo.py round-trips every zoo model
NIC_QUALITIES = [1, 2, 3, 4, 5, 6]  # one checkpoint per quality = one rate point each
NIC_VARIANTS = None  # None -> nic_lib.variants.variant_table() under cpu/smoke (label -> checkpoint files under checkpoints/: ELIC, fixed-rate, pruned 50/80%, MS-SSIM-trained, trained on blurred / noisy crops, and the dense control, trained by scripts/train_cpu_profile.py's ood-* stages), {} under full (the zoo's variants are NIC_MODELS there); a missing variant is skipped with the command that trains it; smoke lists them and evaluates none, as it runs no NIC
NIC_PROFILE = None  # None -> "full" for PROFILE=full (CompressAI's published weights, nic_lib.models.zoo), else "cpu" (this project's checkpoints)
NIC_RATE = "likelihood"  # "likelihood": fast, used only after the grid checks it within 2% of real bitstreams; "bitstream": exact
WITH_MS_SSIM = None  # None -> True (smoke: False; MS-SSIM costs ~100x a PSNR)
REFERENCE = "jpeg2000"  # the classic anchor of the comparisons (the reference code's)
SHIFT_BPP_RANGE = "common"  # rates of the shift effects (each codec against its own clean curve): "common" -> the bpp range every codec's clean curve covers (a shift costs more where a codec's own error is small, so codecs are compared at the same rates); None -> each codec over all the rates its two curves share; or [low, high]
HEATMAP_SETTING = None  # setting of the compared codec in the heat map (every cell at the rate that setting spends); None -> its middle setting (NIC: the middle quality)
RATE_CHECK_IMAGES = 1  # images per condition on which NIC's likelihood bpp is checked against real bitstreams under shift (0: skip)
RATE_CHECK_SEVERITIES = [1, 5]  # severities of that check (every corruption of the grid at each)
GALLERY_IMAGE = None  # None -> "kodim23" when loaded, else the first image
GALLERY_SEVERITIES = [1, 3, 5]  # severities shown in the gallery
GALLERY_CROP = None  # side of the gallery's centre crop, shown at about 1:1 so that blur and JPEG artefacts are visible; None -> 256 (smoke: 160, and the crop itself is corrupted: 15 x 3 corruptions of a full image cost more than the smoke grid)
WORKERS = None  # processes building the -C images; None -> 1 for smoke (spawning costs more than it saves), else one per core
CORRUPTED_DIR = None  # folder holding <dataset>-C/; None -> the project cache ($NIC_CACHE_DIR/data)
FIGURE_DIR = None  # None -> paper_figures/02_ood_benchmark for cpu, build/figures/<profile>/... otherwise
RESULTS_DIR = None  # None -> build/results/<profile>/02_ood_benchmark (the grid cache)
REFRESH = False  # True recomputes the grid

# %% [markdown]
# `notebook_setup.setup` reads the profile knobs as every notebook does (smoke sizes, device,
# dataset, where figures and cached tables go: the table in its docstring); this notebook's
# own settings follow it.

# %%
run = notebook_setup.setup("02_ood_benchmark", PROFILE, smoke=SMOKE, device=DEVICE, dataset=DATASET, n_images=N_IMAGES,
                           figure_dir=FIGURE_DIR, results_dir=RESULTS_DIR)
smoke, device, dataset, n_images, results_dir, fig_dir = run.smoke, run.device, run.dataset, run.n_images, run.results_dir, run.fig_dir
# the OOD paper's NIC variants that CompressAI 1.2.8 serves (nic_lib.models.zoo.ZOO; no ELIC,
# no checkerboard weights there): scale and mean-scale hyperprior, joint, Cheng 2020's two,
# and the variable-rate versions of the first three
ZOO_VARIANTS = ["bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-anchor", "cheng2020-attn",
                "bmshj2018-hyperprior-vbr", "mbt2018-mean-vbr", "mbt2018-vbr"]
corruption_names = list(CORRUPTIONS or (["fog", "pixelate", "gaussian_noise"] if smoke else corruptions.CORRUPTIONS))
severities = list(SEVERITIES or ([1, 5] if smoke else corruptions.SEVERITIES))
codec_request = CODECS or (["jpeg", "webp", "jpeg2000"] if smoke else ["jpeg", "webp", "jpeg2000", "avif"])
gallery_crop = GALLERY_CROP or (160 if smoke else 256)
with_ms_ssim = WITH_MS_SSIM if WITH_MS_SSIM is not None else not smoke
nic_profile = NIC_PROFILE or run.model_profile
nic_names = NIC_MODELS if NIC_MODELS is not None else (ZOO_VARIANTS if nic_profile == "full" else [] if smoke else ["mbt2018"])
variant_table = NIC_VARIANTS if NIC_VARIANTS is not None else ({} if nic_profile == "full" else variants.variant_table())
workers = WORKERS or (1 if smoke else corruptions.DEFAULT_WORKERS)
datasets = list(DATASETS or [dataset, "photos-hr"])
other_n_images = OTHER_N_IMAGES or (1 if smoke else None)
available = codecs.available_codecs()
codec_names = [c for c in codec_request if c in available]
if [c for c in codec_request if c not in available]:
    print(f"skipping codecs not available here: {[c for c in codec_request if c not in available]}")
settings = {n: list((SETTINGS or {}).get(n, bench.GRID_SETTINGS.get(n, codecs.get_codec(n).settings))) for n in codec_names}
if SETTINGS is None and smoke:
    settings = {n: codecs.spread_settings(s, 4) for n, s in settings.items()}
print(f"profile={PROFILE}  dataset={dataset}  images={n_images or 'all'}  corruptions={len(corruption_names)}  "
      f"severities={severities}  codecs={codec_names}  NIC device={device}")
print(f"figures -> {fig_dir}")

# %% [markdown]
# ## Learned codecs: included when their weights exist
#
# This project's small CPU-trained models are loaded from `checkpoints/`; a model without a
# checkpoint is left out with a notice naming the command that trains it, so this notebook
# runs before training finishes and picks the models up afterwards. Under `full` the grid
# holds every NIC variant of CompressAI 1.2.8's zoo that the OOD paper compares: the scale
# hyperprior, mean-scale and joint models (one network per quality), Cheng et al. 2020's
# anchor and attention models (qualities 1-6), and the variable-rate versions of the first
# three (one network, a gain per level). The zoo has no ELIC and no checkerboard weights.
# Under `cpu` the grid also holds the paper's variants as this project trains them
# (`nic_lib.variants`, `NIC_VARIANTS`): ELIC at a cpu width and the main-line mbt2018
# fine-tuned fixed-rate (one network per λ), pruned to 50% and 80% sparsity, and trained for
# MS-SSIM, each beside a dense control fine-tuned for as many steps; and, beyond the paper,
# fine-tuned on blurred and on noisy crops (`mbt2018-data-blur`, `mbt2018-data-noise`: does
# the training data's spectrum cause the bias? notebook 03 draws their error spectra). Each
# variant present in `checkpoints/ood/` goes through the same grid as the main NIC, under its
# label.
# The grid's NIC networks run on `DEVICE` (a GPU when there is one; `nic_lib.bench.NicCodec`
# sends its inputs where the model is); their entropy coders compute the coding parameters
# on the CPU either way (`nic_lib.models.google.CODING_DEVICE`), so a bitstream does not
# depend on the device.

# %%
nic_codecs = []
for name in nic_names:
    try:
        if nic_profile == "full":  # every zoo model, registered here or not (cheng2020, *-vbr)
            models = {q: zoo.load_zoo_model(name, q, device=device) for q in NIC_QUALITIES if q in zoo.ZOO[name].qualities}
        else:
            models = {q: get_model(name, q, profile=nic_profile, device=device) for q in NIC_QUALITIES}
    except (CheckpointError, RuntimeError, ValueError) as err:
        print(f"NOTICE: {name} left out of the grid: {err}")
        continue
    nic_codecs.append(bench.NicCodec(name, models, rate=NIC_RATE))
# the OOD paper's variants trained here (nic_lib.variants): present ones join the grid under their label
nic_codecs += variants.variant_codecs(variant_table, NIC_QUALITIES, rate=NIC_RATE, device=device, evaluate=not smoke)
grid_codecs = [bench.classic_codec(n, settings[n]) for n in codec_names] + nic_codecs
has_nic = bool(nic_codecs)
pd.DataFrame([{"codec": c.name, "settings": list(c.settings), "configuration": c.description} for c in grid_codecs])

# %% [markdown]
# ## Building the -C dataset
#
# Every (image, corruption, severity) has its own seed, derived from the three names, so the
# images are the same whoever builds them, in whatever order. Portrait images are transposed
# to landscape first, as in the reference code. Files already built and matching the
# manifest are skipped (`python -m nic_lib.corruptions build kodak` does the same from a shell).

# %%
t0 = time.perf_counter()
c_dir = corruptions.build(dataset, CORRUPTED_DIR, corruption_names, severities, limit=n_images, workers=workers,
                          progress=False)
print(f"{dataset}-C at {c_dir}: {len(corruptions.read_manifest(c_dir)['files'])} files, "
      f"ready in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## Figure 1 — the corruptions: every one at severities 1, 3 and 5 on one image
#
# A centre crop at about 1:1, so that blur, pixelation and JPEG blocks are visible; the
# clean crop once at the top, then one row per corruption, grouped as in the paper (low,
# mid, high frequency). Outside the smoke profile the crops are cut from the benchmark's own
# corrupted images (`corruptions.corrupted_image`: the -C file, or the same pixels computed).

# %%
clean_images = dict(corruptions.load_clean(dataset, n_images))
gallery_image = GALLERY_IMAGE or ("kodim23" if "kodim23" in clean_images else next(iter(clean_images)))
full_clean = clean_images[gallery_image]
window = data.centre_window(full_clean.shape, gallery_crop, shrink=True)  # the same pixels of every corrupted image
clean = full_clean[window]


def gallery_panel(name, severity):
    if smoke:  # corrupt the crop itself: the same corruption on fewer pixels, fast enough for CI
        return corruptions.corrupt(clean, name, severity, gallery_image)
    return corruptions.corrupted_image(dataset, gallery_image, name, severity, out=CORRUPTED_DIR)[window]


gallery = list(corruptions.CORRUPTIONS)  # the gallery always shows all 15: one image is cheap
side = 2.0  # inches per panel
fig, axes = plt.subplots(len(gallery) + 1, len(GALLERY_SEVERITIES), figsize=(side * len(GALLERY_SEVERITIES) + 1.2,
                         side * (len(gallery) + 1)), layout="constrained")
for ax in axes[0]:
    ax.axis("off")
middle = axes[0, len(GALLERY_SEVERITIES) // 2]
middle.imshow(clean)
middle.set_title(f"clean ({gallery_crop}×{gallery_crop} crop)", fontsize=9)
for row, name in zip(axes[1:], gallery):
    row[0].set_ylabel(f"{name}\n({corruptions.FREQUENCY_GROUP[name]})", fontsize=8)
    for ax, severity in zip(row, GALLERY_SEVERITIES):
        ax.imshow(gallery_panel(name, severity), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
for ax, severity in zip(axes[1], GALLERY_SEVERITIES):
    ax.set_title(f"severity {severity}", fontsize=9)
fig.suptitle(f"{dataset}-C: {gallery_image}")
plotting.save_figure(fig, "fig1_corruption_gallery")
plt.show()

# %% [markdown]
# ## The grid: one row per image × codec × rate point × condition
#
# Cached under `RESULTS_DIR` in a folder named after a hash of everything the table depends
# on (images, codec configurations and weights, rate points, conditions, corruption recipe).

# %%
grid = bench.Grid(dataset, grid_codecs, corruptions=corruption_names, severities=severities, limit=n_images,
                  with_ms_ssim=with_ms_ssim, corrupted_out=CORRUPTED_DIR)
t0 = time.perf_counter()
table = bench.run_grid(grid, results_dir, progress=False, refresh=REFRESH)
table["group"] = table["corruption"].map(corruptions.FREQUENCY_GROUP).fillna("clean")
print(f"{len(table)} rows ({len(grid.units())} units) in {time.perf_counter() - t0:.1f} s; cache {grid.folder(results_dir)}")
# the committed table: dataset means per codec, rate point and condition (the per-image grid,
# ~55,000 rows for Kodak-C, stays in the cache folder printed above)
# tolerances of `make verify` (nic_lib.reproduce): the NIC runs float32 networks, MS-SSIM float32 convolutions
condition_points = bench.rd_points(table, by=("corruption", "severity"))  # clean rows included: each codec's own clean curve
reproduce.save_table(condition_points, fig_dir / "rd_points.csv", floats=reproduce.NETWORK, columns={"ms_ssim": reproduce.MS_SSIM})
table.head()

# %% [markdown]
# ## Figure 2 — RD curves per frequency group, against the corrupted input and against the clean image
#
# Each point is a mean over images, over the group's corruptions and over the severities
# (1–5); the clean curve is repeated in every panel for reference. Top row: quality of the
# codec's own job (PSNR against its input). Bottom row: what reaches the viewer (PSNR against
# the clean image).

# %%
groups = [g for g in ("low", "mid", "high") if g in set(table["group"])]
points = bench.rd_points(table, by=("group",))
palette = plotting.codec_palette(codec_names + [c.name for c in nic_codecs])


def rd_by_group(metrics, labels, name):
    """RD curves per frequency group (columns) and metric (rows), the clean curves dashed."""
    fig, axes = plt.subplots(len(metrics), len(groups), figsize=(4.6 * len(groups), 4 * len(metrics)), sharex="col",
                             squeeze=False, layout="constrained")  # noise needs far more bits: each column its own rates
    for col, group in enumerate(groups):
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            shifted = points[points["group"] == group]
            sns.lineplot(data=shifted, x="bpp", y=metric, hue="codec", style="codec", palette=palette,
                         markers=plotting.codec_markers(palette), dashes=False, sort=True, estimator=None, ax=ax)
            base = points[points["group"] == "clean"]
            sns.lineplot(data=base, x="bpp", y=metric, hue="codec", palette=palette, linestyle="--", alpha=0.5,
                         sort=True, estimator=None, ax=ax, legend=False)
            plotting.limit_axes(ax, x=shifted["bpp"], y=pd.concat([shifted[metric], base[metric]]), x_floor=0.0)
            ax.set_title(f"{group}-frequency corruptions" if row == 0 else "")
            ax.set_xlabel("bits per pixel (bpp)")
            ax.set_ylabel(labels[metric])
            if not (row == 0 and col == len(groups) - 1) and ax.get_legend():
                ax.get_legend().remove()
    sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1.0), title="codec (dashed: clean)")
    plotting.save_figure(fig, name)
    plt.show()


rd_by_group(["psnr_vs_input", "psnr_vs_clean"],
            {"psnr_vs_input": "PSNR vs corrupted input (dB)", "psnr_vs_clean": "PSNR vs clean (dB)"},
            "fig2_rd_per_frequency_group")

# %% [markdown]
# ### Figure 2b — the same in MS-SSIM
#
# MS-SSIM against the codec's input (the grid computes it against the input only), in dB
# (−10·log10(1 − MS-SSIM)), the metric the paper reports beside PSNR.

# %%
if points["ms_ssim"].notna().any():
    points["ms_ssim_db"] = -10 * np.log10(1 - points["ms_ssim"].clip(upper=1 - 1e-10))
    rd_by_group(["ms_ssim_db"], {"ms_ssim_db": "MS-SSIM vs corrupted input (dB)"}, "fig5_rd_msssim_per_frequency_group")
else:
    print("no MS-SSIM in this grid (WITH_MS_SSIM is off, or the images are under MS-SSIM's 161-px minimum side)")

# %% [markdown]
# ## Figure 3 — heat map: a codec against JPEG 2000 per corruption × severity
#
# One definition for every cell: the compared codec is run at **one fixed setting** (for the
# NIC model its middle quality, as a user would run it), and each cell is its PSNR minus
# JPEG 2000's at the *same bpp*, JPEG 2000's curve of that condition interpolated in
# log-bpp (`nic_lib.bench.delta_at_setting`; positive = better than JPEG 2000). A fixed bpp
# for all cells is not possible: a NIC spends a tenth as many bits on a low-contrast image
# as on a noisy one, so no rate lies in every condition's range. A cell is **n/a** where
# JPEG 2000's rate points do not reach the codec's rate in that condition; the table below
# the figure gives each reason. The compared codec is the NIC model when one is available;
# until then the best classic codec on clean images (by the matched-bpp measure of figure 4),
# and the title says so.

# %%
deltas = {m: bench.matched_bpp_delta(table, REFERENCE, metric=m) for m in ("psnr_vs_input", "psnr_vs_clean")}
clean_delta = deltas["psnr_vs_input"].query("corruption == 'clean' and codec != @REFERENCE").set_index("codec")["delta_db"]
if has_nic:
    challenger, why = nic_codecs[0].name, "NIC model"
else:
    challenger, why = clean_delta.idxmax(), "best classic codec on clean images (no NIC checkpoint yet)"
challenger_settings = sorted(pd.to_numeric(table.loc[table["codec"] == challenger, "setting"]).unique())
heat_setting = HEATMAP_SETTING if HEATMAP_SETTING is not None else challenger_settings[(len(challenger_settings) - 1) // 2]
reproduce.save_table(pd.concat(deltas.values(), ignore_index=True), fig_dir / "delta_psnr_vs_jpeg2000.csv", floats=reproduce.DERIVED)
cells = {m: bench.delta_at_setting(table, challenger, heat_setting, REFERENCE, metric=m)
         for m in ("psnr_vs_input", "psnr_vs_clean")}
heat_table = pd.concat(cells.values(), ignore_index=True)
# the reasons quote bpp to 3 digits: a re-run moves them only with the rates (tolerances of `make verify`)
reproduce.save_table(heat_table, fig_dir / "heatmap_cells.csv", floats=reproduce.DERIVED, columns={"reason": reproduce.IGNORE})
rows_order = [f"{c} ({corruptions.FREQUENCY_GROUP[c]})" for c in corruption_names]
fig, axes = plt.subplots(1, 2, figsize=(6 + 1.2 * len(severities) * 2, 0.45 * len(corruption_names) + 2.5),
                         sharey=True, layout="constrained")
lim = np.nanmax(np.abs(heat_table["delta_db"])) if heat_table["delta_db"].notna().any() else 1.0
for ax, (metric, d) in zip(axes, cells.items()):
    sub = d[d["corruption"] != bench.CLEAN]
    sub = sub.assign(row=[f"{c} ({corruptions.FREQUENCY_GROUP[c]})" for c in sub["corruption"]])
    heat = sub.pivot(index="row", columns="severity", values="delta_db").reindex(rows_order)
    text = heat.apply(lambda col: col.map(plotting.signed_label))
    sns.heatmap(heat, annot=text, fmt="", cmap="RdBu", vmin=-lim, vmax=lim, center=0, ax=ax, cbar=ax is axes[-1],
                cbar_kws={"label": "ΔPSNR vs JPEG 2000 at the same bpp (dB)"}, linewidths=0.5, linecolor="w")
    for (i, j), value in np.ndenumerate(heat.to_numpy()):
        if not np.isfinite(value):  # a cell that cannot exist: hatched, with its reason in the table below
            ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor="0.85", hatch="//", edgecolor="0.6", lw=0))
            ax.text(j + 0.5, i + 0.5, "n/a", ha="center", va="center", fontsize=9, color="0.25")
    clean_cell = d.query("corruption == @bench.CLEAN")["delta_db"]
    ax.set_title(f"against the {'corrupted input' if metric == 'psnr_vs_input' else 'clean image'}\n"
                 f"(clean images: {plotting.signed_label(clean_cell.iloc[0], 2) if len(clean_cell) else 'n/a'} dB)")
    ax.set_ylabel("")
fig.suptitle(f"{challenger} at setting {heat_setting:g} vs {REFERENCE} at the same bpp — {why}")
plotting.save_figure(fig, "fig3_heatmap_vs_jpeg2000")
plt.show()
na_cells = heat_table[heat_table["delta_db"].isna()][["metric", "corruption", "severity", "bpp", "reason"]]
if len(na_cells):
    display(na_cells.round(4).style.hide(axis="index"))

# %% [markdown]
# ## Figure 4 — does the ranking of codecs change under shift?
#
# ΔPSNR against JPEG 2000 (against the corrupted input) per frequency group and severity,
# averaged over the group's corruptions; severity 0 is the clean set. Where lines cross, the
# ranking has changed.

# %%
d_in = deltas["psnr_vs_input"].copy()
d_in["group"] = d_in["corruption"].map(corruptions.FREQUENCY_GROUP)
by_severity = d_in[d_in["corruption"] != bench.CLEAN].groupby(["group", "severity", "codec"], as_index=False)["delta_db"].mean()
clean_rows = d_in[d_in["corruption"] == bench.CLEAN]
by_severity = pd.concat([by_severity] + [clean_rows.assign(group=g)[["group", "severity", "codec", "delta_db"]] for g in groups],
                        ignore_index=True)  # one label per row: seaborn refuses repeated index labels (several NIC codecs)
fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), sharey=True, squeeze=False)
for ax, group in zip(axes[0], groups):
    sns.lineplot(data=by_severity[by_severity["group"] == group], x="severity", y="delta_db", hue="codec",
                 style="codec", palette=palette, markers=plotting.codec_markers(palette), dashes=False,
                 estimator=None, ax=ax)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_title(f"{group}-frequency corruptions")
    ax.set_ylabel(f"ΔPSNR vs {REFERENCE} (dB)")
    ax.get_legend().remove()
axes[0, -1].legend(*axes[0, 0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.02, 1.0), title="codec")
plotting.save_figure(fig, "fig4_ranking_under_shift")
plt.show()

# %%
ranks = d_in.assign(rank=d_in.groupby(["corruption", "severity"])["delta_db"].rank(ascending=False, method="min"))
rank_table = ranks.pivot_table(index="codec", columns="group", values="rank", aggfunc="mean", dropna=False)
rank_table.insert(0, "clean", ranks[ranks["corruption"] == bench.CLEAN].set_index("codec")["rank"])
rank_table = rank_table[["clean"] + groups].sort_values("clean")
reproduce.save_table(rank_table.reset_index(), fig_dir / "mean_rank_by_group.csv")  # ranks: a flipped tie is a finding
rank_table.round(2)

# %% [markdown]
# ## Figure 7 — shift effects: what the corruption costs each codec, against its own clean curve
#
# Figures 3 and 4 compare codecs with JPEG 2000, so a codec already behind on clean images
# carries that gap into every condition. Here each codec is compared with **itself**: its
# corrupted curve against its own clean curve at matched bpp (`nic_lib.shift.shift_effects`;
# the formula is in its docstring), once for each of the paper's measures:
#
# - **generalization (G)**: PSNR against the corrupted input, `PSNR(x̂(c(x)), c(x))`, minus the
#   clean curve: how much harder (< 0) or easier (> 0) the shifted images are for the codec;
# - **robustness (R)**: PSNR against the clean image, `PSNR(x̂(c(x)), x)`, minus the clean
#   curve: what the viewer loses to the shift, the corruption included.
#
# A shift costs a codec more where its own error is small (at high rates), so the means run
# over one bpp range for every codec (`SHIFT_BPP_RANGE`: by default the range every codec's
# clean curve covers); a condition whose curve leaves that range has no value, and lines and
# ranks use only the conditions where every codec has one. Top: G, bottom: R, per frequency
# group, the mean over the group's corruptions per severity; each panel's title gives the
# number of corruptions in each mean (where it drops, as for contrast at severities 4-5, coded
# below every codec's clean rates, the mean is over another set of corruptions). The table `shift_effects.csv`
# holds every codec × corruption × severity × measure, each with its gap to JPEG 2000 in that
# condition and on clean images (the absolute numbers of figures 3 and 4) beside it, and the
# same effects over each codec's own range (`bpp_window = own`).

# %%
shift_range, shift_range_note = shift.resolve_bpp_range(condition_points, SHIFT_BPP_RANGE)
print("shift effects over", shift_range_note)
effects = shift.shift_effects(condition_points, reference=REFERENCE, bpp_range=shift_range)
effects_own = shift.shift_effects(condition_points, reference=REFERENCE)
reproduce.save_table(pd.concat([effects.assign(bpp_window="common" if shift_range else "own"),
                                effects_own.assign(bpp_window="own")], ignore_index=True),
                     fig_dir / "shift_effects.csv", floats=reproduce.DERIVED, columns={"reason": reproduce.IGNORE})
shift_means = shift.group_means(effects, corruptions.FREQUENCY_GROUP)
window_text = f"{shift_range[0]:.3g}–{shift_range[1]:.3g} bpp" if shift_range else "each codec's own range"
fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups) + 1.5, 7.2), sharex=True, squeeze=False,
                         layout="constrained")
for row, (measure, label) in enumerate((("G", "G: ΔPSNR vs the input (dB)"), ("R", "R: ΔPSNR vs the clean image (dB)"))):
    for ax, group in zip(axes[row], groups):
        sub = shift_means[(shift_means["measure"] == measure) & (shift_means["group"] == group)]
        if len(sub):
            sns.lineplot(data=sub, x="severity", y="shift_db", hue="codec", style="codec", palette=palette,
                         markers=plotting.codec_markers(palette), dashes=False, estimator=None, ax=ax, legend=row == 0)
            plotting.limit_axes(ax, y=sub["shift_db"])  # the data's range: codecs differ by far less than from 0
        else:
            ax.text(0.5, 0.5, "no condition with every codec\nin this bpp range", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        ax.axhline(0, color="0.5", lw=0.8)  # visible only where the effects straddle 0
        # a mean over fewer corruptions is another mean: say how many, per severity (the same for every codec)
        n_of = sub.groupby("severity")["n_corruptions"].first().reindex(severities).fillna(0).astype(int)
        ax.set_title((f"{group}-frequency corruptions\n" if row == 0 else "")
                     + "corruptions per severity: " + ", ".join(map(str, n_of)), fontsize=9)
        ax.set(xlabel="severity", ylabel=label, xticks=severities)
        if ax.get_legend():
            ax.get_legend().remove()
handles, labels = next((a.get_legend_handles_labels() for a in axes[0] if a.get_legend_handles_labels()[0]), ([], []))
if handles:
    fig.legend(handles, labels, loc="outside right upper", title="codec")
fig.suptitle(f"each codec against its own clean curve, at matched bpp over {window_text}")
plotting.save_figure(fig, "fig7_shift_effects")
plt.show()

# %% [markdown]
# ### Mean rank per frequency group, by shift effect
#
# In every condition the codecs are ranked by their shift effect (1 = loses least), then the
# ranks are averaged over the group's corruptions and severities (`nic_lib.shift.mean_ranks`;
# `n_conditions` ranks each, `n_dropped` conditions left out because some codec has no value
# there). Beside it, figure 4's ranking (by the absolute gap to JPEG 2000, against the input),
# which still holds each codec's clean gap.

# %%
shift_ranks = shift.mean_ranks(effects, corruptions.FREQUENCY_GROUP)
ranks_own = shift.mean_ranks(effects_own, corruptions.FREQUENCY_GROUP)
reproduce.save_table(pd.concat([shift_ranks.assign(bpp_window="common" if shift_range else "own"),
                                ranks_own.assign(bpp_window="own")], ignore_index=True),
                     fig_dir / "shift_mean_rank_by_group.csv")  # ranks: a flipped tie is a finding
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True, layout="constrained")
for ax, measure in zip(axes, ("G", "R")):
    sub = shift_ranks[shift_ranks["measure"] == measure]
    sns.barplot(data=sub, x="group", y="mean_rank", hue="codec", palette=palette, order=groups,
                hue_order=[c for c in palette if c in set(sub["codec"])], ax=ax)
    ax.set(xlabel="frequency group", ylabel="mean rank by shift effect (1 = loses least)",
           title=f"{'generalization G (vs input)' if measure == 'G' else 'robustness R (vs clean)'}")
    ax.set_ylim(0, max(1, shift_ranks["codec"].nunique()) + 0.3)
    if ax.get_legend():
        ax.get_legend().remove()
axes[-1].legend(*axes[0].get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.02, 1.0), title="codec")
fig.suptitle(f"mean rank of each codec's own loss under shift ({window_text})")
plotting.save_figure(fig, "fig8_shift_mean_ranks")
plt.show()
side_by_side = [shift.rank_table(shift_ranks, m).add_prefix(f"{m}: ") for m in ("G", "R")]
display(pd.concat(side_by_side + [rank_table.drop(columns="clean").add_prefix(f"vs {REFERENCE}: ")], axis=1).round(2))

# %% [markdown]
# ## Are the NIC's rates on corrupted inputs real?
#
# The grid takes a NIC model's bpp from its entropy model's estimate (Σ −log2 p) only after
# checking it within 2% of real bitstreams on the clean images. A corruption moves the
# latents away from what the model was trained on, which is where estimate and stream part
# ways (noise gives large, badly predicted latents). This checks the estimate against real
# bitstreams on every corruption of the grid, at `RATE_CHECK_SEVERITIES`, on the first
# `RATE_CHECK_IMAGES` image(s) (`nic_lib.bench.likelihood_rate_under_shift`). Each dot is
# one quality; the grey band is the 2% tolerance.

# %%
rate_check = pd.DataFrame()
check_nic = [c for c in nic_codecs if c.rate == "likelihood"]
if check_nic and RATE_CHECK_IMAGES:
    check_images = list(clean_images.items())[:RATE_CHECK_IMAGES]
    rate_check = cache.cached_table(
        results_dir / "likelihood_vs_bitstream_under_shift.csv",
        {"codecs": [c.description for c in check_nic], "corruptions": corruption_names,
         "severities": list(RATE_CHECK_SEVERITIES), "images": [n for n, _ in check_images]},
        lambda: pd.concat([bench.likelihood_rate_under_shift(c, dataset, corruption_names, RATE_CHECK_SEVERITIES,
                                                             limit=RATE_CHECK_IMAGES, corrupted_out=CORRUPTED_DIR)
                           for c in check_nic], ignore_index=True),
        refresh=REFRESH, data=check_images, models={c.name: c.model_ids for c in check_nic})
    rate_check["est_over_real_pct"] = 100 * (rate_check["bpp_likelihood"] / rate_check["bpp_bitstream"] - 1)
    rate_check["condition"] = [c if c == bench.CLEAN else f"{c} {s}" for c, s in zip(rate_check["corruption"], rate_check["severity"])]
    reproduce.save_table(rate_check, fig_dir / "likelihood_vs_bitstream_under_shift.csv", floats=reproduce.NETWORK)
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * rate_check["condition"].nunique() + 1.5), layout="constrained")
    ax.axvspan(-100 * bench.LIKELIHOOD_RTOL, 100 * bench.LIKELIHOOD_RTOL, color="0.9")
    sns.stripplot(data=rate_check, x="est_over_real_pct", y="condition", hue="setting", palette="viridis", jitter=False,
                  size=5, ax=ax)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="likelihood bpp / real bitstream bpp − 1 (%)  (grey: the 2% tolerance)", ylabel="",
           title=f"{', '.join(c.name for c in check_nic)}: estimate vs real bitstream under shift "
                 f"({RATE_CHECK_IMAGES} image(s) per condition)")
    sns.move_legend(ax, "center left", bbox_to_anchor=(1.02, 0.5), title="quality")
    plotting.save_figure(fig, "fig6_rate_check_under_shift")
    plt.show()
else:
    print("no NIC model with likelihood rates in this grid: nothing to check")

# %% [markdown]
# ## Figure 9 — a second dataset: photos-hr-C, the CLIC-C stand-in
#
# The paper runs the same benchmark on CLIC-C: CLIC 2020's 428 test images, transposed to
# landscape and centre-cropped to 512×768, then corrupted. CLIC 2020 cannot be downloaded on
# this machine, so photos-hr (25 photographs of 1–1.4 MP, the project's CLIC stand-in) is
# built by the same builder (`nic_lib.corruptions.build`, the same transpose and the same
# 512×768 centre crop, `corruptions.CENTRE_CROP`) and evaluated through the same grid, with
# the same codecs and rate points. One caveat: photos-hr is also the project's tuning set
# (`nic_lib.data.TUNING_SET`: the hyperprior models' scale calibration was fitted on these
# very crops), so it is less out of distribution for those models than CLIC would be.
#
# Per dataset: each codec's shift effect against its own clean curve (figure 7's G and R, at
# matched bpp over that dataset's common bpp range), as the mean over the group's corruptions
# and severities (bars), and the mean ranks; the per-dataset tables are saved beside the
# figures (`*_<dataset>.csv`). A dataset that is not found is left out with a notice.

# %%
dataset_tables = {dataset: table}
for other in datasets:
    if other in dataset_tables:
        continue
    try:
        t0 = time.perf_counter()
        corruptions.build(other, CORRUPTED_DIR, corruption_names, severities, limit=other_n_images, workers=workers,
                          progress=False)
        other_grid = bench.Grid(other, grid_codecs, corruptions=corruption_names, severities=severities,
                                limit=other_n_images, with_ms_ssim=with_ms_ssim, corrupted_out=CORRUPTED_DIR)
        other_table = bench.run_grid(other_grid, results_dir, progress=False, refresh=REFRESH)
    except data.DatasetNotFoundError as err:
        print(f"NOTICE: {other} left out: {str(err).splitlines()[0]}")
        continue
    other_table["group"] = other_table["corruption"].map(corruptions.FREQUENCY_GROUP).fillna("clean")
    dataset_tables[other] = other_table
    print(f"{other}-C: {len(other_table)} rows, {other_table['image'].nunique()} images in {time.perf_counter() - t0:.1f} s; "
          f"cache {other_grid.folder(results_dir)}")

per_dataset = {}  # dataset -> its shift effects, group means, ranks, heat-map cells, clean gaps
for name, t in dataset_tables.items():
    pts = bench.rd_points(t, by=("corruption", "severity"))
    rng_, rng_note = shift.resolve_bpp_range(pts, SHIFT_BPP_RANGE)
    print(f"{name}: shift effects over {rng_note}")
    eff = shift.shift_effects(pts, reference=REFERENCE, bpp_range=rng_)
    cells_ds = {m: bench.delta_at_setting(t, challenger, heat_setting, REFERENCE, metric=m)
                for m in ("psnr_vs_input", "psnr_vs_clean")}
    clean_gap = bench.matched_bpp_delta(t, REFERENCE, metric="psnr_vs_input").query("corruption == 'clean'")
    per_dataset[name] = {"range": rng_, "effects": eff, "means": shift.group_means(eff, corruptions.FREQUENCY_GROUP),
                         "ranks": shift.mean_ranks(eff, corruptions.FREQUENCY_GROUP), "cells": cells_ds,
                         "clean_gap": clean_gap.set_index("codec")["delta_db"], "images": t["image"].nunique()}
    if name != dataset:  # the first dataset's tables are figures 3-8's
        reproduce.save_table(pts, fig_dir / f"rd_points_{name}.csv", floats=reproduce.NETWORK, columns={"ms_ssim": reproduce.MS_SSIM})
        reproduce.save_table(eff, fig_dir / f"shift_effects_{name}.csv", floats=reproduce.DERIVED, columns={"reason": reproduce.IGNORE})
        reproduce.save_table(per_dataset[name]["ranks"], fig_dir / f"shift_mean_rank_by_group_{name}.csv")

bars = pd.concat([d["means"].groupby(["measure", "group", "codec"], as_index=False)["shift_db"].mean().assign(dataset=name)
                  for name, d in per_dataset.items()], ignore_index=True)
fig, axes = plt.subplots(2, len(per_dataset), figsize=(4.6 * len(per_dataset) + 1.8, 7.0), squeeze=False, sharey="row",
                         layout="constrained")
for row, measure in enumerate(("G", "R")):
    for ax, name in zip(axes[row], per_dataset):
        sub = bars[(bars["measure"] == measure) & (bars["dataset"] == name)]
        if len(sub):
            sns.barplot(data=sub, x="group", y="shift_db", hue="codec", palette=palette,
                        order=[g for g in ("low", "mid", "high") if g in set(sub["group"])],
                        hue_order=[c for c in palette if c in set(sub["codec"])], ax=ax, legend=row == 0 and ax is axes[0, -1])
        else:
            ax.text(0.5, 0.5, "no condition with every codec\nin this bpp range", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        ax.axhline(0, color="0.5", lw=0.8)
        r = per_dataset[name]["range"]
        ax.set_title((f"{name}-C ({per_dataset[name]['images']} image(s))\n" if row == 0 else "")
                     + (f"{r[0]:.3g}–{r[1]:.3g} bpp" if r else "each codec's own bpp range"), fontsize=9)
        ax.set(xlabel="frequency group", ylabel=("G: ΔPSNR vs the input (dB)" if measure == "G"
                                                 else "R: ΔPSNR vs the clean image (dB)"))
if axes[0, -1].get_legend():
    sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1.0), title="codec")
fig.suptitle("shift effect per dataset: each codec against its own clean curve, mean over corruptions and severities")
plotting.save_figure(fig, "fig9_shift_effects_per_dataset")
plt.show()
display(pd.concat({name: pd.concat([shift.rank_table(d["ranks"], m).add_prefix(f"{m}: ") for m in ("G", "R")], axis=1)
                   for name, d in per_dataset.items()}, names=["dataset"]).round(2))

# %% [markdown]
# ## Findings (generated from the tables above)
#
# ### Paper vs here
#
# The paper's claims about NIC under shift, judged on the heat map's cells (figure 3: the
# compared codec at one setting against JPEG 2000 at the same bpp), once against the
# corrupted input and once against the clean image. Every rule reads a condition's gap
# *relative to the clean images' gap*, so a codec already behind JPEG 2000 on clean images
# is judged by what the shift changes (`nic_lib.claims`; the rules are written in the table).
# The last rows judge the same claims on the shift effects of figure 7 (each codec against
# its own clean curve, G and R) and their mean ranks, with no reference codec in the effect.

# %%
def claim_input(cells_of_metric):
    """The heat map's cells as the claim rules read them: a frequency group and a label per condition."""
    d = cells_of_metric.assign(group=cells_of_metric["corruption"].map(corruptions.FREQUENCY_GROUP).fillna("clean"))
    return d.assign(condition=[f"{c} {s}" for c, s in zip(d["corruption"], d["severity"])])


claims_table = pd.concat([claims.ood_claims(claim_input(cells[m]), challenger, REFERENCE, against=label)
                          for m, label in (("psnr_vs_input", "PSNR vs the corrupted input"),
                                           ("psnr_vs_clean", "PSNR vs the clean image"))]
                         + [claims.ood_shift_claims(effects, shift_ranks, challenger, REFERENCE, corruptions.FREQUENCY_GROUP)]
                         + [claims.ood_dataset_claims(claim_input(d["cells"]["psnr_vs_input"]), d["effects"], d["ranks"],
                                                      challenger, REFERENCE, corruptions.FREQUENCY_GROUP, f"{name}-C")
                            for name, d in per_dataset.items() if name != dataset],
                         ignore_index=True)
if not has_nic:
    claims_table["measured here"] = f"(no NIC model: {challenger} stands in) " + claims_table["measured here"]
reproduce.save_table(claims_table, fig_dir / "claims.csv", columns={"measured here": reproduce.IGNORE})  # numbers in text
display(Markdown(claims.to_markdown(claims_table)))

# %% [markdown]
# ### Measured here

# %%
lines = []
order = clean_delta.sort_values(ascending=False)
lines.append("- Clean images, ΔPSNR vs " + REFERENCE + " at matched bpp: "
             + ", ".join(f"**{c}** {v:+.2f} dB" for c, v in order.items()) + ".")
if not has_nic:
    lines.append(f"- No NIC checkpoint was found, so the heat map compares **{challenger}** (the best classic codec on "
                 f"clean images) with {REFERENCE}; NIC models join the grid once trained.")
for group in groups:
    g = by_severity[(by_severity["group"] == group) & (by_severity["severity"] == max(severities))]
    if len(g) and g["delta_db"].notna().any():
        best = g.loc[g["delta_db"].idxmax()]
        lines.append(f"- {group}-frequency corruptions at severity {max(severities)}: best codec against the corrupted input is "
                     f"**{best['codec']}** ({best['delta_db']:+.2f} dB vs {REFERENCE}).")
changed = [g for g in groups if list(rank_table[g].sort_values().index[:1]) != list(rank_table["clean"].sort_values().index[:1])]
lines.append("- The top-ranked codec " + (f"changes under {', '.join(changed)}-frequency corruptions."
                                          if changed else "is the same on clean images and under every frequency group."))
h = cells["psnr_vs_input"].query("corruption != @bench.CLEAN").dropna(subset=["delta_db"])
if len(h):
    worst, best_c = h.loc[h["delta_db"].idxmin()], h.loc[h["delta_db"].idxmax()]
    lines.append(f"- {challenger} at setting {heat_setting:g} vs {REFERENCE} at the same bpp (against the input) ranges from "
                 f"{worst['delta_db']:+.2f} dB ({worst['corruption']}, severity {worst['severity']}) to {best_c['delta_db']:+.2f} dB "
                 f"({best_c['corruption']}, severity {best_c['severity']}); it loses to {REFERENCE} in "
                 f"{int((h['delta_db'] < 0).sum())} of {len(h)} conditions.")
hc = cells["psnr_vs_clean"].query("corruption != @bench.CLEAN").dropna(subset=["delta_db"])
if len(hc):
    per_group = hc.assign(group=hc["corruption"].map(corruptions.FREQUENCY_GROUP)).groupby("group")["delta_db"]
    lines.append(f"- {challenger} vs {REFERENCE} against the **clean** image, mean over each group's corruptions and "
                 "severities (range in brackets): "
                 + "; ".join(f"{g} {per_group.mean()[g]:+.2f} dB [{per_group.min()[g]:+.1f}, {per_group.max()[g]:+.1f}]"
                             for g in groups if g in per_group.mean()) + f"; it beats {REFERENCE} in "
                 f"{int((hc['delta_db'] > 0.05).sum())} of {len(hc)} conditions by more than 0.05 dB.")
na = sorted({f"{r['corruption']} {r['severity']}" for _, r in heat_table[heat_table["delta_db"].isna()].iterrows()})
if na:
    lines.append(f"- {len(na)} condition(s) of the heat map cannot exist ({REFERENCE}'s rate points do not reach "
                 f"{challenger}'s rate there): " + "; ".join(na) + ".")
if len(rate_check):
    shifted_check = rate_check[rate_check["corruption"] != bench.CLEAN]
    off = shifted_check[shifted_check["rel_diff"] > bench.LIKELIHOOD_RTOL]
    worst_check = shifted_check.loc[shifted_check["est_over_real_pct"].abs().idxmax()]
    lines.append(f"- Likelihood vs real bitstream under shift: worst {worst_check['est_over_real_pct']:+.1f}% "
                 f"({worst_check['condition']}, quality {worst_check['setting']}); {len(off)} of {len(shifted_check)} "
                 "condition × quality points outside the 2% tolerance"
                 + (f" ({', '.join(sorted(set(off['condition'])))})." if len(off) else "."))
def least_loss(ranks_of_measure):
    """Per group, the row of the codec with the best mean rank."""
    return ranks_of_measure.loc[ranks_of_measure.groupby("group", sort=False)["mean_rank"].idxmin()].set_index("group")


for measure, words in (("G", "generalization (vs the input)"), ("R", "robustness (vs the clean image)")):
    ranked, own = shift_ranks[shift_ranks["measure"] == measure], ranks_own[ranks_own["measure"] == measure]
    if len(ranked):
        best = least_loss(ranked)
        mean_effect = shift_means[shift_means["measure"] == measure].groupby(["group", "codec"])["shift_db"].mean()
        lines.append(f"- Shift effect, {words}, each codec against its own clean curve over {window_text}: least loss "
                     + "; ".join(f"{g} **{r['codec']}** (mean rank {r['mean_rank']:.2f} of {ranked['codec'].nunique()} "
                                 f"over {r['n_conditions']} conditions, mean effect "
                                 f"{mean_effect.get((g, r['codec']), np.nan):+.2f} dB)" for g, r in best.iterrows()) + ".")
    if len(ranked) and len(own) and shift_range:
        a, b = least_loss(ranked)["codec"], least_loss(own)["codec"]
        moved = [g for g in a.index if g in b.index and a[g] != b[g]]
        lines.append(f"- {measure} over each codec's own bpp range instead of {window_text}: the least-loss codec "
                     + (f"changes in the {', '.join(moved)} group(s) (to " + ", ".join(f"{b[g]} in {g}" for g in moved)
                        + "): the shift effect depends on the rate it is read at." if moved else "is the same in every group."))
for name, d in per_dataset.items():
    if name == dataset:
        continue
    gaps = d["clean_gap"].drop(REFERENCE, errors="ignore")
    lines.append(f"- **{name}-C** ({d['images']} image(s)): clean ΔPSNR vs {REFERENCE} at matched bpp "
                 + ", ".join(f"{c} {v:+.2f} dB" for c, v in gaps.sort_values(ascending=False).items())
                 + f" (on {dataset}: " + ", ".join(f"{c} {v:+.2f} dB" for c, v in clean_delta.items()) + ").")
    for measure in ("G", "R"):
        ranked = d["ranks"][d["ranks"]["measure"] == measure]
        if len(ranked):
            here, there = least_loss(ranked)["codec"], least_loss(shift_ranks[shift_ranks["measure"] == measure])["codec"]
            same = [g for g in here.index if g in there.index and here[g] == there[g]]
            lines.append(f"- {name}-C, shift effect {measure}: least loss " + "; ".join(f"{g} **{c}**" for g, c in here.items())
                         + f"; the same codec as on {dataset} in {len(same)} of {len(here)} group(s).")
drop = points.groupby("group")["psnr_vs_clean"].mean()
if "clean" in drop:
    lines.append("- Mean PSNR against the clean image (all codecs and rates): clean "
                 + f"{drop['clean']:.1f} dB; " + ", ".join(f"{g} {drop[g]:.1f} dB" for g in groups if g in drop) + ".")
display(Markdown("\n".join(lines)))
