"""Properties of nic_lib.theory: water-filling, known limits, Parseval, the mismatched code."""

import math

import numpy as np
import pandas as pd
import pytest

from nic_lib import theory


def test_water_filling_rates_sum_to_the_rate_and_distortions_to_the_distortion():
    s = np.array([10.0, 4.0, 1.0, 0.25, 0.01])
    d_k, r_k = theory.water_filling(s, 0.5)
    d, r = theory.rate_distortion(s, 0.5)
    assert r_k.mean() == pytest.approx(r) and d_k.mean() == pytest.approx(d)
    # by hand: kept components 10, 4, 1 at distortion 0.5; the others dropped
    assert r == pytest.approx((0.5 * math.log2(20) + 0.5 * math.log2(8) + 0.5 * math.log2(2)) / 5)
    assert d == pytest.approx((0.5 * 3 + 0.25 + 0.01) / 5)


def test_white_gaussian_source_limit_is_half_log_variance_over_distortion():
    s = np.full(16, 3.0)
    for dist in (0.1, 1.0, 2.9):
        theta = theory.water_level(s, distortion=dist)
        assert theta == pytest.approx(dist, rel=1e-9)
        assert theory.rate_distortion(s, theta)[1] == pytest.approx(theory.gaussian_rate_distortion(3.0, dist))


def test_rate_falls_and_distortion_rises_with_the_water_level():
    s = theory.power_law_spectrum((16, 16), alpha=2.0)
    thetas = np.logspace(-3, 2, 30)
    d, r = np.array([theory.rate_distortion(s, t) for t in thetas]).T
    assert np.all(np.diff(d) >= 0) and np.all(np.diff(r) <= 0)
    assert np.all(np.diff(r[r > 0]) < 0)


def test_water_level_inverts_rate_and_distortion():
    s = theory.power_law_spectrum((32,), alpha=1.0)
    theta = theory.water_level(s, rate=0.8)
    assert theory.rate_distortion(s, theta)[1] == pytest.approx(0.8, rel=1e-9)
    theta = theory.water_level(s, distortion=0.05)
    assert theory.rate_distortion(s, theta)[0] == pytest.approx(0.05, rel=1e-9)
    with pytest.raises(ValueError, match="exactly one"):
        theory.water_level(s)


def test_dft_diagonalises_the_circulant_covariance_of_its_spectrum():
    s = theory.power_law_spectrum((24,), alpha=1.5, r_min=0.1)
    eig = np.sort(np.linalg.eigvalsh(theory.circulant_covariance(s)))
    assert np.allclose(eig, np.sort(s))


def test_samples_have_the_spectrum_asked_for_and_parseval_holds():
    s = theory.power_law_spectrum((8, 8), alpha=2.0, r_min=0.25)
    x = theory.sample_stationary_gaussian(s, 4000, np.random.default_rng(0))
    p = theory.periodogram(x)
    assert p.mean() == pytest.approx(np.mean(x**2), rel=1e-10)  # Parseval
    assert np.allclose(p, s, rtol=0.15)


def test_power_law_fit_recovers_alpha_and_amplitude():
    r = np.linspace(0.02, 1.0, 50)
    alpha, amp = theory.fit_power_law(r, 3.0 * r**-2.2)
    assert alpha == pytest.approx(2.2) and amp == pytest.approx(3.0)


def test_matched_code_gives_theta_at_every_kept_frequency_and_drops_the_rest():
    s = np.array([8.0, 2.0, 0.5, 0.1])
    code = theory.mismatched_code(s, theta=1.0)
    assert np.allclose(code["distortion_input"], [1.0, 1.0, 0.5, 0.1])
    assert np.allclose(code["rate_fixed"], code["rate_adapted"])
    assert np.allclose(code["rate_adapted"], theory.water_filling(s, 1.0)[1])


def test_white_noise_through_a_fixed_code_is_dropped_where_the_code_drops_and_fixed_rate_costs_more():
    s = np.array([8.0, 2.0, 0.5, 0.1])
    code = theory.mismatched_code(s, theta=1.0, shift=0.3)
    # dropped frequencies return zero: the error vs the noisy input is all of its power
    assert np.allclose(code["distortion_input"][2:], s[2:] + 0.3)
    # against the clean image, a kept frequency also carries beta^2 * noise variance
    assert np.all(code["distortion_clean"][:2] > 1.0)
    assert np.all(code["rate_fixed"] >= code["rate_adapted"] - 1e-12)


def test_contrast_reduction_makes_a_fixed_code_add_more_noise_than_the_signal_has():
    s = np.array([8.0, 2.0, 1.2])
    code = theory.mismatched_code(s, theta=1.0, gain=0.5)
    # at S=1.2 the code keeps beta=1/6 and adds noise (beta^2 N = 1/6) to an input of power 0.3
    assert code["amplified"][2] and not code["amplified"][0]


def test_linear_toy_codec_trains_and_codes():
    torch = pytest.importorskip("torch")
    s = theory.power_law_spectrum((4, 4), alpha=2.0, r_min=0.25)
    codec = theory.ToyTransformCodec(16)
    losses = theory.train_toy_codec(codec, s, lmbda=4.0, steps=60, batch=32, lr=1e-2)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    x = theory.sample_stationary_gaussian(s, 32, np.random.default_rng(1))
    x_hat, bits = theory.run_toy_codec(codec, x)
    assert x_hat.shape == x.shape and np.all(bits >= 0)
    assert isinstance(codec, torch.nn.Module)


