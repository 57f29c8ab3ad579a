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
# # 04 — A spectral theory of (out-of-distribution) compression, step by step
#
# Why should a codec trained on natural images fail differently on fog than on noise?
# This notebook builds the classical answer for **Gaussian sources**, checks every formula
# numerically, verifies it on tiny learned codecs, and sets it against measured codec errors.
#
# 1. A stationary Gaussian image model is diagonalised by the Fourier transform.
# 2. Its rate-distortion function is **reverse water-filling** over the Fourier coefficients.
# 3. Natural images have power spectra close to `A / r^α` (α fitted here on Kodak).
# 4. A code fitted to one spectrum, fed an input with another, keeps and drops the *same*
#    frequencies: closed forms for its distortion against the shifted and the clean input.
# 5. Tiny linear and nonlinear learned codecs trained on synthetic Gaussian data follow it.
# 6. Measured codec error spectra against the prediction.
#
# The closed forms live in `nic_lib.theory` (with tests); frequencies are in Nyquist units
# (0.5 cycles/pixel = 1); spectra use the convention S_k = E|F_k|²/N, so mean_k S_k = E[x²].

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from nic_lib import data, metrics, notebook_setup, plotting, reproduce, spectral, theory
from nic_lib.models import CheckpointNotFoundError, PretrainedWeightsUnavailableError, get_model

# %% tags=["parameters"]
PROFILE = "cpu"  # smoke: 2 small images, short toy training (CI, < 2 min); cpu: 24 Kodak images, toy codecs to convergence; full: as cpu, the NIC model with published weights
SMOKE = None  # None -> PROFILE == "smoke"; True: smoke sizes with this profile's models (CI runs PROFILE=full so, against a stand-in zoo)
DATASET = None  # None -> "kodak" (cpu/full) or "sample" (smoke); images for the power-law fit and the measured spectra
N_IMAGES = None  # None -> every image (smoke: 2)
CROP = None  # None -> whole landscape images (smoke: 128-px centre crops)
GRID = 64  # side of the frequency grid the closed forms are drawn on (64x64: smooth radial curves, instant)
TARGET_PSNR = 32.0  # operating point of the theory plots: the water level theta is the MSE of this PSNR (a mid-rate codec)
CONTRAST_GAIN = 0.5  # low-frequency shift, part 1: contrast scaling of every non-DC frequency (like `contrast`)
FOG_POWER = 2000.0  # low-frequency shift, part 2: power (grey levels^2) of an added fog field, concentrated below FOG_RADIUS
FOG_RADIUS = 0.05  # Nyquist units: the fog field's Gaussian spectral width (periods of ~40 px and longer)
NOISE_STD = 20.0  # high-frequency shift: white Gaussian noise std in grey levels (gaussian_noise severity 1: 0.08 x 255, about 20)
TOY_PATCH = 8  # toy codec patch side (8x8: 64 coefficients)
TOY_ALPHA = 2.0  # spectrum exponent of the toy source (close to the natural-image value)
TOY_LMBDA = 4.0  # rate-distortion trade-off of the toy codecs; predicts theta of 1 / (2 ln2 lambda), 0.18
TOY_STEPS = None  # None -> 1000 (cpu) or 100 (smoke) training steps
TOY_NONLINEAR = True  # also train the small MLP codec
CODEC_BPP = 0.5  # rate of JPEG 2000 for the measured-vs-predicted error spectra
NIC_MODEL = ["mbt2018", 3]  # cpu-profile checkpoint used when trained (full: CompressAI's published weights)
DEVICE = None  # None -> "cuda" when PyTorch sees a GPU, else "cpu": where the networks run
SEED = 0  # toy data and training
FIGURE_DIR = None  # None -> paper_figures/04_spectral_theory for cpu, build/figures/<profile>/... otherwise

# %% [markdown]
# `notebook_setup.setup` reads the profile knobs as every notebook does (smoke sizes, device,
# dataset, where figures go: the table in its docstring); this notebook's own settings
# follow it.

# %%
run = notebook_setup.setup("04_spectral_theory", PROFILE, smoke=SMOKE, device=DEVICE, dataset=DATASET,
                           n_images=N_IMAGES, figure_dir=FIGURE_DIR)
