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
# # 05 — PQ-MIM: product quantization and a masked-image-modeling entropy model
#
# El-Nouby et al. (TMLR 2023) compress images with a VQ-VAE whose quantizer is a **product
# quantizer** (each latent vector split into M sub-vectors, each with its own K-entry
# codebook) and code the resulting token grid with a **masked-image-modeling (MIM)
# transformer**: the codes are revealed in a few steps, and every step's codes are coded
# with the probabilities the transformer predicts from the codes already revealed.
#
# No implementation is public and the paper does not give its sizes; this repository's
# choices (all in `nic_lib/models/pqmim/`, each a named constant with its reason):
#
# | choice | value | why |
# |---|---|---|
# | downsampling | 16 | 4 stride-2 convolutions, as the VQ-VAE grids of MaskGIT |
# | codebooks | EMA updates (γ = 0.99), dead-code restarts, commitment β = 0.25 | VQ-VAE / VQ-VAE-2 / Jukebox practice |
# | MIM model | pre-norm transformer, depthwise-conv positional encoding | works on any grid size (Kodak is 48×32 tokens; cpu training windows 12×12, drawn from code maps of whole training images computed once) |
# | masking unit | one code (a position and a sub-quantizer), per-codebook mask embeddings | the M sub-vectors of a patch depend on each other; masking whole positions would hide that |
# | training masks | `schedule` law: ⌈γ·L⌉ of the L = tokens·M codes hidden, γ drawn at the fractions where the coding schedule codes a code, P(γ = 1 − C_{s−1}/L) = n_s/L, loss averaged per crop (M8: MaskGIT's cosine law, ⌈cos(πr/2)·L⌉, r ~ U[0,1); each checkpoint's law is in the table below) | the expected training loss is then the schedule's bits per code; MaskGIT's law hides over 90% of the codes in 29% of its masks, while the schedule codes 13% of its codes that hidden |
# | coding schedule | S = 10 steps, known fraction (s/S)^2.2; M rounds over R2 quasi-random positions, one code of every position per round | M2T: deterministic schedules work as well as adaptive ones; gains saturate at 8–12 steps |
# | entropy coder | CompressAI rANS, per-symbol categorical tables at 16-bit precision | real bitstreams, decode checked to reproduce the codes |
# | attention at inference | local: each token attends to a (2r+1)×(2r+1) window; r tuned per checkpoint on held-out photos, written in the stream header | the model is trained on 12×12-token windows; a whole Kodak grid (32×48) is far larger (section "Local attention" below) |
#
# Path: `nic_lib.data` → `nic_lib.models.pqmim` (encode → bytes → decode) →
# `nic_lib.metrics` → tidy tables (cached) → `nic_lib.rd` / figures via `save_figure`. The
# findings open with a table of the paper's claims against this run's numbers
# (`nic_lib.claims`).

# %%
import json
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from nic_lib import cache, claims, codecs, coding, colour, data, extreme, metrics, neural, notebook_setup, perceptual, plotting, rd, reproduce, train_pqmim
from nic_lib.models import checkpoints, hub, identity, pqmim, zoo

# %% tags=["parameters"]
PROFILE = "cpu"  # smoke: trains a tiny model for a few hundred steps (CI); cpu: checkpoints/pqmim/*.pt (committed figures); full: same PQ-MIM models, mbt2018 with CompressAI's published weights
SMOKE = None  # None -> PROFILE == "smoke"; True: smoke sizes with this profile's models (CI runs PROFILE=full so, against a stand-in zoo)
DEVICE = None  # None -> "cuda" when PyTorch sees a GPU, else "cpu": where the mbt2018 comparison runs (PQ-MIM runs on the CPU)
DATASET = None  # None -> "kodak" (cpu/full) or "sample" (smoke: scikit-image photos, no files needed)
N_IMAGES = None  # None -> every image (smoke: 2)
STEPS = 10  # coding steps S (M2T: 8-12 is where gains saturate)
RADIUS = None  # attention radius: None -> each checkpoint's tuned one (its config's attention_radius; global if none tuned); an int forces it (0 = global)
CHECKPOINT_DIR = None  # None -> nic_lib.models.pqmim.checkpoint_dir() (checkpoints/pqmim)
SMOKE_STEPS_A = 300  # smoke only: stage-A steps of the tiny model (a code check; steps, not seconds, so that a re-run repeats it exactly)
SMOKE_STEPS_B = 1200  # smoke only: stage-B steps of the tiny model (a few seconds each stage on the project's CPU)
QUANTIZER_DIM = 32  # latent dimension D of the rate-point count (the models' default)
J2K_SETTINGS = [0.05, 0.1, 0.15, 0.2, 0.3, 0.5]  # JPEG 2000 target bpp: the low rates PQ-MIM covers
MBT_QUALITIES = [1, 2, 3, 4]  # mbt2018 qualities drawn when their weights exist (cpu checkpoints; full: the zoo's)
LOWRATE_QUALITIES = [-4, -3, -2, -1, 0, 1, 2]  # levels of the low-rate baselines drawn (registry.LOW_RATE_QUALITIES reach ~0.035 bpp; q2 ~0.26 is above PQ-MIM's top point)
EXTREME_BYTES = 200  # byte budget of the extreme setting (the paper's ~200 bytes per image)
GALLERY_IMAGE = None  # None -> "kodim23" when loaded, else the first image
EXTREME_IMAGES = ["kodim23", "kodim04", "kodim15", "kodim20", "kodim21"]  # the ≤ EXTREME_BYTES gallery: colour, a face, a face in paint, a plane on grass, a lighthouse (the first images when these are not loaded)
EXTREME_SAMPLES = 2  # hybrid completions drawn besides the argmax (temperature 1, seeds 0..n-1): how much the MIM model invents
SMOKE_PERCEPTUAL_STEPS = 6  # smoke only: stage-C steps of the tiny model (a code check)
INCEPTION_FEATURES = True  # FID/KID with the Inception network when its weights are on disk (never under smoke: slow on a CPU)
PERCEPTUAL_CROP = 192  # side of the crops of the perceptual gallery (pixels at 1:1)
FIGURE_DIR = None  # None -> paper_figures/05_pq_mim for cpu, build/figures/<profile>/... otherwise
RESULTS_DIR = None  # None -> build/results/<profile>/05_pq_mim (cached tables)
REFRESH = False  # True recomputes the cached tables

# %% [markdown]
# `notebook_setup.setup` reads the profile knobs as every notebook does (smoke sizes, device,
# dataset, where figures and cached tables go: the table in its docstring); this notebook's
# own settings follow it.

# %%
run = notebook_setup.setup("05_pq_mim", PROFILE, smoke=SMOKE, device=DEVICE, dataset=DATASET, n_images=N_IMAGES,
                           figure_dir=FIGURE_DIR, results_dir=RESULTS_DIR)
