"""Function-preserving widening of a trained model's latent: M → M' > M channels.

A model whose latent width M caps its quality (``y`` keeps M numbers per 16×16×3 block
of pixels, see notebook 01's ceiling figure) need not be retrained from scratch to get a
wider latent: the trained weights are copied into a wider network whose new parts start
so that the wider network computes *exactly* the same function, and training goes on
from there (the "Net2Net" idea, Chen, Goodfellow, Shlens, ICLR 2016, applied to
mbt2018's latent).

How each new piece starts (``old`` = the trained weights, copied into the leading block):

    y' = [y, 0]                g_a's new output filters and biases are 0
    g_s(y'):  new input rows 0 (ŷ's new channels are read with weight 0; during training
              they carry only the uniform noise u, so x̂ is unchanged there too)
    hidden units of h_s, of the context model and of the entropy-parameters network:
              new units get a fresh random init on their input side and weight 0 on their
              output side (the next layer's new input columns), so they compute something
              — their outgoing weights get gradients at once — but contribute nothing yet
    entropy parameters (scales, means) of the new channels: weights and biases 0, so
              μ = 0 (ŷ = round(0 − μ) + μ = 0 exactly) and σ = the lower bound 0.11:
              a zero latent costs ~1e-5 bits
    gain units (variable rate): each level's new channels start at the mean log-gain of
              that level's trained channels

so ``widened(x) == model(x)`` in evaluation (tested: same x̂, same bits up to ~1e-5 bit
per new latent), and in training the first step sees the same loss. The new channels
then learn because the noise on them reaches g_s's (zero) input rows, whose gradient is
δ·u ≠ 0, and once those rows are non-zero the distortion reaches g_a's new filters.

:func:`widen_hidden` does the same for N, the width of the transforms' hidden layers
and of z (the second lever once M no longer binds: notebook 01's ceiling figure):

    every layer with N outputs: its new output filters and biases are 0, so the new
              hidden units (and z's new channels) are exactly 0 — in training too, since
              only y and z get noise
    every layer that reads N inputs: the new input columns keep a fresh random init
              (they multiply zeros, so they change nothing, and they give the new units'
              zero filters a gradient at once: δ_new = Wᵀ_new δ_next ≠ 0)
    GDN / inverse GDN: the new units get GDN's own init (β = 1, γ = 0.1·I); the old
              block of γ is copied and γ between old and new units is 0 (a new unit's
              input is 0, so the old units' normalisation is unchanged either way)
    h_s reads z's new channels with weight 0 (z̃ = 0 + u in training, so a random weight
              would add noise to the hyperprior); the gradient δ·u makes them learn
    entropy bottleneck of z's new channels: a copy of the trained channel whose density
              is most peaked at its median, re-centred at 0 (b₀ ← b₀ + softplus(H₀)·m,
              quantiles − m), so a z channel that is always 0 costs almost nothing

so again ``widened(x) == model(x)``: the same x̂ and, up to the new z channels' cost, the
same bits. Supported: the joint model ``mbt2018`` (any context size), fixed- or
variable-rate (with one z density or one per level).
"""

from __future__ import annotations

import math

import torch
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor, nn

from nic_lib.models import calibration, checkpoints, registry, variable_rate

__all__ = ["widen_latent", "widen_hidden", "add_levels", "select_levels", "WIDENABLE"]

#: Registry keys whose latent can be widened by :func:`widen_latent`.
WIDENABLE = ("mbt2018",)


def _prefix(old: int, new: int) -> Tensor:
    """Old channel i sits at new position i (hidden units and y)."""
    return torch.arange(old)


def _halves(old: int, new: int) -> Tensor:
    """A tensor made of two equal blocks [a (old/2), b (old/2)] → [a, new, b, new]:
    (scales, means) of the Gaussian, or (hyperprior features, context features)."""
    h_old, h_new = old // 2, new // 2
    return torch.cat([torch.arange(h_old), h_new + torch.arange(h_old)])


