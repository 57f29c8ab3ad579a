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
# # 00 — Classic codecs on Kodak: the baseline every learned codec is measured against
#
# Every paper in this repository reports its learned codec against JPEG, WebP, JPEG 2000 and
# newer standards. Those comparisons are only as good as the baselines: a JPEG 2000 encoder
# left on its default (reversible 5/3 wavelet, no colour transform) loses several dB. This
# notebook measures the four codecs Pillow ships — **JPEG, WebP, JPEG 2000 (OpenJPEG) and
# AVIF (libavif/aom)** — configured as their experts would for a PSNR-over-RGB comparison
# (`nic_lib.codecs` documents each choice and what the alternatives cost), on the 24 Kodak
# images, and puts the curves beside the published ones.
#
# The path is the one every notebook follows:
# `nic_lib.data` (images) → `nic_lib.codecs` (encode → bytes → decode) → `nic_lib.metrics`
# (bpp from the real byte count, PSNR-RGB, MS-SSIM) → one tidy row per image × codec ×
# setting, cached on disk → `nic_lib.rd` (curves, BD-rate) → figures via `save_figure`.
#
# Conventions: bpp = 8·bytes / (H·W) of the whole decodable file (headers included); PSNR
# is computed over the three RGB channels of each image, then averaged over images; the
# dataset curve is (mean bpp, mean PSNR) per codec setting, as in CompressAI's results.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from nic_lib import cache, codecs, data, metrics, notebook_setup, plotting, rd, reproduce

# %% tags=["parameters"]
PROFILE = "cpu"  # smoke: tiny embedded images for CI; cpu: all 24 Kodak images (committed figures); full: same as cpu (no learned codec here)
SMOKE = None  # None -> PROFILE == "smoke"; True: smoke sizes with this profile's models (CI runs PROFILE=full so, against a stand-in zoo)
DATASET = None  # None -> "kodak" (cpu/full) or "sample" (smoke, no files needed); any nic_lib.data dataset name
N_IMAGES = None  # None -> every image of the dataset (smoke: 2); an int takes the first N
CODECS = ["jpeg", "webp", "jpeg2000", "avif"]  # Pillow codecs; "bpg"/"vtm" are added when their binaries are on PATH
SETTINGS = None  # None -> each codec's default sweep; or {"jpeg": [..], ...} to override
REFERENCE = "jpeg2000"  # BD-rates are reported against this codec (the papers' usual classic anchor)
CROP_BPP = 0.2  # bits per pixel at which the visual comparison is made (low enough for artefacts to show)
CROP_IMAGE = None  # None -> "kodim23" when loaded (Kodak), else the first image
CROP_BOX = None  # (top, left, size) of the crop; None -> a textured patch of kodim23, else a centred square of 1/3 of the short side
FIGURE_DIR = None  # None -> paper_figures/00_classic_codecs for cpu, build/figures/<profile>/... otherwise
RESULTS_DIR = None  # None -> build/results/<profile>/00_classic_codecs (cached tables)
REFRESH = False  # True recomputes the cached rate sweep

# %% [markdown]
# `notebook_setup.setup` reads the profile knobs as every notebook does (smoke sizes, dataset,
# where figures and cached tables go: the table in its docstring); this notebook's own
# settings follow it.

# %%
run = notebook_setup.setup("00_classic_codecs", PROFILE, smoke=SMOKE, dataset=DATASET, n_images=N_IMAGES,
                           figure_dir=FIGURE_DIR, results_dir=RESULTS_DIR)
smoke, dataset, n_images, results_dir, fig_dir = run.smoke, run.dataset, run.n_images, run.results_dir, run.fig_dir
available = codecs.available_codecs()  # looks for bpg/vtm programs on PATH: ask once
codec_names = [c for c in CODECS if c in available] + [c for c in ("bpg", "vtm") if c in available and c not in CODECS]
skipped = [c for c in CODECS if c not in codec_names]
if skipped:
    print(f"skipping codecs not available on this machine: {skipped}")
sweep_settings = {n: list((SETTINGS or {}).get(n, codecs.get_codec(n).settings)) for n in codec_names}
if SETTINGS is None and smoke:
    # four settings per codec (the minimum for a BD-rate), spread over its default sweep
    for name, full_sweep in sweep_settings.items():
        sweep_settings[name] = codecs.spread_settings(full_sweep, 4)
images = data.load_images(dataset, limit=n_images)
print(f"profile={PROFILE}  dataset={dataset}  images={len(images)}  codecs={codec_names}")
print(f"figures -> {fig_dir}")