smoke, model_profile, device, dataset, n_images = run.smoke, run.model_profile, run.device, run.dataset, run.n_images
results_dir, fig_dir = run.results_dir, run.fig_dir
ckpt_dir = Path(CHECKPOINT_DIR) if CHECKPOINT_DIR else pqmim.checkpoint_dir()
images = data.load_images(dataset, limit=n_images)
torch.set_num_threads(1)  # this project's CPU is shared with training runs
print(f"profile={PROFILE}  dataset={dataset}  images={len(images)}  S={STEPS}")
print(f"figures -> {fig_dir}")

# %% [markdown]
# ## The models
#
# Under `cpu`/`full` the trained checkpoints of `checkpoints/pqmim/` are used (one per
# (M, K) rate point, trained by `python -m nic_lib.train_pqmim`). Under `smoke` a **tiny
# model is trained here for a few seconds** (a fixed number of seeded steps, so a re-run
# gives the same model) on scikit-image's sample photos: it exists
# only to run every cell of this notebook; none of its numbers say anything about PQ-MIM.

# %%
if smoke:
    run = train_pqmim.train(train_pqmim.PQMIMTrainConfig(
        N=16, latent_dim=8, M=2, K=16, width=32, layers=1, heads=2, data=("sample",), crop=64,
        batch_size=4, steps_a=SMOKE_STEPS_A, steps_b=SMOKE_STEPS_B, warmup_steps=5, lr_a=2e-3, lr_b=2e-3,
        ckpt_every=0, out_dir=str(results_dir / "smoke-run")))
    paths = [run / "final.pt"]
    # smoke only: tune its attention radius on its own two images (a code check of the tuning
    # path; real checkpoints are tuned on held-out photos by scripts/tune_pqmim_radius.py)
    smoke_tuning = pqmim.tune_attention_radius(checkpoints.load_checkpoint(paths[0])[0], images, STEPS, (0, 1, 2))
    pqmim.save_tuned_radius(paths[0], smoke_tuning, tuning_set=dataset)
else:
    paths = pqmim.find_checkpoints(ckpt_dir)
    if not paths:
        raise FileNotFoundError(
            f"no PQ-MIM checkpoints in {ckpt_dir}. Train the rate points first, e.g.\n"
            "  python -m nic_lib.train_pqmim --M 4 --K 256 --export checkpoints/pqmim/M4-K256.pt\n"
            "(one run per (M, K)), or run this notebook with --profile smoke.")
models, trained = {}, {}
for path in paths:
    model, ckpt = checkpoints.load_checkpoint(path)
    label = f"pq-mim M{model.M} K{model.K}" + (" (smoke)" if smoke else "")
    models[label] = model
    # how stage B was trained (the config states its masking law)
    trained[label] = {"stage_b_steps": ckpt.get("train_config", {}).get("steps_b"),
                      "mask_law": ckpt["config"]["mask_law"]}
pd.DataFrame([{"model": k, **m.architecture(), **trained[k], "file": str(p)}
              for (k, m), p in zip(models.items(), paths)])

# %% [markdown]
# ## The architecture and how it is trained
#
# ```
#  x ─g_a─► z (D × H/16 × W/16) ─split into M sub-vectors of D/M─► PQ: codebook m (K entries) per sub-vector
#                                                                   │
#                           codes c ∈ {0..K−1}^(H/16 × W/16 × M) ◄───┘──► z_q (the codewords) ─g_s─► x̂
#                                     │
#            MIM entropy model: a transformer over the token grid; a token is Σ_m E_m[c_m] where its
#            codes are visible, a mask embedding where hidden; it outputs M categorical distributions
#            per position. Coding: S steps; step s codes its group with P(c | codes of steps < s).
# ```
#
# g_a / g_s: four stride-2 convolutions each way with residual blocks (`pqmim.analysis_transform`,
# `synthesis_transform`); the columns N, latent_dim (D), M, K, width, layers, heads of the table
# above are each model's sizes. Training has three stages (`nic_lib.train_pqmim`), each with
# its own loss; nothing is trained end to end through the entropy model:
#
# - **A, autoencoder and codebooks**: $L_A = \mathrm{MSE}(\hat x, x) + \beta \lVert z - \mathrm{sg}(e)\rVert^2$
#   (x on the 0..1 scale, β = 0.25; sg = stop-gradient, e the chosen codewords). The
#   codebooks are not trained by gradient: each codeword is an exponential moving average
#   (γ = 0.99) of the sub-vectors assigned to it, and unused codewords are restarted on
#   random sub-vectors (VQ-VAE practice). Gradients pass the quantizer straight through.
# - **B, the MIM model** on the frozen codes of the training images: hide ⌈γ·L⌉ of the
#   L codes of a window, predict them from the visible ones,
#   $L_B = \frac{1}{\#\text{masked}} \sum_{\text{masked}} -\ln P(c \mid \text{visible codes})$, nats per code
#   (γ from the coding schedule's own fractions, or MaskGIT's cosine law; the models table
#   says which). Its cross-entropy is the bits per code the coder will pay.
# - **C, perceptual decoder** (optional, section *The perceptual variant*): only g_s is
#   fine-tuned, against a PatchGAN discriminator D:
#   $L_G = \mathrm{MSE}(\hat x, x) + w_{adv} L_{adv}(D(\hat x))$ and $L_D$ the GAN loss of D(x)
#   vs D(sg(x̂)), alternately. The codes, and so the bitstream, stay the base model's.
#
# Rate is not in any loss: it is set by the quantizer (M·log2 K bits per position before
# entropy coding), and the MIM model only codes a fixed set of codes as tightly as it can.

# %% [markdown]
# ### Which codes each step reveals
#
# The coding schedule is fixed by the grid size, M and S alone (`pqmim.coding_schedule`),
# so encoder and decoder agree on it without sending it. Each panel is the token grid of the
# first image after step s: how many of a token's M codes the decoder knows (dark: none,
# bright: all). The schedule makes M rounds over the positions in a spread-out (quasi-random)
# order, one more code of every position per round, and cuts the sequence into S steps of
# growing size (fraction known after step s: (s/S)^2.2): the first steps code few, widely
# spaced codes with little context; the last ones code many, each seeing most of its
# neighbours. Right: codes per step.

