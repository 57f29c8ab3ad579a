"""The project's own error types: one base, so that a command line can tell a user's
mistake from a bug.

Every error nic-repro raises for a problem its user can fix (a missing or damaged file, a
file made with another model, a checkpoint not trained yet, an unknown model key, a
quality outside the table, weights that cannot be downloaded) derives from
:class:`NicReproError`, and keeps the built-in base it had before (``ValueError``,
``KeyError``, ``OSError``, ``RuntimeError``), so existing ``except`` clauses still
catch it. The ``nic`` command (:mod:`nic_lib.cli`) prints these as one line; anything
else is a bug and gets its traceback.

The families, each defined beside the code that raises it:

- :class:`nic_lib.container.NicError`: the ``.nic`` file (format, version, model
  mismatch, decode, size, budget);
- :class:`nic_lib.models.checkpoints.CheckpointError`: a checkpoint missing, unsafe or
  not fitting its architecture;
- :class:`nic_lib.models.registry.UnknownModelError`,
  :class:`nic_lib.models.registry.ModelSettingError`: a model key, quality or profile
  the registry does not have;
- :class:`nic_lib.models.zoo.PretrainedWeightsUnavailableError`: published weights that
  cannot be had (offline, wrong digest);
- :class:`nic_lib.coding.RateEstimateError`: a learned codec's likelihood estimate
  too far from its real bits to stand in for them;
- :mod:`nic_lib.data`'s dataset and image errors; :class:`nic_lib.cli.NicCliError`.
"""

from __future__ import annotations

__all__ = ["NicReproError"]


class NicReproError(Exception):
    """Base of every error that names a problem the user can fix, and how."""
