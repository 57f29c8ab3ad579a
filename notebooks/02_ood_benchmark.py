# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 — Codecs under distribution shift: Kodak-C
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
# same cache when the grid arguments agree.

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from nic_lib import bench, cache, codecs, corruptions, plotting
from nic_lib.models import CheckpointError, get_model

# %% tags=["parameters"]
PROFILE = "cpu"  # smoke: 2 small embedded images, 3 corruptions, CI; cpu: full Kodak-C (committed figures); full: same, plus published NIC weights
DATASET = None  # None -> "kodak" (cpu/full) or "sample" (smoke: needs no data files)
N_IMAGES = None  # None -> every image (smoke: 2); an int takes the first N
CORRUPTIONS = None  # None -> all 15 (smoke: fog, pixelate, gaussian_noise: one per frequency group)
SEVERITIES = None  # None -> 1..5 (smoke: 1, 5)
CODECS = None  # None -> jpeg, webp, jpeg2000, avif (AVIF at speed 6, see nic_lib.bench; smoke leaves out AVIF, the slowest)
SETTINGS = None  # None -> nic_lib.bench.GRID_SETTINGS (6 rate points each; smoke: 4, the least a BD metric takes)
NIC_MODELS = None  # None -> ["mbt2018"] (smoke: [] — the NIC path is tested in tests/test_bench.py); included only if checkpoints exist
NIC_QUALITIES = [1, 2, 3, 4, 5, 6]  # one checkpoint per quality = one rate point each
NIC_PROFILE = None  # None -> "full" for PROFILE=full (CompressAI's published weights), else "cpu" (this project's checkpoints)
NIC_RATE = "likelihood"  # "likelihood": fast, used only after the grid checks it within 2% of real bitstreams; "bitstream": exact
WITH_MS_SSIM = None  # None -> True (smoke: False; MS-SSIM costs ~100x a PSNR)
REFERENCE = "jpeg2000"  # the classic anchor of the comparisons (the reference code's)
GALLERY_IMAGE = None  # None -> "kodim23" when loaded, else the first image
GALLERY_SEVERITIES = [1, 3, 5]  # severities shown in the gallery
GALLERY_CROP = None  # None -> the whole image (smoke: a 160 px centre crop: 15 x 3 corruptions of a full image cost more than the grid)
WORKERS = None  # processes building the -C images; None -> 1 for smoke (spawning costs more than it saves), else one per core
CORRUPTED_DIR = None  # folder holding <dataset>-C/; None -> the project cache ($NIC_CACHE_DIR/data)
FIGURE_DIR = None  # None -> paper_figures/02_ood_benchmark for cpu, build/figures/<profile>/... otherwise
RESULTS_DIR = None  # None -> build/results/<profile>/02_ood_benchmark (the grid cache)
REFRESH = False  # True recomputes the grid

# %%
NOTEBOOK = "02_ood_benchmark"
smoke = PROFILE == "smoke"
dataset = DATASET or ("sample" if smoke else "kodak")
n_images = N_IMAGES if N_IMAGES is not None else (2 if smoke else None)
corruption_names = list(CORRUPTIONS or (["fog", "pixelate", "gaussian_noise"] if smoke else corruptions.CORRUPTIONS))
severities = list(SEVERITIES or ([1, 5] if smoke else corruptions.SEVERITIES))
codec_request = CODECS or (["jpeg", "webp", "jpeg2000"] if smoke else ["jpeg", "webp", "jpeg2000", "avif"])
gallery_crop = GALLERY_CROP or (160 if smoke else None)
with_ms_ssim = WITH_MS_SSIM if WITH_MS_SSIM is not None else not smoke
nic_names = NIC_MODELS if NIC_MODELS is not None else ([] if smoke else ["mbt2018"])
nic_profile = NIC_PROFILE or ("full" if PROFILE == "full" else "cpu")
workers = WORKERS or (1 if smoke else corruptions.DEFAULT_WORKERS)
available = codecs.available_codecs()
codec_names = [c for c in codec_request if c in available]
if [c for c in codec_request if c not in available]:
    print(f"skipping codecs not available here: {[c for c in codec_request if c not in available]}")
settings = {n: list((SETTINGS or {}).get(n, bench.GRID_SETTINGS.get(n, codecs.get_codec(n).settings))) for n in codec_names}
if SETTINGS is None and smoke:
    settings = {n: [s[i] for i in np.linspace(0, len(s) - 1, 4).round().astype(int)] for n, s in settings.items()}