# %%
schedule_model = next(iter(models.values()))
grid_h, grid_w = (side // pqmim.DOWNSAMPLING for side in coding.pad_to(coding.to_tensor(images[0][1]), pqmim.DOWNSAMPLING).shape[-2:])
groups = pqmim.coding_schedule(grid_h, grid_w, STEPS, M=schedule_model.M)
step_of = np.empty(grid_h * grid_w * schedule_model.M, dtype=int)
for s_index, units in enumerate(groups, start=1):
    step_of[units.numpy()] = s_index  # unit index = position · M + m
step_of = step_of.reshape(grid_h, grid_w, schedule_model.M)
shown_steps = sorted({int(v) for v in np.round(np.geomspace(1, STEPS, 5))})
fig, axes = plt.subplots(1, len(shown_steps) + 1, figsize=(2.9 * len(shown_steps) + 4, 3.0), layout="constrained",
                         gridspec_kw={"width_ratios": [1] * len(shown_steps) + [1.3]})
for ax, s_shown in zip(axes, shown_steps):
    known = (step_of <= s_shown).sum(-1)  # codes of each token known after step s
    im = ax.imshow(known, cmap="viridis", vmin=0, vmax=schedule_model.M)
    ax.set_title(f"after step {s_shown}: {(step_of <= s_shown).mean():.0%} known", fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    ax.grid(False)
fig.colorbar(im, ax=axes[:-1].tolist(), label=f"codes known (of M = {schedule_model.M})", shrink=0.9,
             ticks=range(schedule_model.M + 1))
axes[-1].bar(range(1, STEPS + 1), [len(g) for g in groups], color=plotting.codec_style("pq-mim")["color"])
axes[-1].set(xlabel="step s", ylabel="codes coded in the step",
             title=f"{grid_h}×{grid_w} tokens × {schedule_model.M} codes, {STEPS} steps")
fig.suptitle(f"coding schedule of {next(iter(models))} on {images[0][0]}")
plotting.save_figure(fig, "fig6_coding_schedule")
plt.show()

# %% [markdown]
# ## PQ vs VQ vs scalar quantization: rate points and codebook sizes
#
# With fixed-length codes a position costs M·log2 K bits. One VQ codebook (M = 1) reaching
# b bits per position needs 2^b codewords; a product quantizer reaches it with M·K
# codewords of D/M numbers; scalar quantization (M = D) is the other extreme. The table
# counts, for a codebook budget of at most 2^16 stored codewords, how many distinct rates
# each kind offers.

# %%
Ms = [m for m in (1, 2, 4, 8, 16, 32) if QUANTIZER_DIM % m == 0]
Ks = [2**b for b in range(1, 17)]
quantizers = pd.DataFrame(pqmim.quantizer_table(QUANTIZER_DIM, Ms, Ks))
stored = quantizers[quantizers["codebook_vectors"] <= 2**16]
rate_points = stored.groupby("kind")["bits_per_position"].agg(["nunique", "min", "max"]).rename(
    columns={"nunique": "distinct_rates", "min": "min_bits", "max": "max_bits"})
reproduce.save_table(quantizers, fig_dir / "quantizer_table.csv")  # counting: exact
# the figure is about the rates the models use: up to twice the largest model's bits per position
model_bits = {label: m.M * np.log2(m.K) for label, m in models.items()}
near = quantizers[quantizers["bits_per_position"] <= 2 * max(model_bits.values())]
fig, ax = plt.subplots(figsize=(7.5, 4.5))
sns.scatterplot(data=near.assign(M=near["M"].astype(str)), x="bits_per_position", y="codebook_vectors", hue="M",
                style="kind", palette=dict(zip(map(str, Ms), sns.color_palette("tab10", len(Ms)))), s=50, ax=ax)
for label, bits in model_bits.items():
    ax.axvline(bits, color=plotting.codec_style(label)["color"], lw=1, ls="--")
    # labelled at the bottom, where no rate point of this range lies (few bits need few codewords)
    ax.text(bits, 0.02, label.replace("pq-mim ", "") + " ", transform=ax.get_xaxis_transform(), rotation=90,
            fontsize=7, ha="right", va="bottom", bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
ax.axhline(2**16, color="0.5", lw=0.8, ls=":")
ax.set_yscale("log", base=2)
plotting.limit_axes(ax, x=np.r_[near["bits_per_position"], 0.0], y=near["codebook_vectors"])
ax.set_xlabel("fixed-length bits per position (M log2 K)")
ax.set_ylabel("codewords stored (M·K)")
ax.set_title(f"D = {QUANTIZER_DIM}: rate vs codebook size (dashed: the models; dotted: 2^16 budget)", fontsize=10)
sns.move_legend(ax, "center left", bbox_to_anchor=(1.02, 0.5))
plotting.save_figure(fig, "fig1_rate_points")
plt.show()
rate_points

# %% [markdown]
# ## The MIM entropy model: bits per step as context is revealed
#
# Each image is coded for real; `bits_per_step` holds Σ −log2 P of every step's codes.
# Divided by the number of codes in the step, it shows how the cost of a code falls as
# more of the grid is visible (step 1 sees nothing; the last step sees ~20% hidden).
#
# A unit of the schedule is one code, not one position (our choice; the paper does not say):
# the M codes of a position are predicted as independent given what is visible, so coding
# them in one step would give away how strongly the M sub-vectors of one 16x16 patch depend
# on each other. `coding_schedule` makes M rounds over the grid in a spread-out order; each
# round codes one more code of every position, so later codes of a token see its earlier ones.

# %%
radii = {label: (m.entropy_model.attention_radius if RADIUS is None else int(RADIUS)) for label, m in models.items()}
key = {"dataset": dataset, "images": [n for n, _ in images], "steps": STEPS,
       "models": {k: str(p) for k, p in zip(models, paths)}, "radii": radii}
t0 = time.perf_counter()
codes_table = cache.cached_table(results_dir / "pqmim_rates.csv", key,
                                 lambda: pqmim.rate_table(models, images, steps=STEPS, radius=RADIUS), refresh=REFRESH,
                                 data=images, models=paths)
print(f"{len(codes_table)} rows in {time.perf_counter() - t0:.1f} s; every decode exact: {bool(codes_table['exact'].all())}")
print("attention radius per model (0 = global): " + ", ".join(f"{k}: {r}" for k, r in radii.items()))


def compute_steps_table():
    """Σ −log2 P per step and code, with the coding radius and with global attention."""
    rows = []
    for label, model in models.items():
        for name, img in images:
            codes = model.codes(coding.pad_to(coding.to_tensor(img), pqmim.DOWNSAMPLING))[0]
            H, W, M = codes.shape
            sizes = [len(g) for g in pqmim.coding_schedule(H, W, STEPS, M=M)]  # codes per step
            for r in sorted({radii[label], pqmim.GLOBAL_ATTENTION}):
                bits = pqmim.bits_per_step(model.entropy_model, codes, STEPS, radius=r)
                for s, (b, n) in enumerate(zip(bits, sizes), start=1):
                    rows.append({"codec": label, "image": name, "radius": r, "step": s, "codes": n,
                                 "bits": b, "bits_per_code": b / n})
    return pd.DataFrame(rows)


steps_table = cache.cached_table(results_dir / "bits_per_step.csv", key, compute_steps_table, refresh=REFRESH,
                                 data=images, models=paths)
# tolerances of `make verify` (nic_lib.reproduce): bits from the float32 MIM model
reproduce.save_table(steps_table, fig_dir / "bits_per_step.csv", floats=reproduce.NETWORK)
coded_steps = steps_table[steps_table["radius"] == steps_table["codec"].map(radii)]
prior_bits = {label: float(-(m.independent_prior() * m.independent_prior().log2()).sum(-1).mean())
              for label, m in models.items()}
fig, ax = plt.subplots(figsize=(7, 4.5))
pq_palette = plotting.codec_palette(models)
sns.lineplot(data=coded_steps, x="step", y="bits_per_code", hue="codec", style="codec", palette=pq_palette,
             markers=plotting.codec_markers(models), dashes=False, ax=ax)
for label, b in prior_bits.items():
    ax.axhline(b, ls=":", color=pq_palette[label], lw=1.5, label=f"independent prior, {label}")
ax.set_ylabel("bits per code")
ax.set_title(f"Bits per code at each of S={STEPS} steps: MIM (solid) vs the independent prior (dotted)", fontsize=10)
ax.legend(fontsize=8)
plotting.limit_axes(ax, y=np.r_[coded_steps["bits_per_code"], list(prior_bits.values())])
plotting.save_figure(fig, "fig2_bits_per_step")
plt.show()

# %% [markdown]
# ## Bits of the same codes: MIM vs independent prior vs fixed length
#
# `bpp` is the real stream (with its 7-byte header); `bpp_est` is Σ −log2 P under the MIM
# model; `bpp_independent` prices the codes with per-codebook frequencies of the training
# codes; `bpp_fixed` is log2 K bits per code. Issue 7's target: the MIM stream saves at
# least 30% of the independent prior's bits.

# %%
bits_summary = codes_table.groupby("codec")[["bpp", "bpp_est", "bpp_independent", "bpp_fixed", "psnr_rgb"]].mean()
# saving = 1 − bits_MIM / bits_other
bits_summary["saving_vs_independent"] = 1 - bits_summary["bpp"] / bits_summary["bpp_independent"]
bits_summary["saving_vs_fixed"] = 1 - bits_summary["bpp"] / bits_summary["bpp_fixed"]
bits_summary.insert(0, "radius", pd.Series(radii))
reproduce.save_table(bits_summary.reset_index(), fig_dir / "bits_summary.csv", floats=reproduce.NETWORK)
bits_summary.round(4)

# %% [markdown]
# ## Local attention: what the model was trained on vs what it codes
#
# The MIM transformer is trained on 12×12-token windows (192-pixel crops: most training
# images hold no larger window), but codes a whole Kodak image as one 32×48 grid. With
# global attention each token attends to ~10x more tokens than in training, most of them
# farther away than any it has seen. At inference we can instead let each token attend only
# to tokens within Chebyshev distance r (`pqmim.local_attention_mask`); r is written in the
# stream header, so it is the encoder's choice and the decoder follows it.
#
# r is tuned per checkpoint by `python scripts/tune_pqmim_radius.py` on 12 photos-hr crops
# of Kodak's size (held out: not the test images) and stored in the checkpoint's config
# (`attention_radius`), the tuning record beside it as `<name>.radius.json`. Left: that
# tuning run's bits for each radius, relative to global attention. Right: on this notebook's
# images, the bits per code of each step with the tuned radius vs with global attention
# (Σ −log2 P, no coding).

# %%
tuning = []
for label, path in zip(models, paths):
    record = pqmim.radius_path(path)
    if record.is_file():
        rec = json.loads(record.read_text())
        bits = {int(r): b for r, b in rec["bits_by_radius"].items()}
        tuning += [{"codec": label, "radius": r, "bits_vs_global": b / bits[pqmim.GLOBAL_ATTENTION] - 1,
                    "tuning_images": len(rec["images"]), "tuning_set": rec.get("tuning_set", "?")} for r, b in bits.items()]
tuning = pd.DataFrame(tuning, columns=["codec", "radius", "bits_vs_global", "tuning_images", "tuning_set"])
# bpp per image (mean over images, as the bits table above): Σ_steps bits / pixels
pixels = {name: img.shape[0] * img.shape[1] for name, img in images}
per_image_bpp = (steps_table.groupby(["codec", "radius", "image"])["bits"].sum()
                 / steps_table.groupby(["codec", "radius", "image"])["image"].first().map(pixels))
by_radius = per_image_bpp.groupby(["codec", "radius"]).mean().unstack("radius")
radius_summary = pd.DataFrame({
    "radius": pd.Series(radii),
    "bpp_global": by_radius[pqmim.GLOBAL_ATTENTION],
    "bpp_coded_radius": pd.Series({k: by_radius.loc[k, r] for k, r in radii.items()})})
# saving = 1 − bits(r) / bits(global)
radius_summary["saving_vs_global"] = 1 - radius_summary["bpp_coded_radius"] / radius_summary["bpp_global"]
reproduce.save_table(radius_summary.reset_index(names="codec"), fig_dir / "attention_radius.csv", floats=reproduce.NETWORK)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
if len(tuning):
    order = sorted(set(tuning["radius"]) - {pqmim.GLOBAL_ATTENTION}) + [pqmim.GLOBAL_ATTENTION]  # global last
    t = tuning.assign(x=tuning["radius"].map(order.index))
    sns.lineplot(data=t, x="x", y="bits_vs_global", hue="codec", marker="o", ax=axes[0], hue_order=list(models),
                 palette=plotting.codec_palette(models))
    axes[0].set_xticks(range(len(order)), ["global" if r == pqmim.GLOBAL_ATTENTION else str(r) for r in order])
    axes[0].yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:+.1%}"))
    axes[0].set_xlabel("attention radius r (tokens)")
    axes[0].set_ylabel("bits vs global attention")
    axes[0].set_title(f"Tuning: {int(tuning['tuning_images'].max())} {tuning['tuning_set'].iloc[0]} crops, S={STEPS}")
else:
    axes[0].text(0.5, 0.5, "no tuned radius (.radius.json) beside these checkpoints", ha="center", va="center")
    axes[0].axis("off")
compare = steps_table.assign(attention=np.where(steps_table["radius"] == 0, "global", "r = " + steps_table["radius"].astype(str)))
compare = compare.assign(attention=np.where(steps_table["radius"] == steps_table["codec"].map(radii), "coded (" + compare["attention"] + ")", compare["attention"]))
sns.lineplot(data=compare, x="step", y="bits_per_code", hue="codec", style="attention", marker="o", ax=axes[1], errorbar=None,
             palette=plotting.codec_palette(models))
axes[1].set_ylabel("bits per code")
axes[1].set_title(f"{dataset}: coded radius vs global attention")
sns.move_legend(axes[1], "upper right", fontsize=8)
plotting.save_figure(fig, "fig2b_attention_radius")
plt.show()
radius_summary.round(4)

# %% [markdown]
# ## Rate–distortion beside JPEG 2000 and mbt2018
#
# JPEG 2000 at low rates (Pillow/OpenJPEG, configured as in notebook 00, measured here: the
# published JPEG 2000 curve is not drawn again); the mbt2018 cpu models when their
# checkpoints exist (a notice otherwise); on Kodak, the published GPU-trained curves of the
# scale hyperprior, the model the paper compares PQ-MIM with, and of mbt2018. The axes end
# where the measured points end.

# %%
j2k = codecs.get_codec("jpeg2000")
j2k_settings = [float(b) for b in J2K_SETTINGS]
j2k_key = {"dataset": dataset, "images": [n for n, _ in images], "settings": [float(s) for s in j2k_settings], "codec": j2k.description}
try:
    classic = cache.cached_table(results_dir / "j2k_sweep.csv", j2k_key,
                                 lambda: codecs.rate_sweep(images, ["jpeg2000"], settings={"jpeg2000": j2k_settings}, progress=False),
                                 refresh=REFRESH, data=images, models=None)
except ValueError as err:  # a setting outside the codec's range
    print(f"JPEG 2000 skipped: {err}")
    classic = pd.DataFrame()
mbt = {}
for q in MBT_QUALITIES:
    try:
        mbt[q] = hub.get_model("mbt2018", q, profile=model_profile, device=device)
    except checkpoints.CheckpointNotFoundError as err:
        print(f"mbt2018 cpu q{q} not drawn: {str(err).splitlines()[0]} "
              "(train it with `python scripts/train_cpu_profile.py`)")
    except zoo.PretrainedWeightsUnavailableError as err:
        print(f"mbt2018 q{q} (published weights) not drawn: {str(err).splitlines()[0]}")
mbt_label = "mbt2018 (cpu)" if model_profile == "cpu" else "mbt2018"  # full: CompressAI's published weights
learned = pd.DataFrame()
if mbt:
    learned = cache.cached_table(results_dir / ("mbt2018_cpu.csv" if model_profile == "cpu" else "mbt2018_zoo.csv"),
                                 {**j2k_key, "qualities": sorted(mbt)},
                                 lambda: neural.rate_sweep(images, {mbt_label: mbt}, progress=False), refresh=REFRESH,
                                 data=images, models=identity.model_ids(mbt))
# one PQ-MIM curve: each (M, K) checkpoint is one rate point of it
vq_labels = [k for k, m in models.items() if m.M == 1]  # the VQ baseline is not a PQ-MIM rate point
pq_points = codes_table[~codes_table["codec"].isin(vq_labels)].assign(setting=lambda t: t["codec"], codec=f"pq-mim (S={STEPS})")
per_image = pd.concat([pq_points[["image", "codec", "setting", "bpp", "psnr_rgb", "ms_ssim"]],
                       *(t[["image", "codec", "setting", "bpp", "psnr_rgb", "ms_ssim"]] for t in (classic, learned) if len(t))],
                      ignore_index=True)
curves = rd.rd_table(per_image)
reproduce.save_table(curves, fig_dir / "rd_curves.csv", floats=reproduce.NETWORK, columns={c: reproduce.MS_SSIM for c in ("ms_ssim", "ms_ssim_db") if c in curves})
fig, ax = plt.subplots(figsize=(7.5, 5.5))
PUBLISHED = ["compressai-bmshj2018-hyperprior", "compressai-mbt2018"]  # the paper's comparison (hyperprior), and mbt2018
anchors = rd.load_anchors(PUBLISHED) if dataset == "kodak" else None
rd.plot_rd(curves, y="psnr_rgb", anchors=anchors, ax=ax)
sns.move_legend(ax, "center left", bbox_to_anchor=(1.02, 0.5), title=None)
ax.set_title(f"{dataset}: {len(images)} images, PSNR over RGB")
plotting.save_figure(fig, "fig3_rd")
plt.show()
curves.round(4)

# %% [markdown]
# ### BD-rate against the learned baselines at PQ-MIM's rates, and VQ against PQ
#
# Issue 31 asks for a BD-rate of PQ-MIM against this project's scale hyperprior and mbt2018
# at the same rates. The shipped mbt2018 levels start at ~0.22 bpp, above PQ-MIM's points, so
# the low-rate baselines are their own recipes (`scripts/train_cpu_profile.py`: `n96-lowrate`
# adds levels down to ~0.035 bpp; `ablate-bmshj2018-hyperprior-lowrate` is the scale hyperprior
# on those transforms). Each is drawn when its checkpoint exists; otherwise the table says what
# is missing and the command that makes it, and the claims table says "not measured". A
# BD-rate needs four points per curve and a shared range of rates and PSNR
# (`rd.bd_against_baselines`). The VQ baseline (M = 1) is compared with the PQ point of the
# same bits per token when both are trained (`scripts/train_pqmim_cpu.py`, `VQ_PAIR`); it
# is not part of the PQ-MIM curve above.

# %%
LOWRATE = {  # label -> (checkpoint, the command that trains it)
    "mbt2018 low-rate (cpu)": ("checkpoints/mbt2018/n96-lowrate.pt",
                               "python scripts/train_cpu_profile.py --only n96-lowrate"),
    "scale hyperprior low-rate (cpu)": ("checkpoints/bmshj2018-hyperprior/n96-lowrate.pt",
                                        "python scripts/train_cpu_profile.py --only ablate-bmshj2018-hyperprior-lowrate"),
}
lowrate = {}
for label, (path, command) in LOWRATE.items():
    if model_profile == "cpu" and (data.REPO_ROOT / path).is_file():
        lowrate[label] = neural.quality_models(data.REPO_ROOT / path, LOWRATE_QUALITIES, device=device)
    else:
        print(f"{label}: not drawn ({path} " + ("absent" if model_profile == "cpu" else f"is a cpu-profile model; profile {model_profile}")
              + f"); train it with `{command}`")
lowrate_rows = pd.DataFrame()
if lowrate:
    lowrate_rows = cache.cached_table(results_dir / "lowrate_baselines.csv", {**j2k_key, "qualities": LOWRATE_QUALITIES, "labels": sorted(lowrate)},
                                      lambda: neural.rate_sweep(images, lowrate, progress=False), refresh=REFRESH,
                                      data=images, models=identity.model_ids(lowrate))
pq_label = f"pq-mim (S={STEPS})"
baseline_curves = rd.rd_table(pd.concat([per_image, *([lowrate_rows[per_image.columns]] if len(lowrate_rows) else [])], ignore_index=True))
bd_baselines = rd.bd_against_baselines(baseline_curves, pq_label, {
    **{label: command for label, (_, command) in LOWRATE.items()},
    mbt_label: "python scripts/train_cpu_profile.py --only n96-lowrate (its shipped levels start at q1)",
    "jpeg2000": "add lower J2K_SETTINGS"},
    test_command="python scripts/train_pqmim_cpu.py --only M2-K16 (a fourth PQ-MIM rate point)")
reproduce.save_table(bd_baselines, fig_dir / "bd_baselines.csv", floats=reproduce.NETWORK)
display(bd_baselines)
# VQ vs PQ at the same bits per token: the M = 1 checkpoint and the PQ one of equal M log2 K
bits = {label: m.M * np.log2(m.K) for label, m in models.items()}
vq_rows = []
for vq_label in [k for k in models if models[k].M == 1]:
    twins = [k for k in models if models[k].M > 1 and np.isclose(bits[k], bits[vq_label])]
    for label, kind in [(vq_label, "VQ"), *((t, "PQ") for t in twins[:1])]:
        r = codes_table[codes_table["codec"] == label][["bpp", "psnr_rgb"]].mean()
        vq_rows.append({"kind": kind, "model": label, "bits_per_token": bits[label], **r.to_dict()})
vq_table = pd.DataFrame(vq_rows, columns=["kind", "model", "bits_per_token", "bpp", "psnr_rgb"])
if len(vq_table) < 2:
    print("VQ vs PQ not measured: train the pair with `python scripts/train_pqmim_cpu.py --only M1-K256 M2-K16`")
reproduce.save_table(vq_table, fig_dir / "vq_vs_pq.csv", floats=reproduce.NETWORK)
vq_table

# %% [markdown]
# ## Hybrid compression/generation and the extreme regime
#
# Only the first s of the S schedule steps are transmitted; the decoder samples the other
# codes from the MIM model (temperature 1, fixed seed), without retraining. The smallest
# model (fewest bits per position) with the fewest transmitted steps gives the extreme
# setting; the table marks every setting within `EXTREME_BYTES`.

# %%
gallery_name = GALLERY_IMAGE if GALLERY_IMAGE in dict(images) else ("kodim23" if "kodim23" in dict(images) else images[0][0])
gallery_img = dict(images)[gallery_name]
smallest = min(models, key=lambda k: models[k].M * np.log2(models[k].K))
transmit = list(range(STEPS, 0, -1))
hybrid = pqmim.rate_table({smallest: models[smallest]}, [(gallery_name, gallery_img)], steps=STEPS, transmit_steps=transmit, radius=RADIUS)
hybrid["within_budget"] = hybrid["bytes"] <= EXTREME_BYTES
reproduce.save_table(hybrid, fig_dir / "hybrid.csv", floats=reproduce.NETWORK, columns={"ms_ssim": reproduce.MS_SSIM})  # seeded sampler: same codes
shown = sorted({STEPS, *[s for s in (3, 2, 1) if s <= STEPS]}, reverse=True)
fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3.2 * (len(shown) + 1), 3.0))
axes[0].imshow(gallery_img)
axes[0].set_title("original")
gallery_decodes = {}  # transmitted steps -> decoded image (the colour cell below reuses them)
for ax, s in zip(axes[1:], shown):
    r = pqmim.code_image(models[smallest], gallery_img, STEPS, s, radius=RADIUS)
    gallery_decodes[s] = r["x_hat"]
    ax.imshow(r["x_hat"])
    ax.set_title(f"s={s}/{STEPS}: {r['bytes']} B, {metrics.psnr(gallery_img, r['x_hat']):.1f} dB")
