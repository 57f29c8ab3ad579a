"""Training of the learned compression models: one loop, its data, loss, recipes and files.

``python -m nic_lib.train`` (:mod:`nic_lib.train`) is the command line over this package;
from Python: ``train(TrainConfig(model="mbt2018", quality=3, max_steps=2000))``.

| module | holds |
|---|---|
| :mod:`~nic_lib.training.config` | :class:`TrainConfig`, its defaults, a run's λ and model |
| :mod:`~nic_lib.training.data` | training files (never an evaluation set), the uint8 pool, crops, their ``--data-filter`` |
| :mod:`~nic_lib.training.loss` | L = R + λ·D, sample-keyed noise, the tail gradient |
| :mod:`~nic_lib.training.schedule` | the learning rate of a step |
| :mod:`~nic_lib.training.precision` | bfloat16 forward of the networks (``--precision bf16``) |
| :mod:`~nic_lib.training.evaluation` | the periodic Kodak evaluation |
| :mod:`~nic_lib.training.recipes` | warm start, density pre-fit, settled quantiles |
| :mod:`~nic_lib.training.runs` | the run folder: ckpt.pt, final.pt, CSV logs, export |
| :mod:`~nic_lib.training.loop` | :func:`train`: the one loop (DDP, EMA, resume) |

Imports point up this table only (``loop`` uses them all; ``runs`` uses ``config`` and
``loss``; the others use ``config`` at most). PQ-MIM's stages (the subpackage
:mod:`nic_lib.training.pqmim`, command line :mod:`nic_lib.train_pqmim`) and
entropy-model-only runs (:mod:`nic_lib.train_entropy`) reuse the data, schedule,
evaluation and run-file parts.
"""

from .config import (
    DATA_FILTERS,
    DEFAULT_AUX_LR,
    DEFAULT_BATCH,
    DEFAULT_CKPT_EVERY,
    DEFAULT_CLIP,
    DEFAULT_CROP,
    DEFAULT_DATA,
    DEFAULT_EVAL_CROP,
    DEFAULT_EVAL_EVERY,
    DEFAULT_EVAL_IMAGES,
    DEFAULT_LOG_EVERY,
    DEFAULT_LR,
    DEFAULT_LR_GAMMA,
    DEFAULT_LR_MILESTONES,
    DEFAULT_MAX_STEPS,
    DEFAULT_MIN_LR_RATIO,
    DEFAULT_MODEL,
    DEFAULT_PROFILE,
    DEFAULT_QUALITY,
    DEFAULT_WARMUP,
    PRECISIONS,
    RUNTIME_KEYS,
    DataFilter,
    TrainConfig,
    build_model,
    check_config,
    model_config,
    parse_data_filter,
    rate_lambda,
    rate_lambdas,
    rate_settings,
    reference_lambda,
)
from .data import (
    EVAL_ONLY_DATASETS,
    JPEG_DOWNSCALE,
    JPEG_SUFFIXES,
    POOL_FORMAT,
    CropSampler,
    ImagePool,
    filter_crops,
    load_pool,
    training_files,
)
from .evaluation import EVAL_DATASET, evaluate, load_eval_images
from .loop import train
from .loss import SampleKeyedNoise, rd_loss, tail_gradient
from .precision import REDUCED_PRECISION_MODULES, reduced_precision
from .recipes import (
    CONTEXT_KERNEL_KEY,
    PREFIT_AUX_LR,
    PREFIT_CROPS,
    PREFIT_LR,
    WARM_START_PREFIXES,
    prefit_densities,
    settle_quantiles,
    under_prefixes,
    warm_start,
)
from .runs import (
    EVAL_COLUMNS,
    LOG_COLUMNS,
    RUN_RECORDS,
    TRAIN_STATE_FORMAT,
    CsvLog,
    copy_run_records,
    default_runs_dir,
    load_train_state,
    save_final,
    ship_run,
    snapshot_final,
)
from .schedule import learning_rate

#: The public names, re-exported by :mod:`nic_lib.train`.
__all__ = [
    "CONTEXT_KERNEL_KEY",
    "CropSampler",
    "CsvLog",
    "DATA_FILTERS",
    "DEFAULT_AUX_LR",
    "DEFAULT_BATCH",
    "DEFAULT_CKPT_EVERY",
    "DEFAULT_CLIP",
    "DEFAULT_CROP",
    "DEFAULT_DATA",
    "DEFAULT_EVAL_CROP",
    "DEFAULT_EVAL_EVERY",
    "DEFAULT_EVAL_IMAGES",
    "DEFAULT_LOG_EVERY",
    "DEFAULT_LR",
    "DEFAULT_LR_GAMMA",
    "DEFAULT_LR_MILESTONES",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_MIN_LR_RATIO",
    "DEFAULT_MODEL",
    "DEFAULT_PROFILE",
    "DEFAULT_QUALITY",
    "DEFAULT_WARMUP",
    "DataFilter",
    "EVAL_COLUMNS",
    "EVAL_DATASET",
    "EVAL_ONLY_DATASETS",
    "ImagePool",
    "JPEG_DOWNSCALE",
    "JPEG_SUFFIXES",
    "LOG_COLUMNS",
    "POOL_FORMAT",
    "PRECISIONS",
    "PREFIT_AUX_LR",
    "PREFIT_CROPS",
    "PREFIT_LR",
    "REDUCED_PRECISION_MODULES",
    "RUNTIME_KEYS",
    "RUN_RECORDS",
    "SampleKeyedNoise",
    "TRAIN_STATE_FORMAT",
    "TrainConfig",
    "WARM_START_PREFIXES",
    "build_model",
    "check_config",
    "copy_run_records",
    "default_runs_dir",
    "evaluate",
    "filter_crops",
    "learning_rate",
    "load_eval_images",
    "load_pool",
    "load_train_state",
    "model_config",
    "parse_data_filter",
    "prefit_densities",
    "prepare",
    "rate_lambda",
    "rate_lambdas",
    "rate_settings",
    "rd_loss",
    "reduced_precision",
    "reference_lambda",
    "save_final",
    "settle_quantiles",
    "ship_run",
    "snapshot_final",
    "tail_gradient",
    "train",
    "training_files",
    "under_prefixes",
    "warm_start",
]