# For each tensor whose shape depends on M: per dimension, (how old channels map into the
# new ones, "in" | "out" | "zero-out"). "in": new positions along this dimension are 0 (a
# new input must not change the output). "out": new output units keep the fresh random
# init (hidden units). "zero-out": new outputs are 0 (y itself, and the parameters of y).
_Y, _H, _P = "y", "hidden", "halves"
_SPEC: dict[str, tuple[tuple[str | None, str | None], ...]] = {
    # key: ((map, role) for dim 0, (map, role) for dim 1)
    "g_a.6.weight": ((_Y, "zero-out"), (None, None)),
    "g_a.6.bias": ((_Y, "zero-out"),),
    "g_s.0.weight": ((_Y, "in"), (None, None)),  # ConvTranspose2d: (in, out, k, k)
    "h_a.0.weight": ((None, None), (_Y, "in")),
    "h_s.0.weight": ((None, None), (_H, "out")),  # ConvTranspose2d
    "h_s.0.bias": ((_H, "out"),),
    "h_s.2.weight": ((_H, "in"), (_H, "out")),  # ConvTranspose2d
    "h_s.2.bias": ((_H, "out"),),
    "h_s.4.weight": ((_H, "out"), (_H, "in")),
    "h_s.4.bias": ((_H, "out"),),
    "context_prediction.weight": ((_H, "out"), (_Y, "in")),
    "context_prediction.bias": ((_H, "out"),),
    # input = cat(h_s features (2M), context features (2M))
    "entropy_parameters.0.weight": ((_H, "out"), (_P, "in")),
    "entropy_parameters.0.bias": ((_H, "out"),),
    "entropy_parameters.2.weight": ((_H, "out"), (_H, "in")),
    "entropy_parameters.2.bias": ((_H, "out"),),
    # output = cat(scales (M), means (M))
    "entropy_parameters.4.weight": ((_P, "zero-out"), (_H, "in")),
    "entropy_parameters.4.bias": ((_P, "zero-out"),),
}
_MAPS = {_Y: _prefix, _H: _prefix, _P: _halves}
#: State-dict entries that are not copied: the coder tables (rebuilt by ``update()``) and
#: the context model's mask (it belongs to the new shape).
_REBUILT = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table", ".mask")


def _widen_tensor(old: Tensor, fresh: Tensor, spec) -> Tensor:
    """The fresh tensor with the old one copied in and the new parts set by ``spec``."""
    out = fresh.clone()
    index = []
    for dim, (kind, _) in enumerate(spec):
        index.append(_MAPS[kind](old.shape[dim], fresh.shape[dim]) if kind
                     else torch.arange(old.shape[dim]))
    for dim, (kind, role) in enumerate(spec):
        if role in ("in", "zero-out"):  # "fresh": the new parts keep the fresh init
            new = torch.ones(fresh.shape[dim], dtype=torch.bool)
            new[index[dim]] = False
            out.index_fill_(dim, new.nonzero().squeeze(1), 0.0)
    block = old.to(out.dtype)
    # out[ix0, ix1, ...] = old, one dimension at a time
    target = out
    if len(index) == 1:
        target[index[0]] = block
    else:
        rows = target[index[0]]  # a copy: write the columns, then put the rows back
        rows[:, index[1]] = block
        target[index[0]] = rows
    return out


_SKIP = object()  # a rule's answer: leave this entry out (it is set some other way)


def _check_widenable(model: nn.Module, caller: str) -> str:
    name = registry.model_name(model)
    if name not in WIDENABLE:
        raise ValueError(f"{caller} supports {', '.join(WIDENABLE)}, not {name!r}")
    return name


def _wider_model(model: nn.Module, name: str, config: dict, seed: int, spec: dict,
                 rule, caller: str) -> nn.Module:
    """A model built from ``config`` (seeded) holding ``model``'s tensors: those in ``spec``
    widened by :func:`_widen_tensor`, the others by ``rule(key, old, fresh)`` (a tensor,
    :data:`_SKIP`, or None for "copy, the shapes must agree"); coder tables rebuilt later."""
    torch.manual_seed(seed)
    wide = registry.build_model(name, **config)
    fresh = wide.state_dict()
    state = {}
    for key, value in model.state_dict().items():
        if key not in fresh or key.endswith(_REBUILT):
            continue  # coder tables are rebuilt, the mask belongs to the new shape
        if key in spec:
            state[key] = _widen_tensor(value, fresh[key], spec[key])
            continue
        out = rule(key, value, fresh[key])
        if out is _SKIP:
            continue
        if out is None:
            if value.shape != fresh[key].shape:
                raise ValueError(f"{caller}: no rule for {key} {tuple(value.shape)} -> "
                                 f"{tuple(fresh[key].shape)}")
            out = value
        state[key] = out
    wide.load_state_dict({**fresh, **state}, strict=False)
    return wide