for ax in axes:
    ax.axis("off")
fig.suptitle(f"{gallery_name}, {smallest}: transmitted steps s, the rest generated")
plotting.save_figure(fig, "fig4_hybrid_gallery")
plt.show()
hybrid[["transmit_steps", "bytes", "bpp", "psnr_rgb", "within_budget"]]

# %% [markdown]
# ### Where the colours go (issue 31)
#
# The decoded macaw turns orange and the green khaki. `nic_lib.colour.colour_shift`
# measures it on the images above, in CIELAB: Δa* > 0 is redder, Δb* < 0 less yellow, a
# negative hue shift turns yellow toward orange, a chroma ratio below 1 washes colours out;
# `channel_order` stays (0, 1, 2) unless channels were swapped. The stage-by-stage
# measurement (data path, autoencoder without quantizer, product quantizer, coded stream;
# M8 → M4 → M2) is `benchmarks/pqmim_colour.py`: the data path is exact and the quantizer
# adds little; the transforms trained at the lower rates average hues (capacity, not a bug).

# %%
colour_keys = ["delta_L", "delta_a", "delta_b", "delta_E", "hue_shift", "chroma_ratio", "channel_order"]
colour_rows = []
for s, x_hat in gallery_decodes.items():
    shift = colour.colour_shift(gallery_img, x_hat)
    colour_rows.append({"model": smallest, "transmit_steps": s, **{k: shift[k] for k in colour_keys}})