results_dir = Path(RESULTS_DIR) if RESULTS_DIR else plotting.BUILD_DIR / "results" / PROFILE / NOTEBOOK
plotting.set_style()
fig_dir = plotting.use_figure_dir(plotting.figure_dir(NOTEBOOK, PROFILE, FIGURE_DIR))
print(f"profile={PROFILE}  dataset={dataset}  images={n_images or 'all'}  corruptions={len(corruption_names)}  "
      f"severities={severities}  codecs={codec_names}")
print(f"figures -> {fig_dir}")

# %% [markdown]
# ## Learned codecs: included when their weights exist
#
# This project's small CPU-trained models are loaded from `checkpoints/`; a model without a
# checkpoint is left out with a notice naming the command that trains it, so this notebook
# runs before training finishes and picks the models up afterwards.

# %%
nic_codecs = []
for name in nic_names:
    try:
        models = {q: get_model(name, q, profile=nic_profile) for q in NIC_QUALITIES}
    except (CheckpointError, RuntimeError, ValueError) as err:
        print(f"NOTICE: {name} left out of the grid: {err}")
        continue
    nic_codecs.append(bench.NicCodec(name, models, rate=NIC_RATE))
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
# Rows follow the paper's frequency grouping (low, mid, high).

# %%
clean_images = dict(corruptions.load_clean(dataset, n_images))
gallery_image = GALLERY_IMAGE or ("kodim23" if "kodim23" in clean_images else next(iter(clean_images)))
clean = clean_images[gallery_image]
if gallery_crop:  # a centre crop: the same corruptions on fewer pixels (the -C files hold the whole image)
    top, left = [max(0, (side - gallery_crop) // 2) for side in clean.shape[:2]]
    clean = clean[top:top + gallery_crop, left:left + gallery_crop]
gallery = list(corruptions.CORRUPTIONS)  # the gallery always shows all 15: one image is cheap
fig, axes = plt.subplots(len(gallery), 1 + len(GALLERY_SEVERITIES),
                         figsize=(2.2 * (1 + len(GALLERY_SEVERITIES)), 1.6 * len(gallery)))
for row, name in zip(axes, gallery):
    row[0].imshow(clean)
    row[0].set_ylabel(f"{name}\n({corruptions.FREQUENCY_GROUP[name]})", fontsize=8)
    for ax, severity in zip(row[1:], GALLERY_SEVERITIES):
        ax.imshow(corruptions.corrupt(clean, name, severity, gallery_image))
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
for ax, title in zip(axes[0], ["clean"] + [f"severity {s}" for s in GALLERY_SEVERITIES]):
    ax.set_title(title, fontsize=9)
fig.suptitle(f"{dataset}-C: {gallery_image}", y=1.0)
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
cache.write_table(bench.rd_points(table, by=("corruption", "severity")), fig_dir / "rd_points.csv")
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
fig, axes = plt.subplots(2, len(groups), figsize=(4.6 * len(groups), 8), sharex="col", squeeze=False)  # noise needs far more bits
for col, group in enumerate(groups):
    for row, metric in enumerate(["psnr_vs_input", "psnr_vs_clean"]):
        ax = axes[row, col]
        shifted = points[points["group"] == group]
        sns.lineplot(data=shifted, x="bpp", y=metric, hue="codec", marker="o", sort=True, estimator=None, ax=ax)
        base = points[points["group"] == "clean"]
        sns.lineplot(data=base, x="bpp", y=metric, hue="codec", linestyle="--", alpha=0.5, sort=True,
                     estimator=None, ax=ax, legend=False)
        ax.set_title(f"{group}-frequency corruptions" if row == 0 else "")
        ax.set_xlabel("bits per pixel (bpp)")
        ax.set_ylabel({"psnr_vs_input": "PSNR vs corrupted input (dB)", "psnr_vs_clean": "PSNR vs clean (dB)"}[metric])
        if not (row == 0 and col == len(groups) - 1):
            ax.get_legend().remove() if ax.get_legend() else None
sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1.0), title="codec (dashed: clean)")
plotting.save_figure(fig, "fig2_rd_per_frequency_group")
plt.show()

# %% [markdown]
# ## Figure 3 — heat map: a codec against JPEG 2000 per corruption × severity
#
# ΔPSNR at matched bpp (`nic_lib.bench.matched_bpp_delta`: the mean difference of the two
# RD curves, interpolated in log-bpp over the rate range both cover; positive = better than
# JPEG 2000). The compared codec is the NIC model when one is available; until then it is
# the best classic codec on clean images (by the same measure), and the title says so.

