"""Callbacks that record a Lightning or Hugging Face training run with ``rb.Tracker`` (docs/track.md).

- :class:`rankbias.integrations.lightning.RankbiasCallback`: a ``lightning.pytorch.Callback``
  (``pip install rankbias[lightning]``);
- :class:`rankbias.integrations.hf.RankbiasCallback`: a ``transformers.TrainerCallback``
  (``pip install rankbias[hf]``).

Each creates one tracker for the model when training starts, on the process of global rank 0 only,
records every N epochs (epoch 0: before training) or every N optimizer steps, maps the metrics the
training logged onto rankbias's scalars (:func:`scalars`), reads the optimizer's settings and the
batch size under rankbias's key names (:func:`optimizer_settings`), and closes the run at the end.
This module holds what the two share; it imports neither framework.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from numbers import Number
from pathlib import Path

from ..config import DEFAULT_EPS
from ..errors import ConfigError
from ..track import SCALARS, Tracker

PLAIN = (bool, int, float, str)
SPLIT = {"train": "train", "training": "train", "val": "test", "valid": "test", "validation": "test",
         "eval": "test", "test": "test"}  # fmt: skip
MEASURES = {"loss": "loss", "acc": "acc", "accuracy": "acc"}
NOT_RECORDED = ("epoch", "step", "global_step")  # the record's own position, not a metric


def every(every_n_epochs: int, every_n_steps: int | None) -> tuple[int, int | None]:
    """The recording interval, checked: every ``every_n_epochs`` epochs, or every ``every_n_steps``
    optimizer steps when that is given."""
    for key, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
        if value is None and key == "every_n_steps":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(key, f"must be a whole number >= 1, got {value!r}")
    return every_n_epochs, every_n_steps


def scalar_name(name: str) -> str | None:
    """The column of ``scalars`` a logged metric fills, or None (it goes to ``metrics``):
    ``val_loss``, ``val/loss``, ``valid_loss``, ``eval_loss`` → ``test_loss``; ``val_acc``,
    ``eval_accuracy`` → ``test_acc``; ``loss``, ``train_loss``, ``train_loss_epoch`` →
    ``train_loss``; ``train_loss_step`` → ``batch_loss``; ``learning_rate`` → ``lr``."""
    key = re.sub(r"[/.\- ]+", "_", name.strip().lower())
    if key in SCALARS:
        return key
    if key in ("loss", "loss_epoch"):
        return "train_loss"
    if key in ("learning_rate", "lr_epoch"):
        return "lr"
    key, step = (key[: -len("_step")], True) if key.endswith("_step") else (key.removesuffix("_epoch"), False)
    split, _, measure = key.partition("_")
    if split not in SPLIT or measure not in MEASURES:
        return None
    column = f"{SPLIT[split]}_{MEASURES[measure]}"
    if step:  # Lightning's value of the last batch, next to the epoch's mean
        return "batch_loss" if column == "train_loss" else None
    return column


def number(value) -> float | None:
    """A logged value as a float: a number or a one-element tensor / array; None for anything else."""
    if isinstance(value, Number):
        return float(value)
    if hasattr(value, "numel") and hasattr(value, "item"):  # a torch tensor
        return float(value.item()) if value.numel() == 1 else None
    if hasattr(value, "size") and hasattr(value, "item"):  # a numpy value
        return float(value.item()) if value.size == 1 else None
    return None


def scalars(logged: Mapping) -> dict[str, float]:
    """The logged metrics as arguments of ``Tracker.record``: those :func:`scalar_name` maps onto
    a column of ``scalars`` under that name (a name already spelled as rankbias's wins over an
    alias of it, e.g. ``test_loss`` over ``val_loss``; an alias of the same value is not kept
    twice), every other number under its own name (it goes to the ``metrics`` table); anything
    that is not one number is left out."""
    values = {str(k): number(v) for k, v in logged.items() if str(k) not in NOT_RECORDED}
    values = {k: v for k, v in values.items() if v is not None}
    out: dict[str, float] = {}
    others: dict[str, float] = {}
    # rankbias's own names first, then an epoch's value (Lightning's ``_epoch``), then the rest
    for name in sorted(values, key=lambda k: (k not in SCALARS, not k.endswith("_epoch"), k)):
        column = scalar_name(name)
        if column is not None and column not in out:
            out[column] = values[name]
        elif column is None or out[column] != values[name]:  # not the same value twice (train_loss_epoch)
            others[name] = values[name]
    return out | others


def plain(value):
    """A setting as the tracker stores it: numbers, strings, bools and None as they are, lists
    of them as tuples, other objects by their ``repr`` when it is stable (no address), else by
    their type's name, so that the run's id is the same each time the script runs."""
    if value is None or isinstance(value, PLAIN):
        return value
    item = number(value) if not isinstance(value, (list, tuple, Mapping)) else None
    if item is not None:
        return item
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) if v is None or isinstance(v, PLAIN) else _text(v) for v in value)
    return _text(value)


def _text(value) -> str:
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text or len(text) > 200 else text


def flat(settings: Mapping, prefix: str = "") -> dict:
    """Nested settings (a dict, Lightning's ``hparams``, a ``Namespace``) as dotted keys of plain values."""
    out = {}
    for key, value in settings.items():
        if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
            value = vars(value)
        if isinstance(value, Mapping):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = plain(value)
    return out


def settings(*parts: Mapping) -> dict:
    """The run's settings: ``parts`` flattened and merged, a later one winning. A key that names a
    section of rankbias's (``tracked``, ``record``) moves under ``hparams.``; a key that is also the
    section of another (``optimizer`` beside ``optimizer.lr``), or is ``model`` or ``data``, becomes
    ``<key>.name``, so that the stored config nests."""
    merged: dict = {}
    for part in parts:
        merged |= flat(part)
    out = {}
    for key, value in merged.items():
        if key.split(".")[0] in ("tracked", "record"):
            key = f"hparams.{key}"
        out[key] = value
    for key in sorted(out, key=len):
        if key in out and (key in ("model", "data") or any(k.startswith(key + ".") for k in out)):
            value = out.pop(key)
            out.setdefault(f"{key}.name", value)
    return out


def unwrapped(optimizer):
    """The torch optimizer inside a wrapper (Lightning's, accelerate's)."""
    seen = 0
    while not hasattr(optimizer, "param_groups") or type(optimizer).__name__ in ("AcceleratedOptimizer",):
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None or seen > 4:
            break
        optimizer, seen = inner, seen + 1
    return optimizer


def optimizer_settings(optimizer) -> dict:
    """``optimizer.name`` (its class), ``optimizer.lr`` (the first group's rate before any
    schedule), ``optimizer.momentum`` (where the optimizer has one: SGD, RMSprop) and
    ``optimizer.weight_decay`` (the largest of its groups': those without decay hold biases and
    norms) from a torch optimizer; {} when there is none."""
    optimizer = unwrapped(optimizer)
    groups = getattr(optimizer, "param_groups", None)
    if not groups:
        return {}
    first = groups[0]
    out = {"optimizer.name": type(optimizer).__name__}
    lr = number(first.get("initial_lr", first.get("lr")))
    if lr is not None:
        out["optimizer.lr"] = lr
    if number(first.get("momentum")) is not None:
        out["optimizer.momentum"] = number(first["momentum"])
    decays = [number(g.get("weight_decay")) for g in groups if number(g.get("weight_decay")) is not None]
    if decays:
        out["optimizer.weight_decay"] = max(decays)
    return out


def current_lr(optimizer) -> float | None:
    """The learning rate in force now (the first group's, after the schedule)."""
    groups = getattr(unwrapped(optimizer), "param_groups", None)
    return number(groups[0].get("lr")) if groups else None


def final_index(progress: float, every_n: int) -> int:
    """The record index of the state at the end of training: ``progress`` epochs (or steps)
    done, recorded every ``every_n``: the next multiple's index when it is not one."""
    return math.ceil(progress / every_n - 1e-9)


class Recording:
    """What both callbacks are given (their docstrings say when they record): where and how the
    tracker records (``results``, ``name``, ``config``; ``layers``, ``counted``, ``eps``, ``norm``,
    ``input_shape`` as :class:`~rankbias.Tracker`), and every N epochs or N optimizer steps."""

    def __init__(
        self,
        results: str | Path = "results",
        *,
        name: str | None = None,
        config: dict | None = None,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        layers: str | Iterable[str] = "*",
        counted: str | Iterable[str] = "all",
        eps: float = DEFAULT_EPS,
        norm: str = "fro",
        input_shape: tuple[int, ...] | None = None,
    ):
        self.every_n_epochs, self.every_n_steps = every(every_n_epochs, every_n_steps)
        self.results, self.name, self.config = results, name, dict(config or {})
        self.options = {"layers": layers, "counted": counted, "eps": eps, "norm": norm}
        self.input_shape = input_shape
        self.tracker: Tracker | None = None
        self.path: Path | None = None  # the run's folder, once training started
        self.recorded_step: int | None = None
