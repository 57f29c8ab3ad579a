"""Training of PQ-MIM: stage A (autoencoder + product quantizer), B (MIM model), C (perceptual).

``python -m nic_lib.train_pqmim`` (:mod:`nic_lib.train_pqmim`) is the command line over
this package; from Python: ``train(PQMIMTrainConfig(M=4, K=256, steps_a=2000,
steps_b=2000))``, then optionally ``train_perceptual(PerceptualTrainConfig(source=run))``.

What the stages do (stage B starts when stage A has finished its steps or minutes; stage C
is a separate command on a finished model)::

    A  x ── g_a ── product quantizer (EMA codebooks, restarts) ── g_s ──► x_hat
       L_A = MSE(x_hat, x) + β‖z − sg(e)‖²          (x on the 0..1 scale)
    B  codes = PQ(g_a(x)) with g_a and the codebooks frozen, of every training image once
       (CodeMapSampler); each step draws windows of crop_b/16 x crop_b/16 tokens
       mask ceil(γ·L) of the L = h·w·M codes, γ = cos(π r / 2), r ~ U[0, 1)   (MaskGIT)
       L_B = Σ_masked −ln P(c | visible codes) / #masked           (nats per code)
       (--mask-law schedule: γ at the fractions where the coding schedule codes a code,
       P(γ = 1 − C_{s−1}/L) = n_s/L, and L_B the mean over crops of each crop's mean;
       see nic_lib.models.pqmim.mask_ratio)
    C  g_a, codebooks and MIM model frozen: same codes, same bitstream
       x_hat = g_s(z_q);  D = PatchGAN discriminator (nic_lib.perceptual), alternately:
       L_G = MSE(x_hat, x) [+ w_ms (1 − MS-SSIM)] + w_adv · L_adv(D(x_hat))   (g_s only)
       L_D = GAN loss of D(x) vs D(sg(x_hat))                                   (D only)

Each stage's learning rate: linear warm-up, then cosine to a tenth of the peak
(:func:`nic_lib.training.schedule.warmup_cosine`). With ``--precision bf16`` stage A's
g_a and g_s compute under bfloat16 autocast (:mod:`nic_lib.training.precision`; the
quantizer, its codebooks and the losses stay float32; fp32 on a CPU without native
bfloat16, recorded as ``precision_computed`` in ``config.json``); stages B and C, evaluation
and the coder always compute in float32.

| module | holds |
|---|---|
| :mod:`.config` | :class:`PQMIMTrainConfig`, defaults, resume rules, per-step generators |
| :mod:`.stage_a` | stage A's loop and ``log_a.csv`` |
| :mod:`.stage_b` | :class:`CodeMapSampler`, stage B's loop and ``log_b.csv`` |
| :mod:`.snapshot` | :func:`export_snapshot`: an unfinished run as a checkpoint a fresh machine continues (``--init-from``/``--start-step``) |
| :mod:`.run` | :func:`train`: run folder, ``ckpt.pt``, resume, ``--restart-b``, export |
| :mod:`.stage_c` | :func:`train_perceptual`, :func:`perceptual_pairs`, stage C's files |

Imports point up this table only. From :mod:`nic_lib.training` the stages reuse the
training files (:func:`~nic_lib.training.training_files` refuses evaluation sets), the
cached image pool (:func:`~nic_lib.training.load_pool`), the crops
(:class:`~nic_lib.training.CropSampler`, a function of (seed, step)), the CSV logs
(:class:`~nic_lib.training.CsvLog`) and the runs folder
(:func:`~nic_lib.training.default_runs_dir`). Every other random draw (codebook
initialisation, dead-code restarts, masks) comes from a generator seeded by (seed, stream,
step), so a resumed run is identical to an uninterrupted one and ``ckpt.pt`` needs no RNG
state.

A run folder (default ``runs/pqmim-M<M>-K<K>-<time>``; ``$NIC_RUNS_DIR`` moves ``runs/``)
receives ``config.json``, ``log_a.csv`` / ``log_b.csv`` (one row per ``--log-every``
steps), ``ckpt.pt`` (resumable: model, optimizer, stage, step; plain values, readable with
``weights_only=True``) and ``final.pt`` (:func:`nic_lib.models.save_checkpoint`'s format);
``--export PATH`` copies ``final.pt`` there (the notebooks look in
``checkpoints/pqmim/M<M>-K<K>.pt``). Stage C writes ``config_c.json``, ``log_c.csv``,
``ckpt_c.pt`` and ``final_c.pt`` (:data:`STAGE_C_FILES`).

Across machines: ``export_snapshot(run, "snapshot.pt")`` writes the run's latest state as
a checkpoint with its records; a new run with the run's flags and ``--init-from
snapshot.pt --start-step STEP`` continues stage A from it (fresh optimizer state, the rate
ramped up again to the schedule's), and ``--resume snapshot.pt --restart-b --out-dir NEW``
starts stage B from a snapshot whose stage A is finished (:mod:`.snapshot`).
"""