smoke, model_profile, device, dataset, n_images, fig_dir = (run.smoke, run.model_profile, run.device, run.dataset,
                                                            run.n_images, run.fig_dir)
crop = CROP if CROP is not None else (128 if smoke else None)
toy_steps = TOY_STEPS or (100 if smoke else theory.TOY_STEPS)
torch.set_num_threads(1)  # the toy codecs are tiny: threads cost more than they give
images = [img for _, img in spectral.one_size_images(data.load_images(dataset, limit=n_images), crop)]
checks = []  # (formula, value, expected) of every numerical check, tabled at the end


def check(what, value, expected, rtol=1e-6):
    """Record a numerical check of a formula and fail loudly if it does not hold."""
    ok = bool(np.allclose(value, expected, rtol=rtol, atol=1e-12))
    checks.append({"formula": what, "value": float(np.max(np.abs(value))), "expected": float(np.max(np.abs(expected))), "holds": ok})
    assert ok, f"{what}: {value} != {expected}"


print(f"profile={PROFILE} dataset={dataset} images={len(images)} of {images[0].shape[:2]}; figures -> {fig_dir}")

# %% [markdown]
# ## 1. Stationary Gaussian sources and the Fourier transform
#
# Model an image (one channel, periodic boundary) as a zero-mean Gaussian vector x whose
# covariance depends only on the offset between pixels: C[m, n] = r[(m − n) mod N]. Such a
# *circulant* matrix is diagonalised by the DFT: with F the DFT matrix,
# F C F⁻¹ = diag(S), where S = DFT(r) is the **power spectrum** (Wiener–Khinchin). So the
# Fourier coefficients X_k of a stationary source are independent Gaussians with
# E|X_k|²/N = S_k — the Fourier basis is the source's Karhunen–Loève transform. (For
# non-periodic images the DCT plays this role; for long-range correlation both approach it.)
#
# **Check**: eigenvalues of the circulant covariance = the spectrum; Parseval
# mean_k S_k = E[x²].

# %%
s_1d = theory.power_law_spectrum((32,), alpha=2.0, r_min=1 / 16)
check("eig(circulant C) = S", np.sort(np.linalg.eigvalsh(theory.circulant_covariance(s_1d))), np.sort(s_1d))
samples = theory.sample_stationary_gaussian(s_1d, 20000, np.random.default_rng(SEED))
check("Parseval: mean periodogram = mean x^2", theory.periodogram(samples).mean(), np.mean(samples**2))
check("sampled spectrum = S (20k samples)", theory.periodogram(samples), s_1d, rtol=0.1)
print("ok: the DFT diagonalises the circulant covariance; sampled spectra match")

# %% [markdown]
# ## 2. Reverse water-filling: the rate-distortion function
#
# For independent Gaussian components of variances S_k, coded to mean squared error D,
# the minimum rate is (Cover & Thomas, Thm. 10.3.3)
#
# $$R(\theta)=\frac1N\sum_k \max\Big(0,\tfrac12\log_2\frac{S_k}{\theta}\Big),\qquad
#   D(\theta)=\frac1N\sum_k \min(\theta, S_k).$$
#
# Every component with more power than the **water level θ** is coded to distortion θ;
# every component with less is dropped (reconstructed as 0, distortion S_k). Lowering the
# rate raises θ and drops more (the weakest, i.e. highest) frequencies. One component,
# white source: R(D) = ½ log₂(σ²/D). The slope is dD/dR = −2 ln2 · θ at every kept
# component: a codec minimising R + λD settles at θ = 1/(2 ln2 · λ).

# %%
for sigma2, dist in ((1.0, 0.1), (4.0, 1.0)):
    theta = theory.water_level(np.full(16, sigma2), distortion=dist)
    check(f"white source sigma2={sigma2}: R = 1/2 log2(sigma2/D)", theory.rate_distortion(np.full(16, sigma2), theta)[1],
          0.5 * math.log2(sigma2 / dist))
