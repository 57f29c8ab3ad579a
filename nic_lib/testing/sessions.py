"""A training run that ends as a session does: the process stops mid-step, saving nothing.

The continuation tests of PQ-MIM (``tests/test_pqmim_continue.py``,
``tests/test_pqmim_precision.py``) need a run folder left by such an end: a ``ckpt.pt`` from
the last checkpoint and no ``final.pt``. :func:`end_pqmim_session_during_step` makes one.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

__all__ = ["SessionEnd", "end_pqmim_session_during_step"]


class SessionEnd(RuntimeError):
    """The end of a session: the process dies without saving (unlike a Ctrl-C)."""


def end_pqmim_session_during_step(cfg, killed_at: int) -> Path:
    """Train ``cfg`` (a ``PQMIMTrainConfig``) until stage A asks for the crops of step
    ``killed_at``, then stop it there without saving.

    Args:
        cfg: the run's configuration (its ``out_dir`` is the run folder).
        killed_at: stage A's step index during which the session ends.

    Returns:
        The run folder; its ``ckpt.pt`` holds the last checkpoint before ``killed_at``.

    Raises:
        AssertionError: the run finished before reaching ``killed_at``.
    """
    from nic_lib import train_pqmim
    from nic_lib.training.pqmim import run as run_module

    class Killed(run_module.CropSampler):
        def batch(self, step, *args, **kwargs):
            if step == killed_at:
                raise SessionEnd
            return super().batch(step, *args, **kwargs)

    with mock.patch.object(run_module, "CropSampler", Killed):
        try:
            train_pqmim.train(cfg)
        except SessionEnd:
            return Path(cfg.out_dir)
    raise AssertionError(f"the run finished before step {killed_at}")