pd.DataFrame(colour_rows).round(2)

# %% [markdown]
# ### The extreme regime as a gallery: PQ-MIM within the byte budget beside the classic codecs' smallest files
#
# Each image is coded by the same model in at most `EXTREME_BYTES` bytes: the most schedule
# steps whose stream fits are transmitted (`pqmim.code_to_budget`), and the decoder completes
# the other codes with the MIM model, once by the argmax (temperature 0, deterministic) and
# `EXTREME_SAMPLES` times by seeded samples at temperature 1. Beside them each classic codec
# (as configured in notebook 00) gives its best file within the budget, or, when it cannot get
# that small, its smallest file (`codecs.smallest`: the low-rate end of its setting range),
# marked "> budget". Rates are whole files, headers included.

# %%
wanted = [n for n in EXTREME_IMAGES if n in dict(images)]
extreme_images = [(n, dict(images)[n]) for n in wanted] or images[:len(EXTREME_IMAGES)]
extreme_table, extreme_pictures = extreme.gallery_table(models[smallest], smallest, extreme_images, EXTREME_BYTES,
                                                        steps=STEPS, samples=EXTREME_SAMPLES, radius=RADIUS)
reproduce.save_table(extreme_table.drop(columns="label", errors="ignore"), fig_dir / "extreme_gallery.csv", floats=reproduce.NETWORK)  # seeded sampler; classic codecs exact
fig = extreme.gallery_figure(extreme_table, extreme_pictures, extreme_images, EXTREME_BYTES,
                             title=f"≤ {EXTREME_BYTES} bytes: {smallest} (s of {STEPS} steps sent, the rest completed) "
                                   "vs each classic codec's smallest file")
