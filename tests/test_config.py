import dataclasses
import math
import typing

import pytest

import rankbias as rb
from rankbias import config as cfg
from rankbias.config import load_configs


def test_defaults_validate_and_hash_is_stable():
    a, b = rb.RunConfig(), rb.RunConfig.from_dict({})
    assert a == b and a.run_id() == b.run_id() and len(a.run_id()) == 12
    assert a.run_id() == "db42eb0e3f82"  # the stored records' directories: declared checks are not part of the hash
    assert a.replace(**{"optimizer.lr": 0.2}).run_id() != a.run_id()


def test_cohort_key_ignores_member_hyperparameters_only():
    a = rb.RunConfig()
    b = a.replace(
        **{
            "optimizer.lr": 0.3,
            "optimizer.weight_decay": 0.0,
            "train.seed": 4,
            "schedule.kind": "step",
            "schedule.every": 2,
        }
    )
    assert a.cohort_key() == b.cohort_key()
    assert a.cohort_key() != a.replace(**{"train.batch_size": 8}).cohort_key()


def test_model_shorthand_and_yaml_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: mlp-4-32\noptimizer:\n  lr: 0.1\n  weight_decay: 5e-4\n")
    (config,) = load_configs(path, ["optimizer.lr=0.05", "train.batch_size=8", "model.bias=true"])
    assert config.model.name == "mlp-4-32" and config.model.bias
    assert config.optimizer.lr == 0.05 and config.optimizer.weight_decay == 5e-4
    assert config.train.batch_size == 8


def test_sweep_block_expands_to_product_and_override_pins_an_axis(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("sweep:\n  train.batch_size: [8, 32]\n  optimizer.weight_decay: [0.0, 0.005, 0.01]\n")
    assert len(load_configs(path)) == 6
    pinned = load_configs(path, ["train.batch_size=16"])
    assert len(pinned) == 3 and {c.train.batch_size for c in pinned} == {16}


@pytest.mark.parametrize(
    "raw, key, words",
    [
        ({"optimizer": {"lrr": 0.1}}, "optimizer.lrr", "did you mean 'lr'"),
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"optimizer": {"lr": "fast"}}, "optimizer.lr", "expected a number"),
        ({"optimizer": {"lr": 0}}, "optimizer.lr", "> 0"),
        ({"optimizer": {"lr": -0.1}}, "optimizer.lr", "> 0"),
        ({"optimizer": {"momentum": 1.0}}, "optimizer.momentum", "[0, 1)"),
        ({"optimizer": {"weight_decay": -1e-4}}, "optimizer.weight_decay", ">= 0"),
        ({"optimizer": {"nesterov": True}}, "optimizer.nesterov", "momentum"),
        ({"train": {"batch_size": 0}}, "train.batch_size", "must be >= 1, got 0"),
        ({"train": {"batch_size": 3.5}}, "train.batch_size", "integer"),
        ({"train": {"epochs": True}}, "train.epochs", "integer"),
        ({"model": "resnet99"}, "model.name", "unknown model"),
        ({"model": {"name": "resnet18", "mlp_dim": 8}}, "model.mlp_dim", "does not apply to resnet18"),
        ({"model": {"name": "mlp-bn-2-8", "width": 8}}, "model.width", "part of its name"),
        ({"model": {"name": "mlp-2-8", "bn_detach_var": True}}, "model.bn_detach_var", "does not apply"),
        ({"model": {"name": "vit", "activation": "tanh"}}, "model.activation", "must be one of"),
        ({"model": {"name": "vit", "dropout": 1.5}}, "model.dropout", "[0, 1)"),
        ({"data": {"name": "synthetic", "pad": 2}}, "data.pad", "applies to images"),
        ({"data": {"resize": 0}}, "data.resize", "must be >= 1, got 0"),
        ({"augment": {"crop": -1}}, "augment.crop", ">= 0"),
        ({"data": {"name": "synthetic"}, "augment": {"flip": True}}, "augment", "applies to images"),
        ({"record": {"step_norms": -1}}, "record.step_norms", ">= 0"),
        ({"data": {"name": "imagenet"}}, "data.name", "unknown data set"),
        ({"data": {"train_size": 0}}, "data.train_size", "must be >= 1, got 0"),
        ({"data": {"standardize": "yes"}}, "data.standardize", "must be one of"),
        ({"loss": "hinge"}, "loss", "must be one of"),
        ({"data": {"name": "california"}}, "loss", "mse_scalar"),
        ({"schedule": {"kind": "multistep"}}, "schedule.milestones", "at least one"),
        ({"schedule": {"kind": "multistep", "milestones": [100, 60]}}, "schedule.milestones", "increasing"),
        ({"schedule": {"kind": "step"}}, "schedule.every", "every"),
        ({"schedule": {"factor": 0}}, "schedule.factor", "> 0"),
        ({"record": {"eps": 2}}, "record.eps", "(0, 1)"),
        ({"record": {"norm": "nuclear"}}, "record.norm", "must be one of"),
        ({"record": {"every": 0}}, "record.every", "must be >= 1, got 0"),
        ({"record": {"layers": []}}, "record.layers", "must not be empty"),
    ],
)
def test_every_config_error_names_its_key(raw, key, words):
    with pytest.raises(rb.ConfigError) as info:
        rb.RunConfig.from_dict(raw)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ") and words in str(info.value)