# %% [markdown]
# ## The codecs and how they are configured
#
# Each codec's docstring records the configuration and what was measured for the
# alternatives; the table below is generated from the code, so it is what actually ran.

# %%
pd.DataFrame(
    [{"codec": n, "settings": sweep_settings[n], "configuration": codecs.get_codec(n).description} for n in codec_names]
).style.hide(axis="index")

# %% [markdown]
# ## The rate sweep: one row per image × codec × setting
#
# Cached under `RESULTS_DIR`; the cache key holds the dataset, image names, codec
# configurations and settings, so a change to any of them recomputes it.

# %%
key = {
    "dataset": dataset,
    "images": [name for name, _ in images],
    "codecs": {n: codecs.get_codec(n).description for n in codec_names},
    "settings": sweep_settings,
}
t0 = time.perf_counter()
sweep = cache.cached_table(
    results_dir / "rate_sweep.csv", key, lambda: codecs.rate_sweep(images, codec_names, settings=sweep_settings), refresh=REFRESH,
    data=images, models=None,
)
print(f"{len(sweep)} rows in {time.perf_counter() - t0:.1f} s")
sweep.head()

# %%
curves = rd.rd_table(sweep)
# tolerances of `make verify`: Pillow's codecs repeat bytes and PSNR exactly; MS-SSIM runs float32 convolutions
reproduce.save_table(curves, fig_dir / "rd_curves.csv", columns={"ms_ssim": reproduce.MS_SSIM, "ms_ssim_db": reproduce.MS_SSIM})
curves.round(4)

# %% [markdown]
# ## Figure 1 — Kodak rate–distortion curves (PSNR-RGB), measured here and published
#
# Solid lines: measured in this run, each codec in its colour and marker of every notebook
# (`nic_lib.plotting.CODEC_STYLES`); the axes end where the measured points end, so a
# published curve reaching further is clipped. Dashed: published curves from CompressAI's
# `results/image/kodak` (transcribed in `nic_lib/resources/kodak_rd_anchors.csv`): the same
# Pillow codecs as run by CompressAI's authors, BPG (x265, 4:4:4), VTM, and two learned
# codecs trained on GPUs (the hyperprior and mbt2018), for orientation.

# %%
ANCHORS = ["jpeg-pillow", "webp-pillow", "jpeg2000-ffmpeg", "bpg444-x265", "vtm", "compressai-bmshj2018-hyperprior", "compressai-mbt2018"]
anchors = rd.load_anchors(ANCHORS)
fig, ax = plt.subplots(figsize=(7.5, 5.5))
# published points are Kodak averages: drawing them over another dataset would mislead
rd.plot_rd(curves, y="psnr_rgb", anchors=anchors if dataset == "kodak" else None, ax=ax)
sns.move_legend(ax, "center left", bbox_to_anchor=(1.02, 0.5), title=None)
ax.set_title(f"{dataset}: {len(images)} images, PSNR over RGB")
plotting.save_figure(fig, "fig1_rd_psnr")
plt.show()

# %% [markdown]
# ## Figure 2 — MS-SSIM (in dB, −10·log10(1 − MS-SSIM))
#
# No published MS-SSIM anchors are drawn: the anchor file holds PSNR only.

# %%
fig, ax = plt.subplots(figsize=(7.5, 5.5))
rd.plot_rd(curves, y="ms_ssim_db", ax=ax)
sns.move_legend(ax, "center left", bbox_to_anchor=(1.02, 0.5), title=None)
ax.set_title(f"{dataset}: MS-SSIM")
plotting.save_figure(fig, "fig2_rd_msssim")
plt.show()

# %% [markdown]
# ## Table 1 — BD-rate against JPEG 2000
#
# BD-rate: the average difference in bits needed for the same quality, over the quality
# range both curves cover (negative = fewer bits than the reference). Computed with the
# `bjontegaard` package (see `nic_lib.rd.bd_rate`).

# %%
bd_psnr_table = rd.bd_rate_table(curves, reference=REFERENCE, metric="psnr_rgb")
bd_msssim_table = rd.bd_rate_table(curves, reference=REFERENCE, metric="ms_ssim_db")
bd = bd_psnr_table.merge(bd_msssim_table, on=["codec", "reference"], suffixes=("_psnr", "_msssim"))
reproduce.save_table(bd, fig_dir / "bd_rate_vs_jpeg2000.csv", columns={c: reproduce.DERIVED for c in bd if c.endswith("_msssim") and bd[c].dtype.kind == "f"})
bd.round(2)

