"""The learning-rate schedule: linear warm-up, then cosine, step decay or a constant rate.

The schedule is a pure function of the step (and, with ``--schedule-clock time``, of the
training seconds so far), so a resumed run continues it exactly; the loop sets the rate
of every parameter group before each step. :func:`learning_rate` is the schedule of
:class:`~nic_lib.training.TrainConfig` runs; :func:`warmup_cosine` is PQ-MIM's (each of its
stages: warm-up, then cosine to a tenth of the peak); both decay by :func:`cosine_decay`.
"""

from __future__ import annotations

import math

from .config import TrainConfig


def learning_rate(step: int, cfg: TrainConfig, elapsed_s: float | None = None) -> float:
    """Learning rate of a step: linear warm-up, then cosine, step decay or constant.

    Args:
        step: 0-based step.
        cfg: uses lr, warmup_steps, start_step, lr_schedule, lr_decay_steps (default max_steps),
            min_lr_ratio, lr_milestones, lr_gamma, schedule_clock, max_minutes.
        elapsed_s: training seconds so far (used by ``schedule_clock="time"``).

    Returns:
        The rate for that step.
    """
    since = step - cfg.start_step
    if cfg.start_step and 0 <= since < cfg.warmup_steps:
        # a continued schedule (t_0 = --start-step): ramp to the rate the schedule has there,
        # lr_t = lr_sched(max(t, T_warmup)) · (t − t_0 + 1) / T_warmup
        target = _after_warmup(max(step, cfg.warmup_steps), cfg, elapsed_s)
        return target * (since + 1) / cfg.warmup_steps
    if step < cfg.warmup_steps:
        # lr_t = lr · (t + 1) / T_warmup
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return _after_warmup(step, cfg, elapsed_s)


def _after_warmup(step: int, cfg: TrainConfig, elapsed_s: float | None) -> float:
    """The schedule's rate at a step past the warm-up."""
    horizon = cfg.lr_decay_steps or cfg.max_steps
    t_steps = (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps)
    t_time = 0.0
    if cfg.schedule_clock == "time" and cfg.max_minutes and elapsed_s is not None:
        # progress on the wall clock, so a slower machine still ends the decay in time
        t_time = elapsed_s / (60.0 * cfg.max_minutes)
    if cfg.lr_schedule == "cosine":
        t = min(1.0, max(t_steps, t_time))
        # lr_t = lr_min + ½ (lr − lr_min)(1 + cos(π t)),  lr_min = lr · min_lr_ratio
        return cosine_decay(t, cfg.lr, cfg.lr * cfg.min_lr_ratio)
    if cfg.lr_schedule == "step":
        passed = sum(max(step / horizon, t_time) >= m for m in cfg.lr_milestones)
        # lr_t = lr · γ^(number of milestones passed)
        return cfg.lr * cfg.lr_gamma**passed
    return cfg.lr


def cosine_decay(t: float, peak: float, lr_min: float) -> float:
    """Cosine decay from ``peak`` (t = 0) to ``lr_min`` (t = 1).

    Args:
        t: progress after the warm-up, in [0, 1].
        peak: the rate at t = 0.
        lr_min: the rate at t = 1.

    Returns:
        The rate.
    """
    # lr_t = lr_min + ½ (peak − lr_min)(1 + cos(π t))
    return lr_min + 0.5 * (peak - lr_min) * (1.0 + math.cos(math.pi * t))


def warmup_cosine(step: int, peak: float, warmup: int, total: int, start: int = 0) -> float:
    """Linear warm-up to ``peak``, then cosine to ``peak / 10`` at step ``total``.

    The schedule of each PQ-MIM stage (:mod:`nic_lib.training.pqmim`): a fixed horizon, no
    time clock. A stage continued from a snapshot at step ``start`` (``--start-step``, fresh
    optimizer state) ramps up again, as :func:`learning_rate` does: over ``warmup`` steps
    to the rate the schedule has there.

    Args:
        step: 0-based step of the stage.
        peak: peak rate.
        warmup: warm-up steps.
        total: stage length in steps.
        start: the step a continued stage starts from (0: not continued).

    Returns:
        The rate.
    """
    if start and 0 <= step - start < warmup:
        # lr_t = lr_sched(max(t, T_warmup)) · (t − t_0 + 1) / T_warmup
        return warmup_cosine(max(step, warmup), peak, warmup, total) * (step - start + 1) / warmup
    if step < warmup:
        # lr_t = peak · (t + 1) / T_warmup
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return cosine_decay(t, peak, peak / 10)