plotting.save_figure(fig, "fig4b_extreme_gallery")
plt.show()
extreme_table["label"] = (extreme_table["codec"] + " " + extreme_table["completion"]).str.strip()
extreme_summary = (extreme_table.groupby("label", sort=False)[["bytes", "bpp", "psnr_rgb", "fits"]].mean())
extreme_summary

# %% [markdown]
# ## The perceptual variant
#
# Stage C of `nic_lib.train_pqmim` fine-tunes **only the decoder g_s** with
# MSE + w_adv·L_adv against a PatchGAN discriminator (spectrally normalised, non-saturating
# loss; `nic_lib.perceptual`), trained alternately. The encoder, codebooks and MIM model are
# frozen, so **the bitstream is the base model's, byte for byte**: only the picture drawn
# from the same codes changes. Retrain one with
# `python -m nic_lib.train_pqmim --perceptual-from checkpoints/pqmim/M4-K256.pt --max-minutes-c 10 --export checkpoints/pqmim/M4-K256-perceptual.pt`.
#
# Distribution distances to the originals: the weight-free **sliced Wasserstein distance**
# of ProGAN (7×7 patches of every Laplacian-pyramid level, ×10³ as ProGAN prints it) always;
# **FID/KID** (Inception-v3 pool features on 256×256 patches and a grid shifted by 128, as
# HiFiC) only when the Inception weights are on this machine. mbt2018 (cpu) is drawn at the
# quality whose mean bpp is closest to the PQ-MIM stream's: matched bpp.