s_toy = theory.power_law_spectrum((GRID, GRID), 2.0, 1.0)
d_k, r_k = theory.water_filling(s_toy, 0.01)
check("sum of per-frequency rates = N R", r_k.sum(), s_toy.size * theory.rate_distortion(s_toy, 0.01)[1])
thetas = np.logspace(-4, 1, 60)
rd_rows = []
for alpha in (1.0, 2.0, 3.0):
    s_a = theory.power_law_spectrum((GRID, GRID), alpha, 1.0)
    for t in thetas:
        d, r = theory.rate_distortion(s_a, t)
        rd_rows.append({"alpha": alpha, "theta": t, "D / mean S": d / s_a.mean(), "R (bits/pixel)": r})
rd_curves = pd.DataFrame(rd_rows)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
sns.lineplot(data=rd_curves, x="R (bits/pixel)", y="D / mean S", hue="alpha", palette="viridis", ax=axes[0])
axes[0].set(yscale="log", title="R(D) of 1/r^alpha sources (steeper: cheaper)")
radius = theory.radial_frequency((GRID, GRID)).ravel()
order = np.argsort(radius)
axes[1].loglog(radius[order][1:], s_toy.ravel()[order][1:], "k", lw=1, label="S(r) = r^-2")
for t in (1.0, 10.0, 100.0):  # water levels inside S's range (~0.5 ... 1e3), so each drops the frequencies where S < theta
    axes[1].loglog(radius[order][1:], theory.water_filling(s_toy, t)[0].ravel()[order][1:], label=f"D_k, theta={t:g}")
axes[1].set(xlabel="radial frequency / Nyquist", ylabel="power", title="water-filling: flat at theta, then S (dropped)")
axes[1].legend(fontsize=8)
plotting.save_figure(fig, "fig1_water_filling")
plt.show()

# %% [markdown]
# ## 3. Natural images: power spectra close to 1/r^α
#
# Measured on the images here (per-channel mean removed, Hann window, mean of the RGB
# channel spectra), fitted by least squares on log–log axes over
# `theory.FIT_RANGE` (Nyquist units).

# %%
img_spectrum = spectral.mean_power_spectrum([img - img.reshape(-1, 3).mean(0) for img in images])
img_profile = spectral.radial_profile(img_spectrum, bins=64)
alpha_fit, amp_fit = theory.fit_power_law(img_profile["radius"], img_profile["power"])
s_img = theory.power_law_spectrum(img_spectrum.shape, alpha_fit, amp_fit)  # the fitted model on the images' grid
fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(img_profile["radius"], img_profile["power"], "o", ms=3, label=f"{dataset}: {len(images)} images")
r_line = np.linspace(*theory.FIT_RANGE, 50)
ax.loglog(r_line, amp_fit * r_line**-alpha_fit, "r", label=f"fit: {amp_fit:.3g} r^-{alpha_fit:.2f}")
ax.set(xlabel="radial frequency / Nyquist", ylabel="power (grey levels²)", title="natural-image spectrum")
ax.legend()
plotting.save_figure(fig, "fig2_power_law_fit")
plt.show()
print(f"alpha = {alpha_fit:.2f}, A = {amp_fit:.3g} (the classic value for natural images is alpha ~ 2)")

# %% [markdown]
# ## 4. A code fitted to one spectrum, fed another
#
# One optimal code for spectrum S at water level θ is the *forward test channel*:
# x̂_k = β_k (x_k + n_k), n_k ~ N(0, N_k), with β_k = max(0, 1 − θ/S_k) and
# N_k = θ S_k/(S_k − θ). On its own source it gives E|x_k − x̂_k|² = (1−β)²S + β²N = θ.
# (A learned *linear* codec trained with additive uniform noise has exactly this form.)
#
# Now fix (β, N) and feed x' = g·x + s, with gain g (contrast: g < 1) and an independent
# shift s of spectrum S_s (fog: low-frequency S_s; noise: flat S_s). Then
# S' = g²S + S_s and
#
# $$D_\text{input}=(1-\beta)^2S'+\beta^2N,\qquad D_\text{clean}=(1-\beta g)^2S+\beta^2(S_s+N).$$
#
# - **Kept and dropped frequencies do not move**: β depends on S, not S'. Added noise at
#   dropped frequencies is removed (that part of the error vs clean is S, not S+S_s), while
#   at kept ones it passes through (β ≈ 1) — a code denoises only where it drops.
# - **Amplified**: where S' falls below what the code adds (contrast reduction), D_input
#   exceeds S': the output is further from the input than a zero would be.
# - **Rate**: with an entropy model fitted to S, the rate is the cross-entropy
#   ½log₂((S+N)/N) + ((S'+N)/(S+N) − 1)/(2 ln 2): more bits for more input power, and
#   the excess over the adapted rate ½log₂((S'+N)/N) is a KL divergence.
# - An **oracle** code refitted to S' at the same rate (water-filling on S') is the bound
#   the fixed code is compared with.