# %%
deltas = {m: bench.matched_bpp_delta(table, REFERENCE, metric=m) for m in ("psnr_vs_input", "psnr_vs_clean")}
clean_delta = deltas["psnr_vs_input"].query("corruption == 'clean' and codec != @REFERENCE").set_index("codec")["delta_db"]
if has_nic:
    challenger, why = nic_codecs[0].name, "NIC model"
else:
    challenger, why = clean_delta.idxmax(), "best classic codec on clean images (no NIC checkpoint yet)"
cache.write_table(pd.concat(deltas.values(), ignore_index=True), fig_dir / "delta_psnr_vs_jpeg2000.csv")
fig, axes = plt.subplots(1, 2, figsize=(6 + 1.2 * len(severities) * 2, 0.45 * len(corruption_names) + 2), sharey=True)
for ax, (metric, d) in zip(axes, deltas.items()):
    sub = d[(d["codec"] == challenger) & (d["corruption"] != bench.CLEAN)]
    heat = sub.pivot(index="corruption", columns="severity", values="delta_db").reindex(corruption_names)
    heat.index = [f"{c} ({corruptions.FREQUENCY_GROUP[c]})" for c in heat.index]
    lim = np.nanmax(np.abs(heat.to_numpy())) if np.isfinite(heat.to_numpy()).any() else 1.0
    sns.heatmap(heat, annot=True, fmt=".1f", cmap="RdBu", vmin=-lim, vmax=lim, center=0, ax=ax,
                cbar_kws={"label": "ΔPSNR (dB)"})
    ax.set_title(f"against the {'corrupted input' if metric == 'psnr_vs_input' else 'clean image'}\n"
                 f"(clean: {d.query('corruption == @bench.CLEAN and codec == @challenger')['delta_db'].iloc[0]:+.2f} dB)")
    ax.set_ylabel("")
axes[1].tick_params(axis="y", left=False, labelleft=False)
fig.tight_layout()
fig.suptitle(f"{challenger} vs {REFERENCE} at matched bpp — {why}", y=1.06)
plotting.save_figure(fig, "fig3_heatmap_vs_jpeg2000")
plt.show()

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
by_severity = pd.concat([by_severity] + [clean_rows.assign(group=g)[["group", "severity", "codec", "delta_db"]] for g in groups])
fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), sharey=True, squeeze=False)
for ax, group in zip(axes[0], groups):
    sns.lineplot(data=by_severity[by_severity["group"] == group], x="severity", y="delta_db", hue="codec",
                 marker="o", estimator=None, ax=ax)
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
cache.write_table(rank_table.reset_index(), fig_dir / "mean_rank_by_group.csv")
rank_table.round(2)

# %% [markdown]
# ## Findings (generated from the tables above)

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
h = deltas["psnr_vs_input"].query("codec == @challenger and corruption != @bench.CLEAN").dropna(subset=["delta_db"])
if len(h):
    worst, best_c = h.loc[h["delta_db"].idxmin()], h.loc[h["delta_db"].idxmax()]
    lines.append(f"- {challenger} vs {REFERENCE} (against the input) ranges from {worst['delta_db']:+.2f} dB "
                 f"({worst['corruption']}, severity {worst['severity']}) to {best_c['delta_db']:+.2f} dB "
                 f"({best_c['corruption']}, severity {best_c['severity']}); it loses to {REFERENCE} in "
                 f"{int((h['delta_db'] < 0).sum())} of {len(h)} conditions.")
hc = deltas["psnr_vs_clean"].query("codec == @challenger and corruption != @bench.CLEAN").dropna(subset=["delta_db"])
if len(hc):
    per_group = hc.assign(group=hc["corruption"].map(corruptions.FREQUENCY_GROUP)).groupby("group")["delta_db"]
    lines.append(f"- {challenger} vs {REFERENCE} against the **clean** image, mean over each group's corruptions and "
                 "severities (range in brackets): "
                 + "; ".join(f"{g} {per_group.mean()[g]:+.2f} dB [{per_group.min()[g]:+.1f}, {per_group.max()[g]:+.1f}]"
                             for g in groups if g in per_group.mean()) + f"; it beats {REFERENCE} in "
                 f"{int((hc['delta_db'] > 0.05).sum())} of {len(hc)} conditions by more than 0.05 dB.")
drop = points.groupby("group")["psnr_vs_clean"].mean()
if "clean" in drop:
    lines.append("- Mean PSNR against the clean image (all codecs and rates): clean "
                 + f"{drop['clean']:.1f} dB; " + ", ".join(f"{g} {drop[g]:.1f} dB" for g in groups if g in drop) + ".")
display(Markdown("\n".join(lines)))
