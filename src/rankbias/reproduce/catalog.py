"""The papers' figures as data: one :class:`Preset` per figure (ids: docs/reproduce.md, "The catalog").

Each preset holds the paper-scale config (rankbias config keys with a ``sweep`` block, the
hyperparameters the papers give), a ``quick`` config (minutes on a CPU: bundled ``digits`` or
``synthetic`` data, a small model of the same family, fewer epochs, milestones scaled with the
epochs), the figure family of :mod:`rankbias.plots` that draws it, and its claim as data
(:class:`Claim`, checked by :mod:`rankbias.reproduce.claims`). Where a paper is ambiguous the
preset's ``readings`` say which reading the config takes and ``alternatives`` hold the
overrides of the other reading (``reproduce(..., reading="code")``). See docs/reproduce.md.

Papers: GSGP = Galanti et al., "SGD and Weight Decay Secretly Minimize the Rank of Your Neural
Network" (figure numbers of seed 003); GP = Galanti & Poggio, "SGD Noise and Implicit Low-Rank
Bias in Deep Neural Networks"; CHEN = "Towards Better Generalization: Weight Decay Induces
Low-rank Bias for Neural Networks".
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field

from ..conventions import SCALES
from ..errors import ConfigError

B, MU, WD = "train.batch_size", "optimizer.lr", "optimizer.weight_decay"


@dataclass(frozen=True)
class Claim:
    """What a figure shows, as a check of :mod:`rankbias.reproduce.claims`.

    ``check``: ``trend`` (GSGP Prediction 4.1: the blocked trend test of ``knob``; ``knob=None``:
    every knob that varies), ``norm_ratio`` (‖W_{T−1}‖/‖W_T‖ within ``tolerance`` of 1), ``theorem_3_3``
    (GSGP Thm 3.3: measured ε-rank ≤ bound), ``sgd_noise`` (GP Props 1–2), ``bottleneck``
    (GP Fig. 6), ``balanced`` (GP Fig. 7), ``stable_rank`` (CHEN: stable rank falls as λ grows).
    ``min_effect``: the smallest effect (in % of the full rank) a trend or a layer pattern must
    clear with its whole interval; ``min_share``: the share of matrices (``norm_ratio``) or runs
    (``sgd_noise``) that must agree. The tests: docs/reproduce.md, :mod:`.claims`.
    """

    statement: str
    check: str
    knob: str | None = None
    tolerance: float = 0.05
    min_share: float = 0.9
    min_effect: float = 2.0


@dataclass(frozen=True)
class Preset:
    id: str
    paper: str  # "GSGP Fig. 7"
    model: str  # as the paper names it
    data: str
    varies: str
    family: str  # rb.plots.FIGURES key
    roles: dict  # family arguments: vary / panel / x / y
    claim: Claim
    paper_config: dict
    quick_config: dict
    readings: dict = field(default_factory=dict)  # ambiguity -> the reading taken
    alternatives: dict = field(default_factory=dict)  # reading name -> overrides (dotted keys)

    def config(self, scale: str = "quick") -> dict:
        if scale not in SCALES:
            raise ConfigError("scale", f"must be one of {', '.join(SCALES)}, got {scale!r}")
        return copy.deepcopy(self.quick_config if scale == "quick" else self.paper_config)


# -- building blocks ---------------------------------------------------------------------------
# GSGP App. B: lr × 0.1 at epochs 60, 100, 200 of 500 (the authors' code: × 0.2)
GSGP_SCHEDULE = {"kind": "multistep", "milestones": [60, 100, 200], "factor": 0.1}
VIT_SCHEDULE = {"kind": "multistep", "milestones": [60, 100], "factor": 0.2}
CIFAR = {"name": "cifar10"}
QUICK_DATA = {"name": "digits", "train_size": 512, "test_size": 256}
QUICK_EPOCHS = 20
# 20 epochs leave most normalized singular values between 1e-3 and 1e-2: the quick scale counts
# the rank at ε = 1e-2 (every singular value is stored: rb.load(path, eps=1e-3) gives the paper's)
QUICK_EPS = 1e-2
# Convolutional and attention networks need many more steps: at the papers' μλ their small
# matrices keep the full rank of their initialization through 20 epochs on 512 digits, and the
# scaled milestones (2/4/8 of 20) stop them early. Their quick scale trains 60 epochs (VGG-16:
# 100) at a constant lr with μλ of 2e-3 to 8e-3, some 8 to 30 decay times (μλ·steps) at B = 8; the values
# come from a calibration grid (bench/calibrate_quick.py, docs/reproduce.md).
DEEP_QUICK = {"epochs": 60, "schedule": {"kind": "constant"}}
# Fully connected presets: GSGP Thm 3.3 assumes the norm equilibrium ‖W_{T−1}‖/‖W_T‖ → 1. With the
# milestones scaled (2/4/8 of 20) the last epochs run at 1/1000 of the lr and every run still
# shrinks at the pure weight-decay rate (theory.drift: drift ≈ 1); at a constant lr, 100 epochs,
# runs with Σμλ'/(1−β) ≥ 0.6 over the last 25 epochs reach it (|drift| < 0.15) and B = 128 (4 steps
# an epoch on 512 digits) does not. Calibrated on seeds 0–1 (docs/reproduce.md): B ∈ {8, 16, 32},
# λ ≥ 2e-2 without momentum.
GP_SMALL_LR = {
    "quick μ": "{0.01, 0.03} with momentum 0.9: at μ = 0.05–0.1 the residual and plain nets diverged or stayed at "
    "chance at B ≤ 16 on the calibration seeds; λ = 2e-2 so that B = 32 converges"
}
MLP_QUICK = {"epochs": 100, "schedule": {"kind": "constant"}, "record__every": 5}
MLP_READING = {
    "quick scale": "100 epochs at a constant lr, records every 5, B ≤ 32, λ ≥ 2e-2 without momentum: every run with "
    "λ > 0 must reach the norm equilibrium (docs/reproduce.md, calibration)"
}
PLAIN_MLP_READING = {
    "quick scale": "60 epochs at a constant lr: without batch norm or momentum, 20 epochs with the scaled "
    "milestones (2/4/8) leave mlp-3-128 at full rank (gsgp000-fig11, 12: 0 % agree)"
}
DEEP_READING = {
    "quick scale": "60 epochs (VGG-16: 100) at a constant lr, μ and λ larger than the paper's "
    "(calibrated: docs/reproduce.md)"
}
# the small model of the same family that the quick scale trains, on 8×8 digits
SMALL = {
    "resnet18": {"name": "resnet18", "width": 8},
    "vgg16": {"name": "vgg16", "width": 4},
    "vit": {"name": "vit", "width": 32, "mlp_dim": 64},
    "mlp-bn-10-100": "mlp-bn-4-128",
    "res-bn-5-500": "res-bn-2-128",
    "mlp-5-2000": "mlp-3-128",
    "mlp-5-500": "mlp-3-128",
    "mlp-bn-2-10000": "mlp-bn-2-512",
}
GSGP_READINGS = {
    "momentum": "0 (the authors' code and logged runs; the text states 0.9 only where given)",
    "eps": "1e-3 (GSGP)",
    "schedule factor": "0.1 (GSGP text; alternative 'code': 0.2 as in the released code)",
}
GSGP_ALTERNATIVES = {"code": {"schedule.factor": 0.2}}
GP_READINGS = {
    "momentum": "0.9 (GP text; alternative 'code': 0, as in the authors' logged runs)",
    "eps": "1e-4 (GP text; alternative 'code': 1e-3)",
}
GP_ALTERNATIVES = {"code": {"optimizer.momentum": 0.0, "record.eps": 1e-3}}


def _config(
    model, data, *, lr, wd, batch, epochs, sweep, momentum=0.0, schedule=None, eps=1e-3, every=10, loss="cross_entropy",
    **record,
):
    return {
        "model": model, "data": dict(data), "loss": loss,
        "optimizer": {"lr": lr, "momentum": momentum, "weight_decay": wd},
        "schedule": dict(schedule or {"kind": "constant"}),
        "train": {"batch_size": batch, "epochs": epochs},
        "record": {"eps": eps, "every": every, **record},
        "sweep": sweep,
    }  # fmt: skip


def _quick(paper: dict, sweep: dict, *, model=None, data=None, epochs=QUICK_EPOCHS, schedule=None, **changes) -> dict:
    """The quick scale of a paper config: small model of the same family, digits, fewer epochs.

    Milestones scale with the epochs (60/100/200 of 500 → 2/4/8 of 20) unless ``schedule``
    replaces the paper's; records every epoch; the rank is counted at :data:`QUICK_EPS`.
    """
    cfg = copy.deepcopy(paper)
    if schedule is not None:
        cfg["schedule"] = dict(schedule)
    name = cfg["model"] if isinstance(cfg["model"], str) else cfg["model"]["name"]
    cfg["model"] = model or SMALL.get(name, name)
    cfg["data"] = dict(data or QUICK_DATA)
    ratio = epochs / cfg["train"]["epochs"]
    if cfg["schedule"]["kind"] == "multistep":
        cfg["schedule"]["milestones"] = sorted({max(1, round(m * ratio)) for m in cfg["schedule"]["milestones"]})
    if cfg["schedule"]["kind"] == "step":
        cfg["schedule"]["every"] = max(1, round(cfg["schedule"]["every"] * ratio))
    cfg["train"]["epochs"] = epochs
    cfg["record"]["every"] = 1
    cfg["record"]["eps"] = QUICK_EPS
    cfg["sweep"] = sweep
    for key, value in changes.items():
        section, _, leaf = key.partition("__")
        cfg[section][leaf] = value
    return cfg


def _gsgp(id, fig, model, varies, family, roles, claim, *, lr, wd, batch, sweep, quick_sweep, epochs=500, data=CIFAR,
          schedule=GSGP_SCHEDULE, momentum=0.0, eps=1e-3, quick=None, readings=None, seed000=False, **record) -> Preset:
    paper = _config(model, data, lr=lr, wd=wd, batch=batch, epochs=epochs,
                    sweep=sweep, momentum=momentum, schedule=schedule, eps=eps, **record)
    quick_cfg = _quick(paper, quick_sweep, **(quick or {}))
    label = f"GSGP (seed 000) Fig. {fig}" if seed000 else f"GSGP Fig. {fig}"
    return Preset(id, label, model, data["name"], varies, family, roles, claim, paper, quick_cfg,
                  {**GSGP_READINGS, **(readings or {})}, GSGP_ALTERNATIVES)


def _gp(id, fig, model, varies, family, roles, claim, *, lr, wd, batch, sweep, quick_sweep, epochs=500, data=CIFAR,
        schedule=GSGP_SCHEDULE, momentum=0.9, quick=None, readings=None, loss="cross_entropy") -> Preset:
    paper = _config(model, data, lr=lr, wd=wd, batch=batch, epochs=epochs, sweep=sweep, momentum=momentum,
                    schedule=schedule, eps=1e-4, loss=loss)
    quick_cfg = _quick(paper, quick_sweep, **(quick or {}))
    return Preset(id, f"GP Fig. {fig}", model, data["name"], varies, family, roles, claim, paper, quick_cfg,
                  {**GP_READINGS, **(readings or {})}, GP_ALTERNATIVES)


def trend(knob, statement) -> Claim:
    return Claim(statement, "trend", knob)


LOWER_B = trend(B, "the average rank decreases as B decreases (weight decay > 0)")
HIGHER_MU = trend(MU, "the average rank decreases as μ increases")
HIGHER_WD = trend(WD, "the average rank decreases as λ increases; with λ = 0 B barely matters")
RANK_EPOCH = "rank-vs-epoch"
LINES_B = {"vary": B, "panel": MU}
LINES_WD = {"vary": WD, "panel": B}
LINES_MU = {"vary": MU, "panel": B}
# quick batch sizes of the convolution and attention presets (B = 128: 4 steps an epoch, it does not converge)
QB = [8, 32]
MLP_QB = [8, 16, 32]  # of the fully connected ones (B = 128 does not converge on 512 digits)
QWD = [0.0, 5e-3, 5e-2]  # quick weight decays
MLP_QWD = [0.0, 2e-2, 5e-2]

PRESETS_LIST = [
    _gsgp("gsgp-fig1", 1, "resnet18",
          "heatmaps of the final average rank over (μ, λ) at B = 8 and 16 ((c), (d): slices of the same grid)",
          "heatmap", {"x": MU, "y": WD, "panel": B},
          trend(None, "the final rank is lower at smaller B, larger μ, larger λ"),
          lr=0.5, wd=6e-3, batch=8, sweep={B: [8, 16], MU: [0.05, 0.1, 0.5, 1.0], WD: [5e-4, 1e-3, 3e-3, 6e-3]},
          quick_sweep={B: [8, 32], MU: [0.1, 0.4], WD: [5e-3, 2e-2]}, quick=DEEP_QUICK,
          readings={"grid values": "not given with the figure; chosen: μ ∈ {0.05, 0.1, 0.5, 1}, λ ∈ {5e-4 … 6e-3} "
                                   "chosen to include (c) μ=0.5, (d) λ=6e-3",
                    **DEEP_READING}),
    _gsgp("gsgp-fig2", 2, "resnet18", "μ", RANK_EPOCH, LINES_MU, HIGHER_MU, lr=0.1, wd=5e-4, batch=8,
          sweep={B: [4, 8, 16], MU: [0.01, 0.05, 0.1, 0.5, 1.0]}, quick_sweep={B: [8, 32], MU: [0.1, 0.2, 0.4]},
          quick={**DEEP_QUICK, "optimizer__weight_decay": 2e-2},
          readings={"μ values": "not given with the figure; chosen: {0.01, 0.05, 0.1, 0.5, 1}", **DEEP_READING}),
    _gsgp("gsgp-fig3", 3, "resnet18", "λ (including 0)", RANK_EPOCH, LINES_WD, HIGHER_WD, lr=1.5, wd=5e-4, batch=8,
          sweep={B: [8, 16, 32], WD: [0.0, 1e-4, 5e-4, 1e-3, 5e-3]}, quick_sweep={B: [8, 32], WD: [0.0, 2e-2, 5e-2]},
          quick={**DEEP_QUICK, "optimizer__lr": 0.1},
          readings={"λ values": "not given with the figure; chosen: {0, 1e-4, 5e-4, 1e-3, 5e-3}", **DEEP_READING}),
    _gsgp("gsgp-fig4", 4, "resnet18", "B, panels (μ, λ) zipped", RANK_EPOCH, LINES_B, LOWER_B,
          lr=1e-3, wd=6e-3, batch=8,
          sweep={B: [8, 16, 32, 64, 128], "zip": {MU: [1e-3, 5e-3, 1e-2], WD: [6e-3, 6e-3, 4e-4]}},
          quick_sweep={B: QB, "zip": {MU: [0.1, 0.4], WD: [5e-2, 2e-2]}}, quick=DEEP_QUICK,
          readings={"eps": "1e-3 (seed 003; seed 000: 1e-2 — rank at any ε is recomputed from the stored spectra)",
                    **DEEP_READING}),
    _gsgp("gsgp-fig5", 5, "mlp-bn-10-100", "λ", RANK_EPOCH, LINES_WD, HIGHER_WD,
          lr=0.1, wd=5e-4, batch=32, momentum=0.9,
          sweep={B: [32, 64, 128], WD: [0.0, 1e-4, 5e-4, 1e-3, 5e-3]}, quick_sweep={B: [8, 32], WD: MLP_QWD},
          quick=MLP_QUICK,
          readings={"momentum": "0.9 (stated for this figure)", **MLP_READING}),
    _gsgp("gsgp-fig6", 6, "mlp-bn-10-100", "λ", RANK_EPOCH, LINES_WD, HIGHER_WD, lr=0.1, wd=5e-4, batch=4,
          sweep={B: [4, 8, 16], WD: [0.0, 1e-4, 5e-4, 1e-3, 5e-3]}, quick_sweep={B: [4, 16], WD: MLP_QWD},
          quick=MLP_QUICK,
          readings=MLP_READING),
    _gsgp("gsgp-fig7", 7, "mlp-bn-10-100", "B", RANK_EPOCH, LINES_B, LOWER_B, lr=0.1, wd=5e-4, batch=32,
          sweep={MU: [0.03, 0.1, 0.3], B: [4, 8, 16, 32, 64, 128]}, quick_sweep={MU: [0.1, 0.3], B: MLP_QB},
          quick={**MLP_QUICK, "optimizer__weight_decay": 2e-2}, readings=MLP_READING),
    _gsgp("gsgp-fig8", 8, "res-bn-5-500", "B", RANK_EPOCH, LINES_B, LOWER_B, lr=0.05, wd=5e-4, batch=32,
          sweep={MU: [0.025, 0.05, 0.1], B: [4, 8, 16, 32, 64, 128]}, quick_sweep={MU: [0.1, 0.3], B: MLP_QB},
          quick={**MLP_QUICK, "optimizer__weight_decay": 2e-2}, readings=MLP_READING),
    _gsgp("gsgp-fig9", 9, "vit", "B", RANK_EPOCH, LINES_B, LOWER_B, lr=0.008, wd=5e-4, batch=32, epochs=200,
          schedule=VIT_SCHEDULE, sweep={MU: [0.004, 0.008, 0.04], B: [16, 32, 64, 128]},
          quick_sweep={MU: [0.1, 0.4], B: QB}, quick={**DEEP_QUICK, "optimizer__weight_decay": 5e-3},
          readings=DEEP_READING),
    _gsgp("gsgp-fig10", 10, "vit", "λ", RANK_EPOCH, LINES_WD, HIGHER_WD, lr=0.04, wd=5e-4, batch=32, epochs=200,
          schedule=VIT_SCHEDULE, sweep={B: [32, 64, 128], WD: [0.0, 1e-4, 5e-4, 1e-3, 5e-3]},
          quick_sweep={B: [8, 32], WD: [0.0, 5e-3, 2e-2]}, quick={**DEEP_QUICK, "optimizer__lr": 0.1},
          readings=DEEP_READING),
    _gsgp("gsgp-fig11", 11, "resnet18", "B", RANK_EPOCH, LINES_B, LOWER_B, lr=0.5, wd=5e-4, batch=16,
          sweep={MU: [0.5, 1.0, 2.0], B: [4, 8, 16, 32, 64, 128]}, quick_sweep={MU: [0.1, 0.4], B: QB},
          quick={**DEEP_QUICK, "optimizer__weight_decay": 2e-2}, readings=DEEP_READING),
    _gsgp("gsgp-fig12", 12, "vgg16", "B, panels (μ, λ) zipped", RANK_EPOCH, LINES_B, LOWER_B,
          lr=1e-3, wd=6e-3, batch=8,
          sweep={B: [8, 16, 32, 64, 128], "zip": {MU: [1e-3, 5e-3, 1e-2], WD: [6e-3, 5e-4, 4e-4]}},
          quick_sweep={B: QB, "zip": {MU: [0.1, 0.4], WD: [5e-2, 5e-3]}},
          quick={**DEEP_QUICK, "epochs": 100, "data": {**QUICK_DATA, "resize": 32}},
          readings={"eps": "1e-3 (seed 003; seed 000: 4e-2 — recompute with --eps / rb.load(eps=))", **DEEP_READING}),
    _gsgp("gsgp-fig13", 13, "resnet18", "μ on three data sets", RANK_EPOCH, {"vary": MU, "panel": "data.name"},
          HIGHER_MU,
          lr=0.1, wd=5e-4, batch=16, data={"name": "mnist", "pad": 2},
          sweep={"data.name": ["mnist", "fashion-mnist", "svhn"], MU: [0.01, 0.05, 0.1, 0.5]},
          quick_sweep={"data.name": ["digits"], MU: [0.1, 0.2, 0.4]},
          quick={**DEEP_QUICK, "data": QUICK_DATA, "optimizer__weight_decay": 2e-2},
          readings={"padding": "every data set padded by 2 (MNIST 28→32 as the authors' code; SVHN 32→36)",
                    "μ values": "not given with the figure; chosen: {0.01, 0.05, 0.1, 0.5}",
                    "quick data": "digits only (MNIST-like); Fashion-MNIST and SVHN are not bundled", **DEEP_READING}),
    _gsgp("gsgp-fig14", 14, "resnet18", "‖W_{T−1}‖/‖W_T‖ per layer over training", "norm-ratio", {"panel": MU},
          Claim("the per-layer norm ratio ‖W_{T−1}‖/‖W_T‖ tends to 1 (GSGP Thm 3.3's assumption)", "norm_ratio"),
          lr=0.1, wd=5e-4, batch=8, sweep={MU: [0.01, 0.1, 0.5, 1.0]}, quick_sweep={MU: [0.1, 0.4]}, step_norms=2,
          quick={**DEEP_QUICK, "optimizer__weight_decay": 2e-2, "record__step_norms": 0},
          readings={"ratio": "the norm drift over the last quarter of training against weight decay alone "
                             "(theory.drift); the paper scale also records one-step ratios (record.step_norms: 2)",
                    "quick scale": "the ResNet-18 runs of gsgp-fig2 at B = 8 (60 epochs at a constant lr, λ = 2e-2)"}),
    _gsgp("gsgp-fig15", 15, "vgg16", "same ratio, panels B", "norm-ratio", {"panel": B},
          Claim("the per-layer norm ratio tends to 1", "norm_ratio"), lr=5e-3, wd=5e-4, batch=8,
          sweep={B: [8, 16, 32, 64]}, quick_sweep={B: [8, 32]}, step_norms=2,
          quick={**DEEP_QUICK, "epochs": 100, "data": {**QUICK_DATA, "resize": 32}, "optimizer__lr": 0.1,
                 "optimizer__weight_decay": 5e-2, "record__step_norms": 0},
          readings={"quick scale": "the VGG-16 runs of gsgp000-fig15 at λ = 5e-2 "
                                   "(100 epochs at a constant lr, μ = 0.1)"}),
    _gsgp("gsgp-fig16", 16, "resnet18", "singular values of each layer vs B", "layer-spectra", {"vary": B}, LOWER_B,
          lr=5e-3, wd=6e-3, batch=8, sweep={B: [8, 16, 32, 64, 128]}, quick_sweep={B: QB},
          quick={**DEEP_QUICK, "optimizer__lr": 0.4, "optimizer__weight_decay": 2e-2},
          readings={"claim": "the large singular values shrink as B shrinks, read as: fewer above ε, "
                             "the rank falls with B",
                    **DEEP_READING}),
    _gsgp("gsgp-fig17", 17, "vgg16", "singular values of the 12 layers vs B", "layer-spectra", {"vary": B}, LOWER_B,
          lr=1e-2, wd=4e-4, batch=8, sweep={B: [8, 16, 32, 64, 128]}, quick_sweep={B: QB},
          quick={**DEEP_QUICK, "epochs": 100, "data": {**QUICK_DATA, "resize": 32}, "optimizer__lr": 0.1,
                 "optimizer__weight_decay": 5e-2},
          readings=DEEP_READING),
    _gsgp("gsgp-fig18", 18, "mlp-bn-2-10000", "Thm 3.3's bound m_l·B·log(2/ε)/(2μλ) vs the measured rank, over ε",
          "rank-vs-eps", {},
          Claim("the measured ε-rank is below Thm 3.3's bound (non-trivial for ε ≥ 0.3)", "theorem_3_3"),
          lr=0.1, wd=8e-3, batch=6, sweep={}, quick_sweep={}, step_norms=2,
          quick={**MLP_QUICK, "optimizer__lr": 0.4, "optimizer__weight_decay": 5e-2},
          readings={"quick scale": "μ = 0.4, λ = 5e-2, 100 epochs at a constant lr: the bound m_l·B·log(2/ε)/(2μλ) is "
                                   "below the width 512 only when μλ' > 6·log(2/ε)/512 (0.016 at ε = 0.5)"}),
    # GSGP's earlier version (seed 000), App. B: the experiments seed 003 dropped
    _gsgp("gsgp000-fig11", 11, "mlp-5-500", "B", RANK_EPOCH, LINES_B, LOWER_B, lr=0.1, wd=5e-4, batch=32, seed000=True,
          sweep={MU: [0.025, 0.1], B: [4, 8, 16, 32, 64, 128]}, quick_sweep={MU: [0.1, 0.3], B: MLP_QB},
          quick={**MLP_QUICK, "optimizer__weight_decay": 2e-2},
          readings={"μ values": "not given with the figure; chosen: {0.025, 0.1}", **MLP_READING}),
    _gsgp("gsgp000-fig12", 12, "mlp-5-500", "λ", RANK_EPOCH, LINES_WD, HIGHER_WD, lr=0.025, wd=5e-4, batch=32,
          seed000=True,
          sweep={B: [8, 32, 128], WD: [0.0, 1e-4, 5e-4, 1e-3, 5e-3]}, quick_sweep={B: [8, 32], WD: MLP_QWD},
          quick={**MLP_QUICK, "optimizer__lr": 0.1},
          readings={"B and λ values": "not given with the figure; chosen: B ∈ {8, 32, 128}, "
                                      "λ ∈ {0, 1e-4, 5e-4, 1e-3, 5e-3}",
                    **MLP_READING}),
    _gsgp("gsgp000-fig15", 15, "vgg16", "λ", RANK_EPOCH, LINES_WD, HIGHER_WD, lr=0.1, wd=5e-4, batch=8, eps=1e-2,
          seed000=True,
          sweep={B: [8, 32], WD: [0.0, 1e-4, 5e-4, 1e-3, 5e-3]}, quick_sweep={B: [8, 32], WD: [0.0, 2e-2, 5e-2]},
          quick={**DEEP_QUICK, "epochs": 100, "data": {**QUICK_DATA, "resize": 32}, "optimizer__lr": 0.1},
          readings={"eps": "1e-2 (stated)",
                    "B and λ values": "not given with the figure; chosen: B ∈ {8, 32}, λ ∈ {0, 1e-4, 5e-4, 1e-3, 5e-3}",
                    **DEEP_READING}),
    _gsgp("gsgp000-fig16", 16, "vgg16", "μ", RANK_EPOCH, LINES_MU, HIGHER_MU, lr=0.1, wd=5e-4, batch=8, seed000=True,
          sweep={B: [8, 32], MU: [0.01, 0.05, 0.1, 0.5]}, quick_sweep={B: [8, 32], MU: [0.025, 0.05, 0.1]},
          quick={**DEEP_QUICK, "epochs": 100, "data": {**QUICK_DATA, "resize": 32}, "optimizer__weight_decay": 5e-2},
          readings={"λ": "5e-4: the caption's 'µ = 5e−4' read as λ (μ is what varies)",
                    "B and μ values": "not given with the figure; chosen: B ∈ {8, 32}, μ ∈ {0.01, 0.05, 0.1, 0.5}",
                    **DEEP_READING}),
    _gsgp("gsgp000-fig17", 17, "vit", "λ", RANK_EPOCH, LINES_WD, HIGHER_WD, lr=0.04, wd=5e-4, batch=32, epochs=200,
          eps=1e-2,
          schedule=VIT_SCHEDULE, seed000=True, sweep={B: [32, 64, 128], WD: [0.0, 1e-4, 5e-4, 1e-3, 5e-3]},
          quick_sweep={B: [8, 32], WD: [0.0, 5e-3, 2e-2]}, quick={**DEEP_QUICK, "optimizer__lr": 0.1},
          readings={"eps": "1e-2 (stated; seed 003's Fig. 10 is the same experiment at 1e-3)",
                    "B and λ values": "those of seed 003's Fig. 10", **DEEP_READING}),
    _gp("gp-fig1", 1, "mlp-5-2000", "λ; data MNIST / CIFAR-10; cross-entropy / squared loss", "convergence",
        {"vary": WD, "panel": "data.name"},
        Claim("with λ > 0 the weights collapse or d(W_{t+1}, W_t) stays away from 0 (SGD noise)", "sgd_noise",
              min_share=1.0),
        lr=0.1, wd=1e-4, batch=128, epochs=2000, momentum=0.0, schedule={"kind": "constant"},
        sweep={"data.name": ["mnist", "cifar10"], "loss": ["cross_entropy", "mse_onehot"],
               WD: [0.0, 1e-6, 1e-5, 1e-4, 1e-3]},
        quick_sweep={"loss": ["cross_entropy", "mse_onehot"], WD: [0.0, 1e-2, 1e-1]},
        quick={"data": QUICK_DATA, "epochs": 200, "record__every": 10},
        readings={"momentum": "0 (stated for this figure)",
                  "quick scale": "200 epochs (800 steps at B = 128: the runs without λ must come near convergence), "
                                 "λ ∈ {0, 1e-2, 1e-1} (λ ≤ 1e-4 cannot act in 800 steps: μλ·steps < 0.01)"}),
    _gp("gp-fig2", 2, "mlp-bn-10-100", "B", RANK_EPOCH, LINES_B, LOWER_B, lr=0.1, wd=5e-4, batch=32,
        sweep={MU: [0.001, 0.01, 0.1], B: [4, 8, 16, 32, 64, 128]}, quick_sweep={MU: [0.03, 0.1], B: MLP_QB},
        quick={**MLP_QUICK, "optimizer__weight_decay": 5e-3}, readings=MLP_READING),
    _gp("gp-fig3", 3, "mlp-bn-10-100", "λ", RANK_EPOCH, LINES_WD, HIGHER_WD, lr=0.1, wd=5e-4, batch=32,
        sweep={B: [16, 32, 64, 128], WD: [0.0, 1e-4, 2e-4, 4e-4, 8e-4, 6e-3]}, quick_sweep={B: [8, 32], WD: QWD},
        quick=MLP_QUICK,
        readings=MLP_READING),
    _gp("gp-fig4", 4, "res-bn-5-500", "B", RANK_EPOCH, LINES_B, LOWER_B, lr=0.1, wd=5e-4, batch=32,
        sweep={MU: [0.001, 0.01, 0.1], B: [4, 8, 16, 32, 64, 128]}, quick_sweep={MU: [0.01, 0.03], B: MLP_QB},
        quick={**MLP_QUICK, "optimizer__weight_decay": 2e-2}, readings={**MLP_READING, **GP_SMALL_LR}),
    _gp("gp-fig5", 5, "mlp-5-500", "B", RANK_EPOCH, LINES_B, LOWER_B, lr=0.1, wd=5e-4, batch=32,
        sweep={MU: [0.001, 0.01, 0.1], B: [4, 8, 16, 32, 64, 128]}, quick_sweep={MU: [0.01, 0.03], B: MLP_QB},
        quick={**MLP_QUICK, "optimizer__weight_decay": 2e-2}, readings={**MLP_READING, **GP_SMALL_LR}),
    _gp("gp-fig6", 6, "mlp-bn-10-100", "rank of each layer", "layer-ranks", {"vary": B, "panel": MU},
        Claim("a bottleneck: middle layers have lower rank than the first and last counted ones", "bottleneck"),
        lr=0.1, wd=5e-4, batch=32, sweep={B: [32, 64, 128], MU: [0.0125, 0.025, 0.05, 0.1]},
        quick_sweep={B: [8, 32], MU: [0.05, 0.1]},
        quick={**MLP_QUICK, "model": "mlp-bn-6-64", "optimizer__weight_decay": 5e-3},
        readings=MLP_READING),
    _gp("gp-fig7", 7, "res-bn-5-500", "rank of each layer", "layer-ranks", {"vary": B, "panel": MU},
        Claim("the residual blocks' ranks are balanced (within 50 % of each other)", "balanced", tolerance=0.5),
        lr=0.1, wd=5e-4, batch=32, sweep={B: [32, 64, 128], MU: [0.0125, 0.025, 0.05, 0.1]},
        quick_sweep={B: [8, 32], MU: [0.01, 0.03]}, quick={**MLP_QUICK, "optimizer__weight_decay": 2e-2},
        readings={"model": "RES-BN-5-500 (GP also shows RES-5-500: set model.name=res-5-500)",
                  **MLP_READING, **GP_SMALL_LR}),
]

# CHEN (seed 002): TwoLayer ReLU network with bias, squared loss, lr × 0.95 every 200 epochs.
CHEN_SCHEDULE = {"kind": "step", "every": 200, "factor": 0.95}
CHEN_READINGS = {
    "lost columns": "CHEN Table 2's two unlabelled columns are read as the learning rate and the batch size's "
    "companion coefficient; the preset takes the first as lr (1e-4 California, 1e-6 MNIST)",
    "batch size": "not given with the figure; chosen: 32",
    "λ values": "not given with the figure; chosen: {1e-4, 1e-3, 1e-2, 1e-1}",
    "momentum": "0 (plain mini-batch SGD)",
}
STABLE = Claim("the stable rank of V falls towards 1 as λ grows", "stable_rank", WD)


def _chen(id, model, data, width_quick, lr, epochs, quick_data, quick_lr, quick_wds) -> Preset:
    paper = _config(model, data, lr=lr, wd=1e-3, batch=32, epochs=epochs, loss="mse_scalar", schedule=CHEN_SCHEDULE,
                    sweep={WD: [1e-4, 1e-3, 1e-2, 1e-1]})
    quick = _quick(paper, {WD: quick_wds}, model=f"twolayer-{width_quick}", data=quick_data, epochs=100,
                   optimizer__lr=quick_lr, record__every=5)
    readings = {
        **CHEN_READINGS,
        "quick scale": f"100 epochs, λ ∈ {quick_wds}: with smaller λ the runs do not reach the norm equilibrium",
    }
    return Preset(id, "CHEN Sec. 5", model, data["name"], "λ", "weight-decay", {}, STABLE, paper, quick, readings)


PRESETS_LIST += [
    _chen("chen-california", "twolayer-8192", {"name": "california", "train_size": 1800, "test_size": 600},
          64, 1e-4, 5000,
          {"name": "synthetic", "train_size": 512, "test_size": 256, "synthetic": {"classes": 0, "noise": 0.1}},
          0.05, [0.1, 0.3, 1.0]),
    _chen("chen-mnist", "twolayer-32768",
          {"name": "mnist", "train_size": 9000, "test_size": 1000, "standardize": "none"},
          128, 1e-6, 2000,
          {**QUICK_DATA, "standardize": "none"},
          1e-2, [0.3, 1.0, 3.0]),
]

PRESETS: dict[str, Preset] = {p.id: p for p in PRESETS_LIST}


def select(patterns) -> list[str]:
    """The preset ids matching ``patterns`` in catalog order: an id, a shell pattern
    (``gsgp-*``, ``gp-fig[2-5]``) or ``all``. A pattern matching nothing raises ``KeyError``."""
    chosen = set()
    for pattern in patterns:
        if pattern == "all":
            matched = list(PRESETS)
        elif any(c in pattern for c in "*?["):
            matched = fnmatch.filter(PRESETS, pattern)
        else:
            matched = [get(pattern).id]
        if not matched:
            raise ConfigError("preset", f"no preset matches {pattern!r}; known: {', '.join(PRESETS)}")
        chosen.update(matched)
    return [p for p in PRESETS if p in chosen]


def get(preset_id: str) -> Preset:
    if preset_id not in PRESETS:
        import difflib

        close = difflib.get_close_matches(preset_id, list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(PRESETS)}"
        raise ConfigError("preset", f"unknown preset {preset_id!r}{hint}")
    return PRESETS[preset_id]
