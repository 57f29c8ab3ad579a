"""Training recipes beyond the plain loop: warm starts, density pre-fit, settled quantiles.

- :func:`warm_start` (``--init-from``, ``--init-only``): begin from another model's
  tensors where name and shape match (a variable-rate model from a fixed-rate one, an
  ablation's entropy model on the joint model's transforms, a context model of another
  kernel size);
- :func:`prefit_densities` (``--prefit-densities``): fit each rate level's new
  factorized density to its latents before training;
- :func:`settle_quantiles`: after training, finish placing the factorized densities'
  coder range.

The tail-gradient trick (``--tail-gradient``) changes the rate term, so it lives with the
loss (:func:`nic_lib.training.loss.tail_gradient`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from compressai.entropy_models import EntropyBottleneck

from nic_lib.models import checkpoints, variable_rate

#: Density pre-fit (``--prefit-densities``): crops whose latents the densities are fitted
#: to, and the learning rates of the densities and of their quantiles. The densities are
#: tiny per-channel MLPs on fixed data, so a rate 10x the network's converges in a few
#: hundred steps; the quantiles start at ±10 (CompressAI's init_scale) and must travel
#: tens of units, hence 5e-2 rather than the 1e-3 of the training loop.
PREFIT_CROPS = 32
PREFIT_LR = 1e-2
PREFIT_AUX_LR = 5e-2
#: Prefixes under which CompressAI's latent-codec models (the checkerboard model) hold
#: the layers a plain model keeps at the top level (h_a, h_s, entropy_parameters, ...).
WARM_START_PREFIXES = ("latent_codec.hyper.", "latent_codec.y.y.", "latent_codec.y.")


def under_prefixes(name: str, prefixes) -> bool:
    """True when a parameter name lies under one of the module-name prefixes.

    Args:
        name: a parameter or state-dict name (``"g_a.0.weight"``).
        prefixes: module names (``("g_a", "gain")``); a trailing dot is allowed.

    Returns:
        Whether ``name`` is one of them or lies inside one.
    """
    return any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes)


def warm_start(model: torch.nn.Module, path: str | os.PathLike, only=None) -> dict:
    """Copy into ``model`` every tensor of a checkpoint whose name and shape match.

    A warm start, not a resume: optimizer, schedule and step start afresh. Used to begin
    a variable-rate model from a fixed-rate one (the gain units are new), or an ablation
    from the joint model (shared transforms; new entropy-model layers keep their
    initialisation).

    Args:
        model: the freshly built model.
        path: a run's ``final.pt`` (registry checkpoint) or ``ckpt.pt`` (training state).
        only: module-name prefixes (``("g_a", "g_s")``); when given, only tensors under
            them are copied and everything else keeps its fresh initialisation.

    Returns:
        ``{"path", "loaded", "resized", "new", "skipped"}``: counts of tensors copied (of
        which ``resized``: context kernels cropped or padded to another context size, see
        :func:`_resize_kernel`), tensors the checkpoint lacked, and checkpoint tensors that
        did not fit (name or shape).

    Raises:
        ValueError: the file holds no state dict.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and state.get("format") == checkpoints.CHECKPOINT_FORMAT:
        # int8 kernels dequantized, tensors shared with a base checkpoint taken from it
        state = {"state_dict": checkpoints._stored_weights(state, Path(path))}
    weights = state.get("state_dict") or state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"{path} holds no model weights (expected a run's final.pt or ckpt.pt)")
    own = model.state_dict()
    resized = 0
    # coder tables are rebuilt by update(), and a context model's mask belongs to the
    # architecture (raster vs checkerboard): neither is copied
    fixed = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table", ".mask")
    fits, used = {}, set()
    for key, tensor in own.items():
        if key.endswith(fixed) or (only and not under_prefixes(key, only)):
            continue
        # CompressAI's latent-codec models nest the same layers one level down
        candidates = [key] + [key[len(p):] for p in WARM_START_PREFIXES if key.startswith(p)]
        if hasattr(model, "h_a"):
            # per-level hyperprior densities start from the source's shared one
            candidates += [re.sub(r"\.bottlenecks\.\d+\.", ".", c) for c in list(candidates)]
        for source in candidates:
            if source not in weights:
                continue
            if weights[source].shape == tensor.shape:
                fits[key] = weights[source].to(tensor.dtype)
            elif CONTEXT_KERNEL_KEY in key and _resizable_kernel(weights[source], tensor):
                fits[key] = _resize_kernel(weights[source], tensor.shape[-1]).to(tensor.dtype)
                resized += 1
            else:
                continue
            used.add(source)
            break
    model.load_state_dict({**own, **fits})
    return {"path": str(path), "loaded": len(fits), "resized": resized,
            "new": len([k for k in own if k not in fits and not k.endswith(fixed)]),
            "skipped": len([k for k in weights if k not in used and not k.endswith(fixed)])}