# %%
theta_img = 255.0**2 / 10 ** (TARGET_PSNR / 10)  # water level = MSE at TARGET_PSNR
r_img = theory.radial_frequency(s_img.shape)
shifts = {
    "clean": {"gain": 1.0, "shift": 0.0},
    "low (contrast + fog)": {"gain": np.where(r_img > 0, CONTRAST_GAIN, 1.0),
                             "shift": FOG_POWER * s_img.size * np.exp(-((r_img / FOG_RADIUS) ** 2))
                             / np.exp(-((r_img / FOG_RADIUS) ** 2)).sum()},
    "high (white noise)": {"gain": 1.0, "shift": NOISE_STD**2},
}
codes, pred_rows = {}, []
for name, shift in shifts.items():
    code = theory.mismatched_code(s_img, theta_img, **shift)
    codes[name] = code
    rate = code["rate_fixed"].mean()
    oracle_d = theory.rate_distortion(code["input"], theory.water_level(code["input"], rate=code["rate_adapted"].mean()))[0]
    pred_rows.append({"input": name, "input power": code["input"].mean(), "kept %": 100 * code["kept"].mean(),
                      "amplified %": 100 * code["amplified"].mean(), "D vs input": code["distortion_input"].mean(),
                      "D vs clean": code["distortion_clean"].mean(), "oracle D (same rate)": oracle_d,
                      "R fixed model": rate, "R adapted model": code["rate_adapted"].mean()})
check("matched code: D_k = min(theta, S_k)", codes["clean"]["distortion_input"], np.minimum(theta_img, s_img))
predictions = pd.DataFrame(pred_rows)
reproduce.save_table(predictions, fig_dir / "mismatched_code_predictions.csv")  # closed forms in float64
predictions.round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
order = np.argsort(r_img.ravel())[1:]
for ax, name in zip(axes, list(shifts)[1:]):
    code = codes[name]
    for key, label, style in (("input", "input spectrum S'", "k-"), ("distortion_input", "D vs input", "C0-"),
                              ("distortion_clean", "D vs clean", "C1--")):
        ax.loglog(r_img.ravel()[order], code[key].ravel()[order], style, lw=1.2, label=label)
    ax.loglog(r_img.ravel()[order], s_img.ravel()[order], ":", c="grey", label="clean spectrum S")
    ax.axhline(theta_img, c="grey", lw=0.8)
    ax.set(title=name, xlabel="radial frequency / Nyquist")
axes[0].set_ylabel("power (grey levels²)")
axes[0].legend(fontsize=8)
plotting.save_figure(fig, "fig3_mismatched_code")
plt.show()

# %% [markdown]
# ## 5. Verification: tiny learned codecs on synthetic Gaussian data
#
# 8×8 patches drawn from a periodic Gaussian with spectrum r^−α (`TOY_ALPHA`), coded by
# `theory.ToyTransformCodec`: a linear analysis/synthesis (or a small MLP) with CompressAI's
# factorized entropy model, trained on R + λ·D. Theory predicts θ = 1/(2 ln2 λ) and a flat
# error spectrum at θ over the kept frequencies. Two known gaps: a scalar quantiser with an
# entropy coder pays ≈ ¼ bit (1.53 dB, a factor πe/6 ≈ 1.42 in D) per component at high
# rate over the Gaussian R(D); and a short training run may not have converged.
# The shifted inputs use the same recipe as section 4, scaled to the toy source.
# Each codec is set against the theory at its own effective water level θ_eff, the θ whose
# matched distortion is the MSE it measured on clean data (`theory.toy_codec_experiment`);
# the figure draws the linear code's prediction in black. Codec weights, training data and
# training noise are all seeded by `SEED`: a re-run gives the same numbers.