from .config import (
    ADDED_SETTINGS,
    DEFAULT_BATCH,
    DEFAULT_CKPT_EVERY,
    DEFAULT_CLIP,
    DEFAULT_CROP,
    DEFAULT_LOG_EVERY,
    DEFAULT_LR_A,
    DEFAULT_LR_B,
    DEFAULT_MASK_LAW,
    DEFAULT_PRECISION,
    DEFAULT_STEPS,
    DEFAULT_WARMUP,
    DEFAULT_WEIGHT_DECAY_B,
    RUNTIME_KEYS,
    STAGE_B_KEYS,
    PQMIMTrainConfig,
    check_config,
    resumed_config,
)
from .run import TRAIN_STATE_FORMAT, load_state, train
from .snapshot import SNAPSHOT_KEY, export_snapshot, snapshot_records
from .stage_a import LOG_A_COLUMNS
from .stage_b import LOG_B_COLUMNS, STAGE_B_JPEG_SCALE, CodeMapSampler
from .stage_c import (
    DEFAULT_ADV_WEIGHT,
    DEFAULT_LR_C,
    DEFAULT_LR_D,
    DEFAULT_MS_SSIM_WEIGHT,
    DEFAULT_STEPS_C,
    LOG_C_COLUMNS,
    PERCEPTUAL_STATE_FORMAT,
    RUNTIME_KEYS_C,
    STAGE_C_FILES,
    PerceptualTrainConfig,
    is_stage_c_state,
    perceptual_pairs,
    train_perceptual,
)

#: The public names, re-exported by :mod:`nic_lib.train_pqmim`.
__all__ = [
    "ADDED_SETTINGS",
    "CodeMapSampler",
    "DEFAULT_ADV_WEIGHT",
    "DEFAULT_BATCH",
    "DEFAULT_CKPT_EVERY",
    "DEFAULT_CLIP",
    "DEFAULT_CROP",
    "DEFAULT_LOG_EVERY",
    "DEFAULT_LR_A",
    "DEFAULT_LR_B",
    "DEFAULT_LR_C",
    "DEFAULT_LR_D",
    "DEFAULT_MASK_LAW",
    "DEFAULT_MS_SSIM_WEIGHT",
    "DEFAULT_PRECISION",
    "DEFAULT_STEPS",
    "DEFAULT_STEPS_C",
    "DEFAULT_WARMUP",
    "DEFAULT_WEIGHT_DECAY_B",
    "LOG_A_COLUMNS",
    "LOG_B_COLUMNS",
    "LOG_C_COLUMNS",
    "PERCEPTUAL_STATE_FORMAT",
    "PQMIMTrainConfig",
    "PerceptualTrainConfig",
    "RUNTIME_KEYS",
    "RUNTIME_KEYS_C",
    "SNAPSHOT_KEY",
    "STAGE_B_JPEG_SCALE",
    "STAGE_B_KEYS",
    "STAGE_C_FILES",
    "TRAIN_STATE_FORMAT",
    "check_config",
    "export_snapshot",
    "is_stage_c_state",
    "load_state",
    "perceptual_pairs",
    "resumed_config",
    "snapshot_records",
    "train",
    "train_perceptual",
]