#: State-dict keys of the masked context convolution, whose kernel side is the context-size
#: ablation's parameter (3, 5, 7): warm_start crops or zero-pads it around its centre.
CONTEXT_KERNEL_KEY = "context_prediction.weight"


def _resizable_kernel(source: torch.Tensor, target: torch.Tensor) -> bool:
    """Same channels, square odd kernels of another side."""
    return (source.dim() == target.dim() == 4 and source.shape[:2] == target.shape[:2]
            and source.shape[2] == source.shape[3] and target.shape[2] == target.shape[3]
            and source.shape[2] % 2 == 1 and target.shape[2] % 2 == 1)


def _resize_kernel(weight: torch.Tensor, side: int) -> torch.Tensor:
    """Centre-crop or zero-pad a (C_out, C_in, k, k) kernel to (C_out, C_in, side, side).

    The masked convolution reads the causal half of its window, centred on the current
    latent. Zero-padding a k=5 kernel to 7 gives exactly the same function (the new taps
    start at zero); cropping to 3 keeps the nearest neighbours' taps, the ones that
    carry most of the context. Either way the ablation starts from the trained model
    rather than from a random context model.
    """
    k = weight.shape[-1]
    if side >= k:
        p = (side - k) // 2
        return torch.nn.functional.pad(weight, (p, p, p, p))
    c = (k - side) // 2
    return weight[..., c:c + side, c:c + side].clone()


def prefit_densities(model: torch.nn.Module, x: torch.Tensor, steps: int,
                     lr: float = PREFIT_LR, aux_lr: float = PREFIT_AUX_LR,
                     latents: bool = False) -> list[dict]:
    """Fit each level's factorized density of a variable-rate model to its latents.

    A variable-rate ``bmshj2018-factorized`` gets one new
    :class:`~nic_lib.models.variable_rate.LeveledEntropyBottleneck` density of ``y`` per
    level (its warm-start source has none for ``y``); a hyperprior model built with
    ``per_level_hyper_density`` gets one density of ``z`` per level. Trained inside the
    main loop, each level's density sees a sixth of the steps at the network's small
    learning rate, and 7 minutes left the factorized prior's near their initialisation
    (~2 bpp at every level). Here the transforms are frozen and each level's density is
    fitted alone by maximum likelihood on the noisy latents it codes (``y_l = g_a(x) ⊙ γ_l``
    for the factorized prior, ``z_l = h_a(·)`` of them for a hyperprior) of a fixed set
    of crops,

        min_ψ  E[ −log2 p_ψ(v_l + u) ] ,  u ~ U(−½, ½)

    together with its quantiles (CompressAI's aux loss), before ordinary training starts.

    Args:
        model: a variable-rate model whose ``entropy_bottleneck`` is leveled.
        x: crops (B, 3, H, W) on 0..1.
        steps: Adam steps per level.
        lr, aux_lr: learning rates of the density parameters and of the quantiles.
        latents: ``x`` is already ``g_a``'s output y₀ (cached latents,
            ``nic_lib.train_entropy``): the model runs ``forward_latents(x)``.

    Returns:
        Per level: ``{"level", "bits_per_latent_start", "bits_per_latent_end", "aux_loss_end"}``.

    Raises:
        ValueError: the model has no per-level densities to fit.
    """
    leveled = getattr(model, "entropy_bottleneck", None)
    if not (variable_rate.is_variable_rate(model)
            and isinstance(leveled, variable_rate.LeveledEntropyBottleneck)):
        raise ValueError("--prefit-densities applies to variable-rate models with per-level "
                         "densities (bmshj2018-factorized, or a hyperprior model with "
                         "--per-level-hyper-density); drop it for other models")
    # what each level's density codes: the input of the bottleneck in the model's forward
    seen: list[torch.Tensor] = []
    hook = leveled.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    level0, was_training = model.gain.level, model.training
    try:
        model.eval()
        with torch.no_grad():
            for level in range(len(leveled.bottlenecks)):
                variable_rate.set_rate_level(model, level)
                if latents:
                    model.forward_latents(x, synthesize=False)
                else:
                    model(x)
    finally:
        hook.remove()
        variable_rate.set_rate_level(model, level0)
        model.train(was_training)
    report = []
    for level, (bottleneck, v) in enumerate(zip(leveled.bottlenecks, seen, strict=True)):
        params = [p for n, p in bottleneck.named_parameters() if not n.endswith("quantiles")]
        opt = torch.optim.Adam(params, lr=lr)
        aux_opt = torch.optim.Adam([bottleneck.quantiles], lr=aux_lr)
        first = last = float("nan")
        for step in range(steps):
            _, likelihood = bottleneck(v, training=True)
            # bits per latent = mean of −log2 p(ṽ)
            bits = -torch.log2(likelihood).mean()
            opt.zero_grad(set_to_none=True)
            bits.backward()
            opt.step()
            aux = bottleneck.loss()
            aux_opt.zero_grad(set_to_none=True)
            aux.backward()
            aux_opt.step()
            first = float(bits.detach()) if step == 0 else first
            last = float(bits.detach())
        report.append({"level": level, "bits_per_latent_start": first,
                       "bits_per_latent_end": last, "aux_loss_end": float(bottleneck.loss().detach())})
    return report