def test_bad_override_and_bad_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: mlp-2-8\nloss: cross_entropy\n")
    with pytest.raises(rb.ConfigError, match="dotted.key=value"):
        load_configs(path, ["optimizer.lr"])
    with pytest.raises(rb.ConfigError, match="is a value, not a section"):
        load_configs(path, ["loss.kind=mse"])
    with pytest.raises(rb.ConfigError, match="does not exist"):
        load_configs(tmp_path / "missing.yaml")
    path.write_text("model: [unclosed\n")
    with pytest.raises(rb.ConfigError, match="not valid YAML"):
        load_configs(path)


def test_schedules():
    multistep = rb.RunConfig.from_dict(
        {"schedule": {"kind": "multistep", "milestones": [2, 4], "factor": 0.1}}
    ).schedule
    assert [multistep.multiplier(e) for e in range(1, 7)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    step = rb.RunConfig.from_dict({"schedule": {"kind": "step", "every": 2, "factor": 0.5}}).schedule
    assert [step.multiplier(e) for e in range(1, 6)] == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    assert rb.RunConfig().schedule.multiplier(100) == 1.0


# -- declared checks: ranges as data on the fields, one function checks them ------------------
def _declared(cls=rb.RunConfig, prefix=""):
    """(dotted key, Interval, field type) of every field with a declared range, walking the sections."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _declared(hints[f.name], f"{key}.")
        elif "check" in f.metadata:
            number = next(t for t in (int, float) if t in (hints[f.name], *typing.get_args(hints[f.name])))
            yield key, f.metadata["check"], number


DECLARED = list(_declared())
MODEL_BASE = {"model": "vit"}  # takes every model.* option that has a range


def _edges(interval: cfg.Interval, number: type):
    """(value, allowed) at each finite end: the end itself, and the nearest value on its far side."""
    step = (lambda v, d: v + d) if number is int else (lambda v, d: math.nextafter(v, d * math.inf))
    if interval.low is not None:
        closed = interval.closed in ("both", "left")
        yield number(interval.low), closed
        yield step(number(interval.low), -1 if closed else 1), not closed
    if interval.high is not None:
        closed = interval.closed in ("both", "right")
        yield number(interval.high), closed
        yield step(number(interval.high), 1 if closed else -1), not closed


def test_the_walk_finds_every_declared_range():
    keys = {key for key, _, _ in DECLARED}
    assert len(keys) >= 20 and {
        "optimizer.lr",
        "optimizer.momentum",
        "record.eps",
        "augment.rotate",
        "data.synthetic.dim",
        "model.dropout",
    } <= keys


@pytest.mark.parametrize("key, interval, number", DECLARED, ids=[key for key, _, _ in DECLARED])
def test_every_declared_range_rejects_just_outside_and_accepts_its_closed_ends(key, interval, number):
    base = rb.RunConfig.from_dict(MODEL_BASE if key.startswith("model.") else {})
    for value, allowed in _edges(interval, number):
        if allowed:
            assert cfg.flatten(base.replace(**{key: value}).to_dict())[key] == value
        else:
            with pytest.raises(rb.ConfigError) as info:
                base.replace(**{key: value})
            assert info.value.key == key and str(info.value) == f"{key}: {cfg.violation(interval, value)}"


def test_declared_checks_have_one_message_template():
    with pytest.raises(rb.ConfigError, match=r"^optimizer\.momentum: must be in \[0, 1\), got 1\.5$"):
        rb.RunConfig.from_dict({"optimizer": {"momentum": 1.5}})
    with pytest.raises(rb.ConfigError, match=r"^optimizer\.lr: must be > 0, got 0\.0$"):
        rb.RunConfig.from_dict({"optimizer": {"lr": 0}})
    with pytest.raises(rb.ConfigError, match=r"^augment\.rotate: must be in \[0, 180\], got 200\.0$"):
        rb.RunConfig.from_dict({"augment": {"rotate": 200}})
    with pytest.raises(rb.ConfigError, match=r"^record\.norm: must be one of 'fro', 'spectral', got 'nuclear'$"):
        rb.RunConfig.from_dict({"record": {"norm": "nuclear"}})
    # the same checks hold for a config built in Python, and None passes where the type is optional
    with pytest.raises(rb.ConfigError, match=r"^train\.batch_size: must be >= 1, got 0$"):
        rb.RunConfig(train=cfg.TrainConfig(batch_size=0)).validate()
    with pytest.raises(
        rb.ConfigError, match=r"^loss: must be one of 'cross_entropy', 'mse_onehot', 'mse_scalar', got 'hinge'$"
    ):
        rb.RunConfig(loss="hinge").validate()
    rb.RunConfig.from_dict({"data": {"train_size": None, "resize": None}, "model": {"name": "vit", "dropout": None}})


def test_choice_lists_have_one_definition():
    from rankbias.models import registry
    from rankbias.spectra import measures

    hints = typing.get_type_hints
    assert typing.get_args(hints(rb.RunConfig)["loss"]) == cfg.LOSSES
    assert typing.get_args(hints(cfg.RecordConfig)["norm"]) == cfg.NORMS == measures.NORMS
    assert typing.get_args(typing.get_args(hints(cfg.ModelConfig)["activation"])[0]) == cfg.ACTIVATIONS
    with pytest.raises(ValueError, match="model.activation: must be one of 'relu', 'leaky_relu', 'gelu', got 'tanh'"):
        registry.resolve(cfg.ModelConfig(name="vit", activation="tanh"))


def test_regression_is_decided_by_the_registry_num_classes(monkeypatch):
    from rankbias.data import DATASETS

    rb.RunConfig.from_dict({"data": {"name": "california"}, "loss": "mse_scalar"})
    with pytest.raises(rb.ConfigError, match="^loss: data set 'california' is a regression task"):
        rb.RunConfig.from_dict({"data": {"name": "california"}})
    # synthetic: the config's classes decide, not the registry's default
    synthetic = {"name": "synthetic", "synthetic": {"classes": 0}}
    rb.RunConfig.from_dict({"data": synthetic, "loss": "mse_scalar"})
    with pytest.raises(rb.ConfigError, match="^loss: .*regression"):
        rb.RunConfig.from_dict({"data": synthetic})
    rb.RunConfig.from_dict({"data": {"name": "synthetic"}})
    # any data set the registry lists with num_classes 0 is a regression task, whatever its name
    monkeypatch.setitem(DATASETS, "digits", dataclasses.replace(DATASETS["digits"], num_classes=0))
    with pytest.raises(rb.ConfigError, match="^loss: data set 'digits' is a regression task"):
        rb.RunConfig.from_dict({})
    rb.RunConfig.from_dict({"loss": "mse_scalar"})