# %%
s_toy = theory.power_law_spectrum((TOY_PATCH, TOY_PATCH), TOY_ALPHA, 1.0, r_min=1 / TOY_PATCH)
theta_lmbda = 1 / (2 * math.log(2) * TOY_LMBDA)
r_toy = theory.radial_frequency(s_toy.shape)
rng = np.random.default_rng(SEED + 1)
x_test = theory.sample_stationary_gaussian(s_toy, 4000, rng)
noise_var = 0.5 * theta_lmbda  # white noise at half the water level: visible, not dominant
fog_toy = np.where(r_toy <= 0.25, 0.5 * s_toy, 0.0)
toy_inputs = {  # name -> (input x', gain, shift spectrum)
    "clean": (x_test, 1.0, 0.0),
    "low (contrast + fog)": None,
    "high (white noise)": (x_test + rng.normal(0, math.sqrt(noise_var), x_test.shape), 1.0, noise_var),
}
gain_toy = np.where(r_toy > 0, CONTRAST_GAIN, 1.0)
fog_field = theory.sample_stationary_gaussian(fog_toy, len(x_test), rng)
x_low = np.real(np.fft.ifft2(gain_toy * np.fft.fft2(x_test))) + fog_field
toy_inputs["low (contrast + fog)"] = (x_low, gain_toy, fog_toy)

t0 = time.perf_counter()
toy_codecs = {"linear": None, **({"MLP": theory.TOY_HIDDEN} if TOY_NONLINEAR else {})}  # name -> MLP width (None: linear)
toy_table, toy_spectra = theory.toy_codec_experiment(s_toy, TOY_LMBDA, x_test, toy_inputs, toy_codecs, steps=toy_steps, seed=SEED)
# seeded: bit-identical run to run on one machine (and at 1 or 2 threads); another CPU's float32 kernels
# round otherwise and the training carries it along (reproduce.TRAINED_FLOAT32 says how far, measured)
reproduce.save_table(toy_table, fig_dir / "toy_codecs_vs_theory.csv", floats=reproduce.TRAINED_FLOAT32)
reproduce.save_table(toy_spectra, fig_dir / "toy_codec_spectra.csv", floats=reproduce.TRAINED_FLOAT32)
print(f"trained and evaluated toy codecs in {time.perf_counter() - t0:.1f} s ({toy_steps} steps each)")
toy_table.round(3)

# %%
fig = theory.plot_toy_codec_spectra(toy_spectra, theory_of="linear")  # black: the linear code's theory at its own theta_eff
plotting.save_figure(fig, "fig4_toy_codecs_vs_theory")
plt.show()

# %% [markdown]
# ## 6. Measured codec error spectra against the prediction
#
# JPEG 2000 at `CODEC_BPP` (and the NIC model when its cpu checkpoint exists) on the
# images above. Prediction: water-filling on the fitted 1/r^α spectrum with θ set so that
# the predicted MSE equals the measured one; no other free parameter.

# %%
measured = {"jpeg2000": spectral.classic_codec("jpeg2000", setting=CODEC_BPP)}
try:
    measured[f"{NIC_MODEL[0]}-q{NIC_MODEL[1]}"] = spectral.nic_codec(get_model(NIC_MODEL[0], NIC_MODEL[1], profile=model_profile),
                                                                     device=device)
    print(f"NIC: {NIC_MODEL[0]} q{NIC_MODEL[1]}, {'published weights' if model_profile == 'full' else 'cpu profile'}, on {device}")
except (CheckpointNotFoundError, PretrainedWeightsUnavailableError):
    print(f"no trained {NIC_MODEL[0]} q{NIC_MODEL[1]}: NIC spectra are left out (train with "
          "`python scripts/train_cpu_profile.py`); "
          "section 5's learned toy codecs stand in for the learned-codec check")