@torch.no_grad()
def _aux_total(model: torch.nn.Module) -> float:
    return float(sum(m.loss() for m in model.modules() if isinstance(m, EntropyBottleneck)))


def settle_quantiles(model: torch.nn.Module, steps: int = 5000, lr: float = PREFIT_AUX_LR,
                     tol: float = 1e-2) -> dict:
    """Place every factorized density's quantiles where its trained density puts them.

    CompressAI's coder covers each channel of a factorized density between two quantiles
    (values outside are escaped, at a cost the likelihood does not show). They are trained
    by the aux loss alone, Σ |logit F(q_k) − t_k| with t = (−log(2/ε − 1), 0, log(2/ε − 1)),
    which depends on the density, not on data. They start at ±10 and move at the aux
    learning rate, so a short run (a fresh entropy model trained 2,000 steps at 1e-3)
    leaves them far from their place. This finishes that optimisation with the densities
    fixed: the densities (the likelihood of y + u in training) do not change; the coder's
    range does (its tables are rebuilt with ``update(force=True)``), and so does its
    rounding offset, since CompressAI rounds a factorized latent around the middle
    quantile m (ŷ = round(y − m) + m), which moves to the density's median.

    Args:
        model: a CompressAI model (any number of EntropyBottleneck modules).
        steps: most Adam steps; stops early when the aux loss is below ``tol``.
        lr: Adam learning rate of the quantiles.
        tol: aux loss (summed over every bottleneck) to stop at.

    Returns:
        ``{"aux_loss_before", "aux_loss_after", "steps"}``.
    """
    bottlenecks = [m for m in model.modules() if isinstance(m, EntropyBottleneck)]
    before = _aux_total(model)
    if not bottlenecks:
        return {"aux_loss_before": before, "aux_loss_after": before, "steps": 0}
    quantiles = [b.quantiles for b in bottlenecks]
    flags = [q.requires_grad for q in quantiles]
    frozen = [p for p in model.parameters() if p.requires_grad and
              not any(p is q for q in quantiles)]
    for p in frozen:
        p.requires_grad_(False)
    for q in quantiles:
        q.requires_grad_(True)
    opt = torch.optim.Adam(quantiles, lr=lr)
    step = 0
    try:
        with torch.enable_grad():
            for step in range(1, steps + 1):
                loss = sum(b.loss() for b in bottlenecks)
                if loss.item() < tol:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
        for q, flag in zip(quantiles, flags):
            q.requires_grad_(flag)
    model.update(force=True)
    return {"aux_loss_before": before, "aux_loss_after": _aux_total(model), "steps": step}

