"""How ``--data-filter`` moves the power spectrum of the training crops (issue 30, "does the
training data's spectrum cause the bias?"): the measurement behind the strengths of the
``ood-data-blur`` / ``ood-data-noise`` stages (scripts/train_cpu_profile.py).

The crops are those the stages train on: the default training set (``--data train``),
128-px crops, batches of 8 through :class:`nic_lib.training.data.CropSampler` (seed 0,
steps 0, 1, ...), once unaltered and once per filter strength through the same sampler
with its ``data_filter``. For each set, the mean power spectrum of the crops less their
means (:func:`nic_lib.spectral.mean_power_spectrum`: Hann window, RGB; the mean of each
crop and channel removed first, since both filters keep it and its zero-frequency power,
~12,000 grey levels², would otherwise make up three quarters of the low band and hide how
the band's texture changes) and its band energies
(:func:`nic_lib.spectral.band_energies`, bands of ``spectral.BAND_EDGES``: low < 1/8
Nyquist <= mid < 1/2 <= high); printed: each band's energy after / before, and the same
ratio for the radial profile's annuli at 0.9-1.0 Nyquist (the top of the axis-aligned
frequencies), and the filter's time per batch of 8. Writes nothing.

    OMP_NUM_THREADS=1 nice python benchmarks/data_filter_spectra.py              # ~1 minute
    OMP_NUM_THREADS=1 nice python benchmarks/data_filter_spectra.py --blur 1 --noise 8 --crops 256
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nic_lib import spectral
from nic_lib import train as T

#: The stages' crops and batch (scripts/train_cpu_profile.py's _from_n96).
CROP, BATCH = 128, 8
#: Annuli of the radial profile read as "the top of the spectrum" (Nyquist units).
TOP_ANNULI = (0.9, 1.0)


def crop_sets(pool: T.ImagePool, specs: list[str | None], n_crops: int, seed: int
              ) -> dict[str | None, np.ndarray]:
    """The first ``n_crops`` training crops of a run (steps 0, 1, ...), per filter spec.

    Returns:
        spec -> uint8 (n_crops, CROP, CROP, 3); ``None`` is the unaltered crops.
    """
    out = {}
    for spec in specs:
        sampler = T.CropSampler(pool, CROP, BATCH, seed, spec)
        steps = -(-n_crops // BATCH)
        out[spec] = np.concatenate([sampler.batch(s) for s in range(steps)])[:n_crops]
    return out


def band_ratios(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Each band's energy (and the top annuli's mean power) after a filter / before it."""
    e0, e1 = spectral.band_energies(before), spectral.band_energies(after)
    p0, p1 = spectral.radial_profile(before), spectral.radial_profile(after)
    top = p0["radius"].between(*TOP_ANNULI)
    return {**{b: e1[b] / e0[b] for b in spectral.BANDS},
            "top": float(p1.loc[top, "power"].mean() / p0.loc[top, "power"].mean())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crops", type=int, default=512, help="crops per set (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blur", type=float, nargs="*", default=[0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
                   help="blur σ values (px) to measure")
    p.add_argument("--noise", type=float, nargs="*", default=[8, 16, 24, 32, 40, 48],
                   help="noise σ values (grey levels) to measure")
    args = p.parse_args(argv)

    pool = T.load_pool(T.training_files([T.DEFAULT_DATA]))
    specs = [None, *(f"blur:{s:g}" for s in args.blur), *(f"noise:{s:g}" for s in args.noise)]
    t0 = time.perf_counter()
    crops = crop_sets(pool, specs, args.crops, args.seed)
    # x − mean(x), per crop and channel
    spectra = {spec: spectral.mean_power_spectrum(c - c.mean(axis=(1, 2), keepdims=True))
               for spec, c in crops.items()}
    print(f"{args.crops} crops of {CROP} px from {len(pool.names)} training images (--data "
          f"{T.DEFAULT_DATA}), seed {args.seed}; {time.perf_counter() - t0:.0f} s")
    base = spectral.band_energies(spectra[None])
    print("unaltered band energies, crop means removed (grey levels²): "
          + ", ".join(f"{b} {v:.2f}" for b, v in base.items()))
    print(f"{'filter':>12} {'low':>7} {'mid':>7} {'high':>7} {'top':>7}   ms per batch of {BATCH}")
    batch = crops[None][:BATCH]
    for spec in specs[1:]:
        ratios = band_ratios(spectra[None], spectra[spec])
        f = T.parse_data_filter(spec)
        t0 = time.perf_counter()
        for _ in range(5):
            T.filter_crops(batch, f, args.seed, 0, range(BATCH))
        ms = (time.perf_counter() - t0) / 5 * 1000
        print(f"{spec:>12} " + " ".join(f"{ratios[k]:7.3f}" for k in (*spectral.BANDS, "top"))
              + f"   {ms:.1f}")


if __name__ == "__main__":
    main()
