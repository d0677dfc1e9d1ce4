"""Run configuration: dataclasses, YAML loading, ``dotted.key=value`` overrides and validation.

Nothing else in rankbias reads YAML. A :class:`RunConfig` is a complete, validated description of
one training run; its :meth:`RunConfig.run_id` is a hash of its contents, so the same config always
maps to the same results directory.

Conventions (see ``docs/config.md``): ``optimizer.weight_decay`` is the coefficient PyTorch's SGD
adds to the gradient (``weight_decay * W``); the papers' λ is ``weight_decay / 2``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError

LOSSES = ("cross_entropy", "mse_onehot", "mse_scalar")
ACTIVATIONS = ("relu", "leaky_relu", "gelu")
NORMS = ("fro", "spectral")
DEFAULT_EPS = 1e-3  # the rank threshold ε of GSGP (record.eps, and every function that takes an ε)


# -- declared checks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """The values a number field allows: from ``low`` to ``high`` (``None``: no bound on that side);
    ``closed`` names the ends that belong to it: ``both``, ``left``, ``right`` or ``neither``.

    Declared on a field with :func:`checked`; NaN lies in no interval.
    """

    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def __post_init__(self):
        if self.closed not in ("both", "left", "right", "neither") or (self.low is None and self.high is None):
            raise TypeError(f"not an interval: {self!r}")  # a bug in rankbias, not user input

    def __contains__(self, value) -> bool:
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        above = self.low is None or (value >= self.low if left else value > self.low)
        below = self.high is None or (value <= self.high if right else value < self.high)
        return above and below

    def __str__(self) -> str:
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.high is None:
            return f"{'>=' if left else '>'} {self.low}"
        if self.low is None:
            return f"{'<=' if right else '<'} {self.high}"
        return f"in {'[' if left else '('}{self.low}, {self.high}{']' if right else ')'}"


@dataclass(frozen=True)
class Choices:
    """The values a ``Literal[...]`` field allows; derived from the annotation, never declared by hand."""

    values: tuple

    def __contains__(self, value) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return f"one of {', '.join(map(repr, self.values))}"


def checked(default, check: Interval):
    """A dataclass field with ``default`` whose values must lie in ``check`` (``None`` passes where
    the field's type is optional). The check is field metadata: it enters no dict and no run id."""
    return field(default=default, metadata={"check": check})


def violation(check: Interval | Choices, value) -> str:
    """The one message of a value outside its declared range or choices."""
    return f"must be {check}, got {value!r}"


def check_values(cls, values: dict, prefix: str) -> None:
    """Raise ConfigError(``prefix.name``, ...) for the first of ``values`` (field name -> value;
    names that are not fields of ``cls`` or have no check are skipped) outside its field's check."""
    for name, (check, optional) in _checks(cls).items():
        if name in values:
            value = values[name]
            if not (value is None and optional) and value not in check:
                raise ConfigError(f"{prefix}.{name}" if prefix else name, violation(check, value))


@functools.cache
def _checks(cls) -> dict:
    """Field name -> (check, None allowed) for the fields of ``cls`` that have one: the Interval
    in the field's metadata, or the Choices of a ``Literal`` (or optional ``Literal``) type."""
    hints, checks = _type_hints(cls), {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
        optional = type(None) in options
        options = [t for t in options if t is not type(None)]
        check = f.metadata.get("check")
        if check is None and len(options) == 1 and typing.get_origin(options[0]) is Literal:
            check = Choices(typing.get_args(options[0]))
        if check is not None:
            checks[f.name] = (check, optional)
    return checks


class Section:
    """Base of the config sections. :meth:`validate` is one function for all of them: the
    declared checks of the section's own fields, then each nested section, then the section's
    cross-field rules (:meth:`rules`), the few that no range or choice can say."""

    # whether rules() checks against the model or data-set registry, which import torch
    uses_registry = False

    def validate(self, prefix: str = "", registries: bool = True) -> None:
        """``registries=False`` leaves out the rules that check names against the model and data-set
        registries (they import every model family and torch): for configs read back from the store,
        which were checked when written, by readers that load no network."""
        check_values(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, prefix)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Section):
                value.validate(f"{prefix}.{f.name}" if prefix else f.name, registries)
        if registries or not self.uses_registry:
            self.rules(prefix)

    def rules(self, prefix: str) -> None:
        """Checks across fields; each raises ConfigError naming its key."""


@dataclass(frozen=True)
class SyntheticConfig(Section):
    """The ``synthetic`` data set: x ~ N(0, I_dim), targets from a random two-layer ReLU teacher.

    ``classes > 0``: the label is the argmax of the teacher's ``classes`` outputs.
    ``classes == 0``: regression on the teacher's scalar output plus Gaussian ``noise``.
    """

    dim: int = checked(20, Interval(1))
    classes: int = 10
    teacher_width: int = checked(64, Interval(1))
    noise: float = checked(0.0, Interval(0))

    def rules(self, prefix: str) -> None:
        if self.classes < 0 or self.classes == 1:
            raise ConfigError(f"{prefix}.classes", f"must be 0 (regression) or at least 2, got {self.classes}")


@dataclass(frozen=True)
class DataConfig(Section):
    """Which data set, which seeded subset of it, and how inputs are standardized.

    ``train_size`` / ``test_size``: ``None`` takes the data set's default sizes (all of it for
    data sets with a train/test split). ``subset_seed`` draws the subsets. ``standardize``:
    ``auto`` (per channel for images, per feature for tabular data), ``channel``, ``feature`` or
    ``none``; statistics come from the training subset.
    """

    name: str = "digits"
    train_size: int | None = checked(None, Interval(1))
    test_size: int | None = checked(None, Interval(1))
    subset_seed: int = 0
    standardize: Literal["auto", "channel", "feature", "none"] = "auto"
    pad: int = checked(0, Interval(0))
    resize: int | None = checked(None, Interval(1))
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    uses_registry = True

    def rules(self, prefix: str) -> None:
        from .data import DATASETS

        if self.name not in DATASETS:
            raise ConfigError(f"{prefix}.name", f"unknown data set {self.name!r}; known: {', '.join(sorted(DATASETS))}")
        if (self.pad or self.resize) and DATASETS[self.name].kind != "image":
            key = "pad" if self.pad else "resize"
            raise ConfigError(f"{prefix}.{key}", f"applies to images; {self.name!r} is tabular")


@dataclass(frozen=True)
class ModelConfig(Section):
    """A model of the registry by name (``mlp-bn-10-100``, ``resnet18``, ``vit`` ...; ``docs/models.md``).

    The options default to ``null``: the family's own default (``rankbias models`` lists them).
    ``width``: base width of ``resnet18``/``vgg16`` (64), embedding size of ``vit`` (512); the
    other families carry their width in their name. ``bias``: bias in the linear/convolution
    layers (off for the MLP families as in the papers, on for ``vgg16``/``convnet`` as in the
    authors' code). ``activation``: ``relu``, ``leaky_relu`` (the authors' code's ResNet
    default) or ``gelu``. ``dropout``, ``mlp_dim``: ``vit`` only. ``bn_detach_var``: GP's batch
    norm, whose variance term is detached from backpropagation.
    """

    name: str = "mlp-bn-4-64"
    width: int | None = checked(None, Interval(1))
    bias: bool | None = None
    activation: Literal[ACTIVATIONS] | None = None
    dropout: float | None = checked(None, Interval(0, 1, closed="left"))
    mlp_dim: int | None = checked(None, Interval(1))
    bn_detach_var: bool = False

    uses_registry = True

    def rules(self, prefix: str) -> None:
        from .models import resolve

        try:
            resolve(self)
        except ValueError as exc:
            key, _, message = str(exc).partition(": ")
            where = f"{prefix}.{key.split('.', 1)[1]}" if key.startswith("model.") else prefix
            raise ConfigError(where, message) from None


@dataclass(frozen=True)
class OptimizerConfig(Section):
    """SGD in PyTorch's convention: ``g = grad + weight_decay*W; buf = momentum*buf + g; W -= lr*buf``."""

    lr: float = checked(0.1, Interval(0, closed="neither"))
    momentum: float = checked(0.0, Interval(0, 1, closed="left"))
    weight_decay: float = checked(5e-4, Interval(0))
    nesterov: bool = False

    def rules(self, prefix: str) -> None:
        if self.nesterov and self.momentum == 0:
            raise ConfigError(f"{prefix}.nesterov", "needs momentum > 0")


@dataclass(frozen=True)
class ScheduleConfig(Section):
    """Learning-rate schedule, applied per epoch.

    ``constant``; ``multistep``: lr × factor at each epoch in ``milestones``;
    ``step``: lr × factor every ``every`` epochs.
    """

    kind: Literal["constant", "multistep", "step"] = "constant"
    milestones: tuple[int, ...] = ()
    factor: float = checked(0.1, Interval(0, closed="neither"))
    every: int = 0

    def rules(self, prefix: str) -> None:
        if self.kind == "multistep":
            if not self.milestones:
                raise ConfigError(f"{prefix}.milestones", "multistep needs at least one milestone")
            if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(set(self.milestones)):
                raise ConfigError(
                    f"{prefix}.milestones", f"must be increasing positive epochs, got {list(self.milestones)}"
                )
        if self.kind == "step" and self.every < 1:
            raise ConfigError(f"{prefix}.every", f"step schedule needs every >= 1, got {self.every}")

    def multiplier(self, epoch: int) -> float:
        """Factor on the initial lr during (1-based) ``epoch``: milestones count as epochs completed."""
        done = epoch - 1
        if self.kind == "multistep":
            return self.factor ** sum(done >= m for m in self.milestones)
        if self.kind == "step":
            return self.factor ** (done // self.every)
        return 1.0


@dataclass(frozen=True)
class TrainConfig(Section):
    """Mini-batch size, number of epochs, the run's seed (initialization and data order)."""

    batch_size: int = checked(32, Interval(1))
    epochs: int = checked(10, Interval(1))
    seed: int = checked(0, Interval(0))
    drop_last: bool = True


@dataclass(frozen=True)
class AugmentConfig(Section):
    """Augmentation of training images, on tensors, batched, each member from its own generator.

    ``crop``: random crop with this much zero padding (4 in the papers' CIFAR setting; 0 = off).
    ``flip``: random horizontal flip. ``rotate``: degrees (0 = off), read as ``rotate_mode`` says:
    ``uniform`` — an angle uniform in ±rotate (the authors' code: ±15); ``steps`` — GSGP's text,
    rotate·k degrees with k uniform in {1, …, ⌊360/rotate⌋} (15k, k ∈ {1, …, 24}).
    ``uniform`` is the default: it is what the released code does, and the text's reading turns
    most images far from upright. Off by default, as in all the authors' logged runs.
    """

    crop: int = checked(0, Interval(0))
    flip: bool = False
    rotate: float = checked(0.0, Interval(0, 180))
    rotate_mode: Literal["uniform", "steps"] = "uniform"

    @property
    def enabled(self) -> bool:
        return bool(self.crop or self.flip or self.rotate)


@dataclass(frozen=True)
class RecordConfig(Section):
    """What is recorded and how ranks are derived from the stored singular values.

    ``every``: record every k epochs (epoch 0 and the last epoch always). ``eps``: rank threshold.
    ``norm``: the matrix is divided by its Frobenius (``fro``) or spectral norm before thresholding.
    ``layers``: which weight matrices count in the average rank: ``hidden`` (the family's default,
    as the authors' code counts: all but the final classifier, and not ResNet's 1×1 shortcuts nor
    ViT's patch embedding), ``all``, or a list of matrix names and glob patterns
    (``layer4.*.conv?``). ``step_norms``: k > 0 also stores, for each recorded epoch, the Frobenius
    norm of every weight matrix after each of the epoch's last k steps (GSGP Lemma 3.2's check).
    """

    every: int = checked(1, Interval(1))
    eps: float = checked(DEFAULT_EPS, Interval(0, 1, closed="neither"))
    norm: Literal[NORMS] = "fro"
    layers: Literal["hidden", "all"] | tuple[str, ...] = "hidden"
    step_norms: int = checked(0, Interval(0))

    def rules(self, prefix: str) -> None:
        if isinstance(self.layers, tuple) and not self.layers:
            raise ConfigError(f"{prefix}.layers", "an explicit list of matrices must not be empty")


@dataclass(frozen=True)
class RunConfig(Section):
    """Everything that determines one training run and its records."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: Literal[LOSSES] = "cross_entropy"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    record: RecordConfig = field(default_factory=RecordConfig)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict, registries: bool = True) -> RunConfig:
        """Build and validate a config from plain values (as read from YAML or JSON); ``registries``:
        see :meth:`Section.validate`."""
        raw = dict(raw)
        if isinstance(raw.get("model"), str):  # ``model: mlp-bn-4-64`` is short for {name: ...}
            raw["model"] = {"name": raw["model"]}
        config = _build(cls, raw, "")
        config.validate(registries=registries)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] = ()) -> RunConfig:
        """One config from a YAML file plus ``dotted.key=value`` overrides (no sweep block)."""
        configs = load_configs(path, overrides)
        if len(configs) != 1:
            raise ConfigError("sweep", f"{path} describes {len(configs)} runs; use rankbias.load_configs")
        return configs[0]

    def replace(self, **dotted: Any) -> RunConfig:
        """A copy with ``dotted`` keys (``optimizer__lr`` or {"optimizer.lr": ...}) replaced."""
        raw = self.to_dict()
        for key, value in dotted.items():
            _set_dotted(raw, key.replace("__", "."), value)
        return RunConfig.from_dict(raw)

    uses_registry = True

    def rules(self, prefix: str) -> None:
        from .data import DATASETS

        info = DATASETS[self.data.name]  # known: DataConfig's rules ran first
        classes = self.data.synthetic.classes if info.layout == "generated" else info.num_classes
        regression = classes == 0  # DatasetInfo: num_classes 0 is regression; synthetic's config decides
        if regression and self.loss != "mse_scalar":
            raise ConfigError("loss", f"data set {self.data.name!r} is a regression task: use mse_scalar")
        if self.augment.enabled and DATASETS[self.data.name].kind != "image":
            raise ConfigError("augment", f"augmentation applies to images; {self.data.name!r} is tabular")

    # -- identity -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def run_id(self) -> str:
        """A 12-hex-digit hash of the resolved config: the name of the run's results directory."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def cohort_key(self) -> str:
        """Runs with equal keys can train together: all but seed, optimizer and schedule agree,
        and so does the form of the update, with or without momentum (the fused update computes
        the two differently, so a run without momentum in a cohort with momentum would not
        replay its solo run bit for bit)."""
        raw = self.to_dict()
        for member_key in ("optimizer", "schedule"):
            raw.pop(member_key)
        raw["train"].pop("seed")
        raw["momentum"] = self.optimizer.momentum > 0
        return json.dumps(raw, sort_keys=True)


@dataclass(frozen=True)
class TrackedConfig:
    """The config of a run that rankbias recorded but did not train (:class:`rankbias.Tracker`).

    ``name``: the user's name for the run; ``module``: the model's class
    (``torchvision.models.resnet.ResNet``) and ``parameters`` its size; ``settings``: the user's
    own config, as dotted keys (``optimizer.lr``: using rankbias's key names for the same things
    lets the figures and checks read them as B, μ, λ); ``record``: ε, norm and which matrices
    count in ``avg_rank`` (``all`` or glob patterns). Stored as the run's ``config.json`` with a
    top-level ``tracked`` section (a :class:`RunConfig` has none), and read back in its place by
    every reader: the flattened keys are the run's columns in ``runs``, ``model.name`` defaults to
    the class's name and ``data.name`` to ``tracked``.
    """

    name: str
    module: str
    parameters: int
    settings: dict = field(default_factory=dict)
    record: RecordConfig = field(default_factory=lambda: RecordConfig(layers="all"))

    RESERVED = ("tracked", "record")  # sections of the stored dict that the user's settings may not use

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", f"must be a non-empty string, got {self.name!r}")
        settings = flatten(self.settings)
        for key, value in settings.items():
            if key.split(".")[0] in self.RESERVED:
                raise ConfigError(key, f"the sections {', '.join(self.RESERVED)} are rankbias's; rename the key")
            if value is not None and not isinstance(value, (bool, int, float, str, tuple)):
                raise ConfigError(key, f"a setting must be a number, string, bool or list, got {type(value).__name__}")
        object.__setattr__(self, "settings", settings)
        self.record.validate("record")

    @classmethod
    def from_dict(cls, raw: dict) -> TrackedConfig:
        """The config stored by :meth:`to_dict` (a :class:`ConfigError` when it is not one)."""
        raw = flatten(raw)
        tracked = {k.split(".", 1)[1]: raw.pop(k) for k in list(raw) if k.startswith("tracked.")}
        record = {k.split(".", 1)[1]: raw.pop(k) for k in list(raw) if k.startswith("record.")}
        if set(tracked) != {"name", "module", "parameters"}:
            raise ConfigError("tracked", f"expected name, module and parameters, got {sorted(tracked)}")
        record = _build(RecordConfig, {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}, "record")
        return cls(tracked["name"], tracked["module"], int(tracked["parameters"]), raw, record)

    def to_dict(self) -> dict:
        nested: dict = {}
        defaults = {"model.name": self.module.rpartition(".")[2], "data.name": "tracked"}
        for key, value in (defaults | self.settings).items():
            _set_dotted(nested, key, list(value) if isinstance(value, tuple) else value)
        nested["tracked"] = {"name": self.name, "module": self.module, "parameters": self.parameters}
        nested["record"] = _plain(dataclasses.asdict(self.record))
        return nested

    def run_id(self) -> str:
        """A 12-hex-digit hash of name, model and settings (not of ``record``, whose ε only sets
        how ranks are read): the same script run again is the same run, and resumes it."""
        identity = {k: v for k, v in self.to_dict().items() if k != "record"}
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def stored_config(raw: dict, registries: bool = True) -> RunConfig | TrackedConfig:
    """A run's ``config.json`` as its config: a :class:`TrackedConfig` when it has a ``tracked``
    section, else a :class:`RunConfig` (``registries``: see :meth:`Section.validate`)."""
    if isinstance(raw, dict) and "tracked" in raw:
        return TrackedConfig.from_dict(raw)
    return RunConfig.from_dict(raw if isinstance(raw, dict) else {"": raw}, registries=registries)


# -- loading files with overrides and sweeps ----------------------------------------------------
def load_configs(path: str | Path, overrides: list[str] = ()) -> list[RunConfig]:
    """Read a YAML file, apply ``dotted.key=value`` overrides, expand its ``sweep`` block.

    A ``sweep`` block maps dotted keys to lists of values; the runs are the Cartesian product::

        sweep:
          train.batch_size: [8, 32, 128]
          optimizer.weight_decay: [0.0, 5.0e-3]

    Overrides on the command line replace a swept key with a single value.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError("", f"config file {path} is a directory: give a YAML file (examples/*.yaml)")
    if not path.is_file():
        raise ConfigError("", f"config file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError("", f"config file {path} is {size:,} bytes: more than a config ({MAX_CONFIG_BYTES:,})")
    try:
        raw = yaml.load(path.read_text(), Loader=_ConfigLoader)
    except UnicodeDecodeError:
        raise ConfigError("", f"config file {path} is not a text file") from None
    except RecursionError:
        raise ConfigError("", f"config file {path} is nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    if raw is None:
        raise ConfigError("", f"config file {path} is empty: give at least one key ({{}} for the defaults)")
    if not isinstance(raw, dict):
        raise ConfigError("", f"{path} must hold a mapping of config keys")
    return expand(raw, overrides)


MAX_CONFIG_BYTES = 1 << 20  # a config of a thousand sweep values is a few kB
MAX_RUNS = 20_000  # runs one config may expand to (`reproduce all` is 453; 20,000 plan in ~20 s, 0.6 GB)


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (``*name``): an alias repeats a node by reference, and
    a few lines of nested aliases expand to billions of values (a "billion laughs" file)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            message = "aliases (*name) are not read in configs"
            raise yaml.composer.ComposerError(None, None, message, event.start_mark)
        return super().compose_node(parent, index)


def expand(raw: dict, overrides: list[str] = ()) -> list[RunConfig]:
    """Configs from a plain mapping (optionally with a ``sweep`` block) and overrides.

    The ``sweep`` block (see ``docs/sweeps.md``): each dotted key with a list of values is an
    axis of a Cartesian product; ``zip`` (a mapping of keys to lists of one length, or a list
    of such mappings) is one axis whose keys vary together; ``seeds: N`` repeats every run with
    ``train.seed`` = base seed + 0 .. N-1. Overrides replace a swept key with a single value.
    Every expanded config is validated here; the first bad one is reported with the swept
    values that made it.
    """
    raw = json.loads(json.dumps(raw))  # deep copy of plain values
    sweep = raw.pop("sweep", None) or {}
    if not isinstance(sweep, dict):
        raise ConfigError("sweep", "must map dotted keys to lists of values")
    overridden = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "an override must look like dotted.key=value")
        overridden.append(key)
        _set_dotted(raw, key, yaml.safe_load(text) if text else "")
    axes = _sweep_axes(sweep, overridden, raw)
    runs = math.prod(len(axis) for axis in axes)
    if runs > MAX_RUNS:
        sizes = " × ".join(str(len(axis)) for axis in axes)
        raise ConfigError("sweep", f"expands to {runs:,} runs ({sizes}); at most {MAX_RUNS:,} in one config: split it")
    configs = []
    for combo in itertools.product(*axes):
        run = json.loads(json.dumps(raw))
        swept = dict(pair for group in combo for pair in group)
        for key, value in swept.items():
            _set_dotted(run, key, value)
        try:
            configs.append(RunConfig.from_dict(run))
        except ConfigError as exc:
            if not swept:
                raise
            where = ", ".join(f"{k}={v!r}" for k, v in swept.items())
            raise ConfigError(exc.key, f"{str(exc).split(': ', 1)[-1]} (in the run with {where})") from None
    return configs


def _sweep_axes(sweep: dict, overridden: list[str], raw: dict) -> list[list[tuple]]:
    """The sweep block as axes of a Cartesian product; each point is a tuple of (key, value)."""
    axes = []
    for key, values in sweep.items():
        if key == "seeds":
            if isinstance(values, bool) or not isinstance(values, int) or values < 1:
                raise ConfigError("sweep.seeds", f"must be a positive number of repeats, got {values!r}")
            if "train.seed" in overridden or "train.seed" in sweep:
                raise ConfigError("sweep.seeds", "cannot be combined with a swept or overridden train.seed")
            base = (raw.get("train") or {}).get("seed", 0)
            base = base if isinstance(base, int) and not isinstance(base, bool) else 0
            axes.append([(("train.seed", base + i),) for i in range(values)])
        elif key == "zip":
            groups = values if isinstance(values, list) else [values]
            for g, group in enumerate(groups):
                label = f"sweep.zip[{g}]" if isinstance(values, list) else "sweep.zip"
                axes.append(_zip_axis(group, label, overridden))
        elif key not in overridden:
            if not isinstance(values, list) or not values:
                raise ConfigError(f"sweep.{key}", "must be a non-empty list of values")
            axes.append([((key, v),) for v in values])
    return axes


def _zip_axis(group, where: str, overridden: list[str]) -> list[tuple]:
    """One axis from a ``zip`` mapping: its keys' lists, of one length, taken element by element."""
    if not isinstance(group, dict) or not group:
        raise ConfigError(where, "must map dotted keys to lists of values of one length")
    lengths = {}
    for key, values in group.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{key}", "must be a non-empty list of values")
        lengths[key] = len(values)
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ConfigError(where, f"zipped lists must have one length: {sizes}")
    keys = [k for k in group if k not in overridden]
    return [tuple((k, group[k][i]) for k in keys) for i in range(next(iter(lengths.values())))]


# -- generic typed construction -----------------------------------------------------------------
def _build(cls, raw: Any, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "config", f"expected a mapping, got {raw!r}")
    hints = _type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(dotted, f"unknown key{hint}")
        values[key] = _coerce(hints[key], value, dotted)
    return cls(**values)


@functools.cache
def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls)  # slow (evaluates annotations): once per class


def _coerce(tp, value: Any, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 1)[-1])
        raise ConfigError(key, " or ".join(errors))
    if origin is Literal:
        choices = Choices(typing.get_args(tp))
        if value not in choices:
            raise ConfigError(key, violation(choices, value))
        return value
    if origin is tuple:
        (item_type, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return tuple(_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads 5e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in rankbias, not user input


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and part == "model" and i == 0:
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), f"is a value, not a section: cannot set {key}")
        node[part] = child
        node = child
    node[parts[-1]] = value


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config dict as one level of dotted keys (``{"optimizer.lr": 0.1, ...}``); lists
    become tuples, so values can be compared and hashed."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