# %%
if smoke:
    smoke_c = results_dir / "smoke-run-c"
    shutil.rmtree(smoke_c, ignore_errors=True)  # this notebook's own scratch run
    run_c = train_pqmim.train_perceptual(train_pqmim.PerceptualTrainConfig(
        source=str(run), data=("sample",), crop=64, batch_size=4, steps_c=SMOKE_PERCEPTUAL_STEPS,
        warmup_steps=2, lr_c=1e-3, lr_d=1e-3, disc_width=8, ckpt_every=0, out_dir=str(smoke_c)))
    pqmim.save_tuned_radius(run_c / "final_c.pt", smoke_tuning, tuning_set=dataset)  # its base's radius
    pairs = [(run / "final.pt", run_c / "final_c.pt")]
else:
    pairs = train_pqmim.perceptual_pairs(ckpt_dir)
extractor = None
if INCEPTION_FEATURES and not smoke:
    try:
        extractor = perceptual.inception_extractor()
    except perceptual.ExtractorUnavailableError as err:
        print(f"FID/KID not computed: {err}")
print(f"{len(pairs)} (base, perceptual) pair(s): " + ", ".join(f"{b.name} + {p.name}" for b, p in pairs))


def decode_all(model):
    """Real coding of every image: (x_hat list, per-image rows)."""
    outs = [(name, img, pqmim.code_image(model, img, STEPS, radius=RADIUS)) for name, img in images]
    return [r["x_hat"] for _, _, r in outs], [{"image": n, "bpp": r["bpp"], "psnr_rgb": metrics.psnr(img, r["x_hat"])} for n, img, r in outs]


def compute_perceptual_table():
    rows = []
    for base_path, perc_path in pairs:
        base_model, _ = checkpoints.load_checkpoint(base_path)
        perc_model, _ = checkpoints.load_checkpoint(perc_path)
        pair = f"M{base_model.M} K{base_model.K}"
        decoded, per_image = {}, {}
        for kind, model in (("base", base_model), ("perceptual", perc_model)):
            decoded[kind], per_image[kind] = decode_all(model)
        pq_bpp = float(np.mean([r["bpp"] for r in per_image["base"]]))
        if len(learned):  # mbt2018 at the quality whose mean bpp is closest: matched bpp
            q_bpp = learned.groupby("setting")["bpp"].mean()
            q = int((q_bpp - pq_bpp).abs().idxmin())
            outs = [(img, coding.code_image(mbt[q], img)) for _, img in images]
            decoded[f"mbt2018 q{q}"] = [r["x_hat"] for _, r in outs]
            per_image[f"mbt2018 q{q}"] = [{"bpp": r["bpp"], "psnr_rgb": metrics.psnr(img, r["x_hat"])} for img, r in outs]
        dist = perceptual.compare_decoders([img for _, img in images], decoded, extractor)
        for _, d in dist.iterrows():
            r = pd.DataFrame(per_image[d["codec"]])
            rows.append({"pair": pair, "codec": d["codec"], "bpp": r["bpp"].mean(), "psnr_rgb": r["psnr_rgb"].mean(), **d.drop("codec").to_dict()})
    return pd.DataFrame(rows)


perc_key = {"dataset": dataset, "images": [n for n, _ in images], "steps": STEPS, "radius": RADIUS,
            "pairs": [[str(b), str(p)] for b, p in pairs],
            "mbt_qualities": sorted(mbt), "inception": extractor is not None, "swd_seed": 0}
perc_table = cache.cached_table(results_dir / "perceptual.csv", perc_key, compute_perceptual_table, refresh=REFRESH,
                                data=images, models={"pairs": [list(p) for p in pairs], "mbt2018": identity.model_ids(mbt)}) if pairs else pd.DataFrame()
if len(perc_table):
    reproduce.save_table(perc_table, fig_dir / "perceptual.csv", floats=reproduce.MS_SSIM)  # seeded SWD/KID on float32 decodes
    shown_cols = ["pair", "codec", "bpp", "psnr_rgb", "swd"] + (["fd", "kid"] if extractor is not None else [])
    display(perc_table[shown_cols].assign(swd=perc_table["swd"] * perceptual.SWD_DISPLAY_SCALE).round(4))
else:
    print(f"no perceptual checkpoint next to its base in {ckpt_dir}: train one with the command above")

# %% [markdown]
# Crops of one image at 1:1: original, base decoder, perceptual decoder (same bytes), and
# mbt2018 at matched bpp.