def _train_small(hidden=None, seed=0):
    s = theory.power_law_spectrum((4, 4), alpha=2.0, r_min=0.25)
    codec = theory.ToyTransformCodec(16, hidden, seed=seed)
    losses = theory.train_toy_codec(codec, s, lmbda=4.0, steps=40, batch=32, seed=seed)
    x = theory.sample_stationary_gaussian(s, 64, np.random.default_rng(5))
    return losses, theory.run_toy_codec(codec, x)[0]


@pytest.mark.parametrize("hidden", [None, 8], ids=["linear", "MLP"])
def test_toy_codec_training_repeats_exactly_whatever_torchs_global_generator_holds(hidden):
    """Issue 33: the linear codec took its initial weights from torch's global generator, which every
    new process seeds at random, so notebook 04 gave another theta_eff on every run."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(123)
    first = _train_small(hidden)
    torch.seed()  # what a fresh process does
    torch.rand(3)
    second = _train_small(hidden)
    assert first[0] == second[0]  # every loss, bit for bit
    assert np.array_equal(first[1], second[1])
    assert not np.array_equal(_train_small(hidden, seed=1)[1], first[1])  # the seed is what decides
    # building and training leave the global generator where they found it
    state = torch.get_rng_state()
    _train_small(hidden)
    assert torch.equal(torch.get_rng_state(), state)


TOY_RUN = """
import numpy as np
from nic_lib import theory
s = theory.power_law_spectrum((4, 4), 2.0, 1.0, r_min=0.25)
x = theory.sample_stationary_gaussian(s, 200, np.random.default_rng(1))
table, _ = theory.toy_codec_experiment(s, 4.0, x, {"clean": (x, 1.0, 0.0)}, {"linear": None, "MLP": 8}, steps=60)
print(table.to_csv(index=False))
"""


@pytest.mark.slow
def test_toy_codec_experiment_gives_the_same_table_in_two_fresh_processes():
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", TOY_RUN], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    runs = [proc.communicate()[0] for proc in procs]  # both at once: the imports dominate
    assert [proc.returncode for proc in procs] == [0, 0]
    assert "linear,clean" in runs[0] and runs[0] == runs[1]


@pytest.fixture(scope="module")
def toy_experiment():
    s = theory.power_law_spectrum((4, 4), alpha=2.0, r_min=0.25)
    rng = np.random.default_rng(2)
    x = theory.sample_stationary_gaussian(s, 300, rng)
    noise = 0.05
    inputs = {"clean": (x, 1.0, 0.0), "high (white noise)": (x + rng.normal(0, noise**0.5, x.shape), 1.0, noise)}
    summary, spectra = theory.toy_codec_experiment(s, 4.0, x, inputs, {"linear": None, "MLP": 8}, steps=80)
    return s, summary, spectra


def test_each_toy_codec_is_predicted_at_its_own_water_level(toy_experiment):
    s, summary, spectra = toy_experiment
    assert list(spectra.columns) == list(theory.TOY_SPECTRA_COLUMNS)
    for (codec, name), rows in spectra.groupby(["codec", "input"]):
        row = summary.query("codec == @codec and input == @name").iloc[0]
        # the per-frequency theory averages to the table's theory, measured likewise
        assert rows["D vs input (theory)"].mean() == pytest.approx(row["D vs input (theory)"], rel=1e-12)
        assert rows["D vs input (measured)"].mean() == pytest.approx(row["D vs input (measured)"], rel=1e-9)
        assert (rows["theta_eff"] == row["theta_eff"]).all()
        if name == "clean":  # the matched code: D_k = min(theta_eff, S_k) at the codec's own theta_eff
            assert np.allclose(rows["D vs input (theory)"], np.minimum(row["theta_eff"], s.ravel()))
            assert row["D vs input (theory)"] == pytest.approx(row["D vs input (measured)"], rel=1e-6)


def test_toy_figure_draws_the_linear_codes_theory_not_the_last_codec_trained():
    """Issue 26: the black marks were drawn from a loop variable holding the MLP's prediction
    (water level 0.525), under the label 'theory (linear code)' (0.190)."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    radius = np.array([0.0, 0.5, 1.0])
    rows = []
    for codec, theta in (("linear", 0.19), ("MLP", 0.525)):  # the MLP comes last, as in notebook 04
        for name, gain in (("clean", 1.0), ("high (white noise)", 1.5)):
            rows.append(pd.DataFrame({"codec": codec, "input": name, "radius": radius,
                                      "D vs input (measured)": theta * gain * np.array([1.0, 1.1, 0.9]),
                                      "D vs input (theory)": np.full(3, theta * gain),
                                      "input spectrum (theory)": gain * np.array([4.0, 1.0, 0.25]), "theta_eff": theta}))
    spectra = pd.concat(rows, ignore_index=True)
    fig = theory.plot_toy_codec_spectra(spectra)
    try:
        for ax, name in zip(fig.axes, ("clean", "high (white noise)")):
            [line] = [l for l in ax.get_lines() if l.get_label().startswith("theory")]
            linear = spectra.query("codec == 'linear' and input == @name")
            assert np.array_equal(line.get_ydata(), linear["D vs input (theory)"].to_numpy())
            assert "linear" in line.get_label() and "0.190" in line.get_label()
        labels = {l.get_label() for l in fig.axes[0].get_lines()}
        assert {"linear: measured D vs input", "MLP: measured D vs input", "input spectrum"} <= labels
        with pytest.raises(ValueError, match="no codec 'GMM'"):
            theory.plot_toy_codec_spectra(spectra, theory_of="GMM")
    finally:
        plt.close("all")