rows, fig = [], plt.figure(figsize=(6.5, 4.2))
ax = fig.gca()
for c, fn in measured.items():
    recons, rates = zip(*(fn(img[None]) for img in images))
    recons = [r[0] for r in recons]
    err = spectral.error_power_spectrum(images, recons)
    mse = float(np.mean([metrics.mse(a, b) for a, b in zip(images, recons)]))
    theta_c = theory.water_level(s_img, distortion=min(mse, 0.999 * s_img.mean()))
    prof = spectral.radial_profile(err)
    pred = spectral.radial_profile(np.fft.fftshift(np.minimum(theta_c, s_img)))
    line, = ax.semilogy(prof["radius"], prof["power"], label=f"{c} measured ({np.mean(rates):.2f} bpp)")
    ax.semilogy(pred["radius"], pred["power"], "--", c=line.get_color(), label=f"{c} water-filling prediction")
    energies = spectral.band_energies(err)
    pred_e = spectral.band_energies(np.fft.fftshift(np.minimum(theta_c, s_img)))
    for band in spectral.BANDS:
        rows.append({"codec": c, "band": band, "measured share": energies[band] / sum(energies.values()),
                     "predicted share": pred_e[band] / sum(pred_e.values()), "mse": mse, "theta": theta_c,
                     "gaussian R(D) bpp per channel": theory.rate_distortion(s_img, theta_c)[1], "bpp": float(np.mean(rates))})
ax.set(xlabel="radial frequency / Nyquist", ylabel="error power", title="clean error: measured vs water-filling")
ax.legend(fontsize=8)
plotting.save_figure(fig, "fig5_measured_vs_predicted")
plt.show()
measured_vs_theory = pd.DataFrame(rows)
# the NIC runs float32 networks (JPEG 2000's rows repeat exactly); tolerances of `make verify`, nic_lib.reproduce
reproduce.save_table(measured_vs_theory, fig_dir / "measured_vs_theory.csv", floats=reproduce.NETWORK)
measured_vs_theory.round(3)

# %% [markdown]
# ## Numerical checks of the formulas

# %%
pd.DataFrame(checks)

# %% [markdown]
# ## Findings (generated from the tables above)

# %%
lines = [f"- Natural-image spectrum on {dataset} ({len(images)} images): alpha = {alpha_fit:.2f}."]
for _, row in predictions.iterrows():
    if row["input"] == "clean":
        continue
    lines.append(f"- Theory, {row['input']}: a code fitted to the clean spectrum gives D vs input {row['D vs input']:.1f} and "
                 f"D vs clean {row['D vs clean']:.1f} (clean: {theta_img:.1f} per kept frequency); a code refitted to the "
                 f"shifted input would reach {row['oracle D (same rate)']:.1f} at the same rate; rate with the fixed entropy model "
                 f"{row['R fixed model']:.3f} vs {predictions.iloc[0]['R fixed model']:.3f} bits/pixel clean; "
                 f"{row['amplified %']:.0f}% of frequencies amplified.")
for _, row in toy_table.iterrows():
    lines.append(f"- Toy {row['codec']} codec, {row['input']}: measured D vs input {row['D vs input (measured)']:.3f} "
                 f"(theory {row['D vs input (theory)']:.3f}), vs clean {row['D vs clean (measured)']:.3f} "
                 f"(theory {row['D vs clean (theory)']:.3f})"
                 + (": equal by construction, theta_eff is fitted to this row." if row["input"] == "clean" else
                    f"; rate {row['R bits/comp (measured)']:.2f} bits/component measured vs {row['R fixed (theory)']:.2f} in theory."))
lin = toy_table.query("codec == 'linear' and input == 'clean'").iloc[0]
lines.append(f"- The linear toy codec's effective water level is {lin['theta_eff']:.3f}; lambda predicts {lin['theta from lambda']:.3f} "
             f"(ratio {lin['theta_eff'] / lin['theta from lambda']:.2f}; its loss still changed {100 * lin['loss change, last 10%']:+.1f}% "
             f"over the last 10% of {toy_steps} steps).")
for c, sub in measured_vs_theory.groupby("codec"):
    worst = sub.assign(gap=(sub["measured share"] - sub["predicted share"]).abs()).sort_values("gap").iloc[-1]
    lines.append(f"- {c} ({sub['bpp'].iloc[0]:.2f} bpp, MSE {sub['mse'].iloc[0]:.1f}): largest disagreement with water-filling in the "
                 f"{worst['band']} band (measured {100 * worst['measured share']:.0f}% of the error energy, predicted "
                 f"{100 * worst['predicted share']:.0f}%).")
if len(measured) == 1:
    lines.append("- No trained NIC model was found: the learned-codec check rests on the toy codecs of section 5.")
if smoke:
    lines.append("- Smoke profile: tiny images and short training; the numbers check the pipeline, not the science.")
display(Markdown("\n".join(lines)))