# %%
if len(perc_table):
    base_path, perc_path = pairs[0]
    shown_models = {"base": checkpoints.load_checkpoint(base_path)[0], "perceptual": checkpoints.load_checkpoint(perc_path)[0]}
    crops = {"original": gallery_img}
    for kind, model in shown_models.items():
        r = pqmim.code_image(model, gallery_img, STEPS, radius=RADIUS)
        crops[f"{kind}: {r['bytes']} B, {metrics.psnr(gallery_img, r['x_hat']):.1f} dB"] = r["x_hat"]
    mbt_rows = perc_table[perc_table["codec"].str.startswith("mbt2018")]
    if len(mbt_rows):
        q = int(mbt_rows["codec"].iloc[0].split("q")[-1])
        r = coding.code_image(mbt[q], gallery_img)
        crops[f"mbt2018 q{q}: {r['bytes']} B, {metrics.psnr(gallery_img, r['x_hat']):.1f} dB"] = r["x_hat"]
    side = min(PERCEPTUAL_CROP, *gallery_img.shape[:2])
    fig, axes = plt.subplots(1, len(crops), figsize=(3.2 * len(crops), 3.4))
    for ax, (title, img) in zip(axes, crops.items()):
        ax.imshow(data.centre_crop(img, side), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{gallery_name}, {side}x{side} crop: {pairs[0][0].name} and its perceptual decoder")
    plotting.save_figure(fig, "fig5_perceptual_crops")
    plt.show()

# %% [markdown]
# ## Findings (generated from the tables above)
#
# ### Paper vs here
#
# Each claim of the paper, this run's number and the verdict by the rule written next to it
# (`nic_lib.claims`). "On par with the hyperprior" is judged against CompressAI's published
# scale hyperprior (Kodak only) by the mean PSNR difference at equal bpp over the rates both
# cover: PQ-MIM has too few rate points for a BD-rate.

# %%
hyperprior_curve = (rd.load_anchors("compressai-bmshj2018-hyperprior") if dataset == "kodak" else pd.DataFrame())
claims_table = claims.pqmim_claims(
    rate_points, bits_summary["saving_vs_independent"].to_dict(), curves[curves["codec"] == f"pq-mim (S={STEPS})"],
    hyperprior_curve, perc_table, hybrid, EXTREME_BYTES)
claims_table = pd.concat([claims_table, claims.pqmim_baseline_claims(
    bd_baselines, {"hyperprior": "scale hyperprior low-rate (cpu)", "mbt2018": "mbt2018 low-rate (cpu)", "jpeg2000": "jpeg2000"},
    vq_table)], ignore_index=True)
reproduce.save_table(claims_table, fig_dir / "claims.csv", columns={"measured here": reproduce.IGNORE})  # numbers in text
display(Markdown(claims.to_markdown(claims_table)))

# %% [markdown]
# ### Measured here

# %%
lines = []
if smoke:
    lines.append(f"- **Smoke run**: the model was trained for {SMOKE_STEPS_A} + {SMOKE_STEPS_B} steps (stages A + B) on "
                 "4 sample photos; the numbers below test the code path and say nothing about PQ-MIM.")
vq = rate_points.loc["VQ", "distinct_rates"] if "VQ" in rate_points.index else 0
pq = rate_points.loc["PQ", "distinct_rates"] if "PQ" in rate_points.index else 0
lines.append(f"- With at most 2^16 stored codewords (D = {QUANTIZER_DIM}), one VQ codebook offers {vq} "
             f"fixed-length rates and product quantizers {pq} "
             f"(up to {rate_points.loc['PQ', 'max_bits'] if pq else 0:.0f} bits per position).")
for label, row in bits_summary.iterrows():
    verdict = "meets" if row["saving_vs_independent"] >= 0.30 else "misses"
    lines.append(f"- {label}: real stream {row['bpp']:.4f} bpp vs Σ−log2P {row['bpp_est']:.4f} bpp; "
                 f"{row['saving_vs_independent']:+.1%} vs the independent prior ({verdict} the 30% target), "
                 f"{row['saving_vs_fixed']:+.1%} vs fixed length; PSNR {row['psnr_rgb']:.2f} dB.")
first, last = steps_table.groupby("step")["bits_per_code"].mean().iloc[[0, -1]]
lines.append(f"- Bits per code fall from {first:.2f} (step 1, no context) to {last:.2f} (step {STEPS}).")
for label, row in radius_summary.iterrows():
    if row["radius"] == pqmim.GLOBAL_ATTENTION:
        lines.append(f"- {label}: coded with global attention (no tuned radius).")
    else:
        lines.append(f"- {label}: attention radius {int(row['radius'])}: {-row['saving_vs_global']:+.1%} bits vs global "
                     f"attention on these images ({row['bpp_coded_radius']:.4f} vs {row['bpp_global']:.4f} bpp, Σ−log2P).")
fits = hybrid[hybrid["within_budget"]]
if len(fits):
    best = fits.sort_values("psnr_rgb").iloc[-1]
    lines.append(f"- Extreme regime on {gallery_name}: {int(best['bytes'])} bytes "
                 f"(s = {int(best['transmit_steps'])} of {STEPS} steps) at {best['psnr_rgb']:.2f} dB.")
else:
    lines.append(f"- No hybrid setting of {smallest} fits in {EXTREME_BYTES} bytes on {gallery_name} "
                 f"(smallest: {int(hybrid['bytes'].min())} bytes).")
for label, row in extreme_summary.iterrows():
    if row["fits"] == 1:
        lines.append(f"- Gallery, {label}: every one of the {len(extreme_images)} images within {EXTREME_BYTES} bytes "
                     f"(mean {row['bytes']:.0f} B, {row['bpp']:.4f} bpp) at a mean {row['psnr_rgb']:.2f} dB.")
    else:
        floor = extreme_table[extreme_table["label"] == label]
        lines.append(f"- Gallery, {label}: {int((~floor['fits']).sum())} of {len(floor)} images cannot be coded in "
                     f"{EXTREME_BYTES} bytes; its files here (each the smallest it makes when over the budget) are {int(floor['bytes'].min())}–{int(floor['bytes'].max())} B "
                     f"(mean {row['psnr_rgb']:.2f} dB).")
lines.append(f"- Every fully transmitted code grid decoded exactly: {bool(codes_table['exact'].all())}.")
for pair, t in (perc_table.groupby("pair") if len(perc_table) else []):
    b, p = t.iloc[0], t.iloc[1]
    line = (f"- Perceptual variant of {pair}: same {b['bpp']:.4f} bpp; PSNR {b['psnr_rgb']:.2f} → {p['psnr_rgb']:.2f} dB, "
            f"SWD×10³ {1e3 * b['swd']:.1f} → {1e3 * p['swd']:.1f} ({'lower' if p['swd'] < b['swd'] else 'not lower'})")
    if np.isfinite(p["fd"]):
        line += f", FID {b['fd']:.1f} → {p['fd']:.1f}, KID {b['kid']:.4f} → {p['kid']:.4f}"
    if len(t) > 2:
        m = t.iloc[2]
        matched = abs(m["bpp"] / b["bpp"] - 1) <= 0.25  # within 25% of the PQ-MIM rate
        line += (f"; {m['codec']} at {m['bpp']:.4f} bpp: {m['psnr_rgb']:.2f} dB, SWD×10³ {1e3 * m['swd']:.1f}"
                 + (f", FID {m['fd']:.1f}" if np.isfinite(m["fd"]) else "")
                 + ("" if matched else f" (its closest quality, {m['bpp'] / b['bpp']:.1f}x the bits: not a matched-bpp comparison)"))
    lines.append(line + ".")
if not len(perc_table):
    lines.append("- No perceptual checkpoint next to its base: the perceptual variant is not measured.")
elif extractor is None:
    lines.append("- FID/KID not computed (no Inception weights on this machine, or the smoke profile): SWD only.")
display(Markdown("\n".join(lines)))