@torch.no_grad()
def widen_latent(model: nn.Module, config: dict, M: int, seed: int = 0
                 ) -> tuple[nn.Module, dict]:
    """A copy of ``model`` with M latent channels that computes the same function.

    Args:
        model: a trained ``mbt2018`` (fixed- or variable-rate), as
            :func:`nic_lib.models.checkpoints.load_checkpoint` returns it.
        config: the checkpoint's config (``load_checkpoint(...)[1]["config"]``): the
            widened model is built from it with the new M.
        M: the new latent width, larger than the model's, even (the hyper-synthesis
            has 3M/2 channels).
        seed: seeds the random init of the new hidden units.

    Returns:
        ``(widened model, its config)``: the model in eval mode with its coder tables
        built; the config is ``config`` with the new M.

    Raises:
        ValueError: a model that cannot be widened, or M not larger than the model's.
    """
    name = _check_widenable(model, "widen_latent")
    old_M = int(model.M)
    if M <= old_M or M % 2:
        raise ValueError(f"the new latent width must be even and larger than {old_M}, got {M}")
    config = {**config, "M": int(M)}

    def gains(key, value, fresh):
        if not key.endswith("log_gain"):
            return None
        g = fresh.clone()  # (levels, M): new channels at the level's mean
        g[:, :old_M] = value
        g[:, old_M:] = value.mean(dim=1, keepdim=True)
        return g

    wide = _wider_model(model, name, config, seed, _SPEC, gains, "widen_latent")
    wide.update(force=True)
    return wide.eval(), config


# How every tensor whose shape depends on N maps (same notation as _SPEC; "fresh": the new
# parts keep the wider network's own init). ConvTranspose2d weights are (in, out, k, k).
_OUT, _IN, _NEW = (_H, "zero-out"), (_H, "fresh"), (_H, "fresh")
_N_SPEC: dict[str, tuple] = {
    "g_a.0.weight": (_OUT, (None, None)), "g_a.0.bias": (_OUT,),
    "g_a.2.weight": (_OUT, _IN), "g_a.2.bias": (_OUT,),
    "g_a.4.weight": (_OUT, _IN), "g_a.4.bias": (_OUT,),
    "g_a.6.weight": ((None, None), _IN),
    "g_s.0.weight": ((None, None), _OUT), "g_s.0.bias": (_OUT,),
    "g_s.2.weight": (_IN, _OUT), "g_s.2.bias": (_OUT,),
    "g_s.4.weight": (_IN, _OUT), "g_s.4.bias": (_OUT,),
    "g_s.6.weight": (_IN, (None, None)),
    "h_a.0.weight": (_OUT, (None, None)), "h_a.0.bias": (_OUT,),
    "h_a.2.weight": (_OUT, _IN), "h_a.2.bias": (_OUT,),
    "h_a.4.weight": (_OUT, _IN), "h_a.4.bias": (_OUT,),  # z itself
    "h_s.0.weight": ((_H, "in"), (None, None)),  # reads z: new inputs 0
    **{f"{t}.{i}.{p}": (_NEW,) * (1 if p == "beta" else 2)  # GDN layers
       for t in ("g_a", "g_s") for i in (1, 3, 5) for p in ("beta", "gamma")},
}


def _is_density(key: str) -> bool:
    return key.startswith("entropy_bottleneck.")


@torch.no_grad()
def _recentred_densities(old: EntropyBottleneck, new: EntropyBottleneck) -> None:
    """Copy ``old``'s densities into ``new``'s leading channels; every new channel gets
    the most peaked old density, moved so that its median is 0."""
    n = old.channels
    medians = old.quantiles[:, :, 1:2]  # (C, 1, 1)
    peak = old._likelihood(medians)[0].reshape(n)
    donor = int(torch.argmax(peak))
    m = float(medians[donor].item())
    for name, p_new in new.named_parameters():
        p_old = dict(old.named_parameters())[name]
        p_new[:n] = p_old
        value = p_old[donor].clone()
        if name == "quantiles":
            value -= m
        elif name == "biases.0":  # logits₀ = softplus(H₀)(x + m) + b₀
            value += torch.nn.functional.softplus(old.matrices[0][donor]) * m
        p_new[n:] = value


