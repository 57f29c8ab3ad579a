r"""Which codes PQ-MIM hides and codes when: training masks and the coding schedule.

- Training (stage B): :func:`mask_ratio` draws the hidden fraction γ of a mask from one
  of :data:`MASK_LAWS`, :func:`random_mask` hides ceil(γ·L) random codes.
- Coding: :func:`coding_schedule` cuts the H·W·M codes of a grid into S groups
  (:func:`group_sizes`, M2T's power law), in a quasi-random order that spreads every
  prefix evenly (:func:`spread_order`); step s codes group s given groups < s.

Pure functions of the grid size: no model, no coder. Imports nothing of the package.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
from torch import Tensor

#: Laws of the training masks' hidden fraction γ (:func:`mask_ratio`): ``"cosine"``
#: (MaskGIT's, the shipped checkpoints') and ``"schedule"`` (the fractions at which the
#: coding schedule codes its codes; the default of new training runs,
#: :data:`nic_lib.training.pqmim.DEFAULT_MASK_LAW`).
MASK_LAWS = ("cosine", "schedule")
#: Coding steps S: M2T finds gains saturate at 8-12 steps; 10 sits in that range.
DEFAULT_STEPS = 10
#: Group sizes follow M2T's power law: a fraction (s/S)^α of the tokens is known after
#: step s, with α = 2.2 (M2T's value): small first groups (no context yet), large last ones.
SCHEDULE_ALPHA = 2.2
#: Plastic number: the R2 low-discrepancy sequence's generator (Roberts 2018).
PLASTIC = 1.324717957244746


def mask_ratio(n: int, generator: torch.Generator | None = None, law: str = "cosine",
               units: int | None = None, steps: int = DEFAULT_STEPS) -> Tensor:
    r"""Hidden fractions γ of training masks, drawn from one of :data:`MASK_LAWS`.

    ``"cosine"`` (MaskGIT): γ = cos(π r / 2), r ~ U[0, 1). Its law:
    P(γ ≤ g) = 1 − (2/π) arccos g on [0, 1] (most draws hide many codes).

    ``"schedule"``: the hidden fraction at which the coding schedule of ``units`` codes in
    ``steps`` steps (:func:`group_sizes`, known counts C_0 = 0 < C_1 < … < C_S = L) codes a
    code drawn uniformly from them. Step s codes n_s = C_s − C_{s−1} codes while
    1 − C_{s−1}/L of them are hidden, so

    .. math::  P(γ = 1 − C_{s−1}/L) = n_s / L,   s = 1..S

    drawn by inversion: r ~ U[0, 1), s = the step with C_{s−1}/L ≤ r < C_s/L. With a
    per-crop mean loss (``PQMIM.mim_loss(per_crop=True)``) the expected training loss is then
    the schedule's expected bits per code, up to the masks being random rather than the
    schedule's own. The cosine law draws γ > 0.9 for 29% of its masks; the schedule (S = 10)
    codes 13% of its codes there.

    Args:
        n: how many ratios.
        generator: random source (one uniform draw per ratio, whatever the law).
        law: one of :data:`MASK_LAWS`.
        units: L, codes per crop (``"schedule"`` only).
        steps: S (``"schedule"`` only; at most L).

    Returns:
        (n,) float ratios in (0, 1].

    Raises:
        ValueError: an unknown law, or ``"schedule"`` without ``units``.
    """
    r = torch.rand(n, generator=generator)
    if law == "cosine":
        # γ = cos(π r / 2)
        return torch.cos(math.pi * r / 2)
    if law != "schedule":
        raise ValueError(f"unknown masking law {law!r}; use one of {', '.join(MASK_LAWS)}")
    if units is None or units < 1:
        raise ValueError("the 'schedule' masking law needs units = codes per crop (>= 1)")
    sizes = group_sizes(units, min(steps, units))
    # known before step s: C_{s−1}/L, s = 1..S
    known = torch.tensor(np.cumsum([0, *sizes[:-1]]) / units, dtype=torch.float64)
    s = torch.searchsorted(known, r.double(), right=True) - 1
    # γ = 1 − C_{s−1}/L
    return (1.0 - known[s]).float()


def random_mask(batch: int, positions: int, generator: torch.Generator | None = None,
                law: str = "cosine", steps: int = DEFAULT_STEPS) -> Tensor:
    """Training masks: ceil(γ·L) random units of each row hidden, γ from :func:`mask_ratio`.

    Args:
        batch: rows B.
        positions: units per row L (codes: tokens x M).
        generator: random source.
        law: masking law (:data:`MASK_LAWS`).
        steps: S of the ``"schedule"`` law.

    Returns:
        (B, L) bool, True = masked (to predict); at least one per row.
    """
    gamma = mask_ratio(batch, generator, law, positions, steps)
    # masked count = ceil(γ L), at least 1
    count = torch.ceil(gamma * positions).clamp(1, positions).long()
    rank = torch.rand(batch, positions, generator=generator).argsort(-1).argsort(-1)
    return rank < count[:, None]


@functools.lru_cache(maxsize=64)
def spread_order(height: int, width: int) -> tuple[int, ...]:
    """A deterministic order of the grid's positions that spreads every prefix evenly.

    The i-th point of the R2 low-discrepancy sequence, (frac(½ + i/φ²), frac(½ + i/φ)) with
    φ the plastic number (Roberts 2018), claims the free grid cell nearest to it; M2T
    found such quasi-random orders as good as learned ones. O(L²) work, cached per size.

    Args:
        height, width: grid size.

    Returns:
        A permutation of ``range(height * width)`` (row-major indices).
    """
    n = height * width
    ys, xs = np.divmod(np.arange(n), width)
    cy, cx = (ys + 0.5) / height, (xs + 0.5) / width
    i = np.arange(n)
    # R2: p_i = frac(½ + i·(1/φ², 1/φ))
    py = (0.5 + i / PLASTIC**2) % 1.0
    px = (0.5 + i / PLASTIC) % 1.0
    free = np.ones(n, bool)
    order = np.empty(n, np.int64)
    scale_y, scale_x = float(height) ** 2, float(width) ** 2
    for k in range(n):
        d = scale_y * (cy - py[k]) ** 2 + scale_x * (cx - px[k]) ** 2  # in grid units²
        d[~free] = np.inf
        j = int(d.argmin())
        order[k], free[j] = j, False
    return tuple(order.tolist())


def group_sizes(positions: int, steps: int, alpha: float = SCHEDULE_ALPHA) -> list[int]:
    """Units coded at each of S steps: known fraction (s/S)^α after step s, each >= 1.

    Args:
        positions: units L (>= steps): codes (tokens x M) in :func:`coding_schedule`.
        steps: S.
        alpha: power-law exponent (M2T: 2.2).

    Returns:
        S positive sizes summing to L.

    Raises:
        ValueError: fewer units than steps (use fewer steps for such a small image).
    """
    if steps < 1 or positions < steps:
        raise ValueError(f"cannot code {positions} codes in {steps} steps: each step must "
                         "code at least one; use steps <= the number of codes (tokens x M)")
    # known after step s: C_s = round(L (s/S)^α), forced strictly increasing
    known = [0]
    for s in range(1, steps + 1):
        c = round(positions * (s / steps) ** alpha)
        c = min(max(c, known[-1] + 1), positions - (steps - s))
        known.append(c)
    return [b - a for a, b in itertools.pairwise(known)]


def coding_schedule(height: int, width: int, steps: int = DEFAULT_STEPS,
                    alpha: float = SCHEDULE_ALPHA, M: int = 1) -> list[Tensor]:
    """The codes coded at each step: fixed by (height, width, M, steps) alone.

    A unit is one code: position p (row-major) and sub-quantizer m, index ``p·M + m``. The
    order makes M rounds over the positions in :func:`spread_order`; round r codes, at the
    i-th position of that order, sub-quantizer (r + i) mod M. Every round covers the whole
    image evenly, every position gets one new code per round (so the later codes of a
    token are predicted knowing its earlier ones), and neighbouring positions of a round
    code different sub-quantizers. :func:`group_sizes` then cuts the H·W·M units into S
    groups. With M = 1 this is the plain position schedule.

    Args:
        height, width: token grid.
        steps: S.
        alpha: group-size exponent (:func:`group_sizes`).
        M: codes per position.

    Returns:
        S long tensors of unit indices ``p·M + m``; together a permutation of
        ``range(height · width · M)``.
    """
    spread = torch.tensor(spread_order(height, width))
    i = torch.arange(spread.numel())
    # round r: unit (spread[i], (r + i) mod M)
    order = torch.cat([spread * M + (r + i) % M for r in range(M)])
    sizes = group_sizes(height * width * M, steps, alpha)
    return list(torch.split(order, sizes))