# %% [markdown]
# ## Table 2 — our configuration against the published curve for the same codec
#
# The published Pillow curves (CompressAI) were made with default settings; ours should be
# at least as good. This check is only meaningful on the full Kodak set.

# %%
twin = rd.published_comparison(curves)
full_kodak = dataset == "kodak" and len(images) == len(data.get_spec("kodak").files)
if not full_kodak:
    print("not the full Kodak set: this comparison is indicative only")
twin.round(2)

# %% [markdown]
# ## Figure 3 — what the bits buy: crops at matched bpp
#
# Each codec encodes the image at the setting whose bpp on *this image* is closest to
# `CROP_BPP` (`nic_lib.codecs.encode_at_bpp` bisects the setting), and the same crop of every
# reconstruction is shown with its bpp and PSNR (both over the whole image).

# %%
# kodim23 when it was loaded (N_IMAGES may stop before it), else the first image
crop_image = CROP_IMAGE or ("kodim23" if "kodim23" in dict(images) else images[0][0])
if crop_image not in dict(images):
    raise ValueError(f"CROP_IMAGE={crop_image!r} is not among the loaded images {[n for n, _ in images]}; "
                     "pass one of them (or raise N_IMAGES)")
original = dict(images)[crop_image]
h, w = original.shape[:2]
if CROP_BOX is not None:
    top, left, size = CROP_BOX
elif crop_image == "kodim23":
    top, left, size = 170, 120, 160  # the blue-and-yellow macaw's eye and striped face: fine texture
else:
    size = min(h, w) // 3
    top, left = (h - size) // 2, (w - size) // 2
panels = [("original", original, "")]
for codec_name in codec_names:
    setting, stream = codecs.encode_at_bpp(codec_name, original, CROP_BPP)
    recon = codecs.get_codec(codec_name).decode(stream)
    label = f"{metrics.bpp(len(stream), h, w):.3f} bpp, {metrics.psnr(original, recon):.2f} dB"
    panels.append((f"{codec_name} ({codecs.get_codec(codec_name).setting_name} {setting:.3g})", recon, label))
fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
for ax, (title, img, label) in zip(axes, panels):
    ax.imshow(img[top : top + size, left : left + size], interpolation="nearest")
    ax.set_title(f"{title}\n{label}", fontsize=10)
    ax.axis("off")
fig.suptitle(f"{crop_image}, crop {size}x{size} at ({top}, {left}); target {CROP_BPP} bpp")
plotting.save_figure(fig, "fig3_crops_matched_bpp")
plt.show()

# %% [markdown]
# ## Speed
#
# Mean seconds per image (this machine: 2 CPU cores; encoders' own threading as configured).

# %%
speed = sweep.groupby("codec")[["encode_s", "decode_s"]].mean().round(4)
speed

# %% [markdown]
# ## Findings (generated from the tables above)

# %%
lines = []
order = bd_psnr_table.sort_values("bd_rate_percent")
for _, row in order.iterrows():
    if row["codec"] == REFERENCE:
        continue
    if np.isfinite(row["bd_rate_percent"]):
        verb = "fewer" if row["bd_rate_percent"] < 0 else "more"
        lines.append(f"- **{row['codec']}** needs {abs(row['bd_rate_percent']):.1f}% {verb} bits than {REFERENCE} for the same PSNR-RGB (BD-rate over the shared range).")
for _, row in bd.iterrows():
    a, b = row["bd_rate_percent_psnr"], row["bd_rate_percent_msssim"]
    if row["codec"] != REFERENCE and np.isfinite(a) and np.isfinite(b) and np.sign(a) != np.sign(b):
        lines.append(f"- The metric changes the verdict for **{row['codec']}**: {a:+.1f}% BD-rate vs {REFERENCE} by PSNR, {b:+.1f}% by MS-SSIM.")
best_codec = order.iloc[0]["codec"] if np.isfinite(order.iloc[0]["bd_rate_percent"]) else REFERENCE
lines.append(f"- Best classic codec measured here by PSNR BD-rate: **{best_codec}**.")
for _, row in twin.iterrows():
    if np.isfinite(row["bd_rate_%"]):
        comparison = "better than" if row["bd_rate_%"] <= 0 else "WORSE than"
        lines.append(f"- Our {row['codec']} is {comparison} the published `{row['published']}` curve: BD-rate {row['bd_rate_%']:+.1f}%"
                     + ("" if full_kodak else " (indicative: not the full Kodak set)") + ".")
slowest = speed["encode_s"].idxmax()
lines.append(f"- Slowest encoder: {slowest} ({speed.loc[slowest, 'encode_s']:.2f} s per image).")
display(Markdown("\n".join(lines)))