@torch.no_grad()
def widen_hidden(model: nn.Module, config: dict, N: int, seed: int = 0
                 ) -> tuple[nn.Module, dict]:
    """A copy of ``model`` with N hidden channels (transforms and z) that computes the
    same function (the rules are in the module docstring).

    Args:
        model: a trained ``mbt2018`` (fixed- or variable-rate), as
            :func:`nic_lib.models.checkpoints.load_checkpoint` returns it.
        config: the checkpoint's config: the widened model is built from it with the new N.
        N: the new hidden width, larger than the model's.
        seed: seeds the fresh init of the new input columns.

    Returns:
        ``(widened model, its config)``: in eval mode, coder tables built.

    Raises:
        ValueError: a model that cannot be widened, or N not larger than the model's.
    """
    name = _check_widenable(model, "widen_hidden")
    old_N = int(model.N)
    if N <= old_N:
        raise ValueError(f"the new hidden width must be larger than {old_N}, got {N}")
    config = {**config, "N": int(N)}

    def densities(key, value, fresh):  # z's densities: below, module by module
        return _SKIP if _is_density(key) and value.shape != fresh.shape else None

    wide = _wider_model(model, name, config, seed, _N_SPEC, densities, "widen_hidden")
    olds = {k: m for k, m in model.named_modules() if isinstance(m, EntropyBottleneck)}
    for key, module in wide.named_modules():
        if isinstance(module, EntropyBottleneck) and module.channels != olds[key].channels:
            _recentred_densities(olds[key], module)
    wide.update(force=True)
    return wide.eval(), config


@torch.no_grad()
def add_levels(model: nn.Module, config: dict, qualities) -> tuple[nn.Module, dict]:
    """A copy of a variable-rate model with more rate levels; the trained ones unchanged.

    The top of the rate range is where a wider latent pays, so a model trained on q1-q6
    can go on training with q7, q8 added instead of starting over. Every trained level is
    copied as it is (same x̂ and bits at those levels). A new level l with λ_l starts from
    the gains of the nearest trained level n, moved along the per-channel log-gain step
    that training learned between n and its neighbour m:

        log γ_l = log γ_n + (log γ_n − log γ_m) · log(λ_l / λ_n) / log(λ_n / λ_m)

    (the same for the decoder-side γ'), and a per-level hyperprior density (if the model
    has them) starts as a copy of level n's.

    Args:
        model: a trained variable-rate model (``load_checkpoint(...)[0]``).
        config: its config (``load_checkpoint(...)[1]["config"]``).
        qualities: the qualities of the new model, a superset of the trained ones' (by λ
            of the MSE quality table, :data:`nic_lib.models.registry.LAMBDA_MSE`).

    Returns:
        ``(model with the levels, its config)``, in eval mode with coder tables built.

    Raises:
        ValueError: not a variable-rate model, a trained level missing from
            ``qualities``, an unknown quality, or a model with a single level.
    """
    old = variable_rate.rate_levels(model)
    if len(old) < 2:
        raise ValueError("add_levels needs a variable-rate model with at least two levels "
                         "(train one with --qualities)")
    if config.get("metric", "mse") != "mse":
        raise ValueError(f"add_levels uses the MSE λ table; the model's metric is "
                         f"{config.get('metric')!r}")
    bad = [q for q in qualities if q not in registry.LAMBDA_MSE]
    if bad:
        raise ValueError(f"unknown qualities {bad}; known: {sorted(registry.LAMBDA_MSE)}")
    lmbdas = sorted({registry.LAMBDA_MSE[q] for q in qualities})
    missing = [lm for lm in old if not any(math.isclose(lm, v) for v in lmbdas)]
    if missing:
        raise ValueError(f"the new levels must keep every trained λ; missing {missing} "
                         f"(the model's levels are {old})")
    config = {**config, "lmbdas": lmbdas,
              "qualities": sorted(q for q in registry.LAMBDA_MSE
                                  if registry.LAMBDA_MSE[q] in lmbdas),
              "reference_lmbda": float(model.reference_lmbda)}
    name = registry.model_name(model)
    new = registry.build_model(name, **config)
    fresh = new.state_dict()
    source = model.state_dict()
    log_old = [math.log(v) for v in old]

    def nearest(lm: float) -> tuple[int, int]:
        """(index of the trained level nearest λ on a log scale, its inward neighbour)."""
        n = min(range(len(old)), key=lambda i: abs(math.log(lm) - log_old[i]))
        m = n - 1 if n == len(old) - 1 or (n > 0 and lm > old[n]) else n + 1
        return n, m

    state = {}
    for key, value in fresh.items():
        if key.endswith(_REBUILT):
            continue
        if key.endswith("log_gain"):
            rows = []
            for lm in lmbdas:
                hit = [i for i, v in enumerate(old) if math.isclose(v, lm)]
                if hit:
                    rows.append(source[key][hit[0]])
                    continue
                n, m = nearest(lm)
                step = (source[key][n] - source[key][m]) / (log_old[n] - log_old[m])
                rows.append(source[key][n] + step * (math.log(lm) - log_old[n]))
            state[key] = torch.stack(rows)
        elif ".bottlenecks." in key:  # per-level hyperprior densities
            head, level, tail = key.split(".bottlenecks.")[0], *key.split(".bottlenecks.")[1].split(".", 1)
            lm = lmbdas[int(level)]
            hit = [i for i, v in enumerate(old) if math.isclose(v, lm)]
            i = hit[0] if hit else nearest(lm)[0]
            state[key] = source[f"{head}.bottlenecks.{i}.{tail}"]
        elif key in source and source[key].shape == value.shape:
            state[key] = source[key]
        else:
            raise ValueError(f"add_levels: no rule for {key} {tuple(value.shape)}")
    new.load_state_dict({**fresh, **state}, strict=False)
    new.update(force=True)
    return new.eval(), config


def select_levels(model: nn.Module, config: dict, qualities) -> tuple[nn.Module, dict]:
    """A copy of a variable-rate model that keeps only some of its rate levels, unchanged.

    The shared transforms of a variable-rate model serve every rate; at the top of the
    range they bind (notebook 01's ceiling: the unquantized autoencoder). A model made of
    the top levels alone, fine-tuned on them, lets its transforms specialise there (the
    "fixed-rate top levels" of issue 25 when ``qualities`` is one level). The copy codes
    each kept level exactly as the source does: its gain rows, its per-level hyperprior
    density and its scale-calibration factor are copied, every shared tensor as it is.

    Args:
        model: a trained variable-rate model (``load_checkpoint(...)[0]``).
        config: its config (``load_checkpoint(...)[1]["config"]``).
        qualities: the qualities to keep (by λ of the MSE quality table), a subset of the
            model's levels.

    Returns:
        ``(model with those levels, its config)``, in eval mode with coder tables built.

    Raises:
        ValueError: not a variable-rate model, or a quality it was not trained at.
    """
    old = variable_rate.rate_levels(model)
    if not old:
        raise ValueError("select_levels needs a variable-rate model (train one with --qualities)")
    keep = []
    for q in qualities:
        lm = registry.LAMBDA_MSE.get(q)
        hit = [i for i, v in enumerate(old) if lm is not None and math.isclose(v, lm)]
        if not hit:
            raise ValueError(f"quality {q} (λ={lm}) is not a level of the model "
                             f"(its λ: {old})")
        keep.append(hit[0])
    keep = sorted(set(keep))
    lmbdas = [old[i] for i in keep]
    config = {**config, "lmbdas": lmbdas,
              "qualities": sorted(q for q in registry.LAMBDA_MSE
                                  if registry.LAMBDA_MSE[q] in lmbdas),
              "reference_lmbda": float(model.reference_lmbda)}
    new = registry.build_model(registry.model_name(model), **config)
    fresh, source = new.state_dict(), model.state_dict()
    rows = torch.tensor(keep)
    state = {}
    for key, value in fresh.items():
        if key.endswith(_REBUILT):
            continue
        if ".bottlenecks." in key:  # per-level hyperprior densities: the kept levels'
            head, rest = key.split(".bottlenecks.")
            level, tail = rest.split(".", 1)
            state[key] = source[f"{head}.bottlenecks.{keep[int(level)]}.{tail}"]
        elif key in source and source[key].shape == value.shape:
            state[key] = source[key]
        elif key in source and source[key].shape[:1] == (len(old),):  # per level: gains, calibration
            state[key] = source[key][rows]
        else:
            raise ValueError(f"select_levels: no rule for {key} {tuple(value.shape)}")
    new.load_state_dict({**fresh, **state}, strict=False)
    factors = calibration.calibration_factors(model)  # the kept levels' σ factors
    if factors is not None:
        calibration.apply_calibration(new, [factors[i] for i in keep])
    new.update(force=True)
    return new.eval(), config
