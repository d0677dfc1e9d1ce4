import pytest

import rankbias as rb
from rankbias.config import load_configs


def test_defaults_validate_and_hash_is_stable():
    a, b = rb.RunConfig(), rb.RunConfig.from_dict({})
    assert a == b and a.run_id() == b.run_id() and len(a.run_id()) == 12
    assert a.replace(**{"optimizer.lr": 0.2}).run_id() != a.run_id()


def test_cohort_key_ignores_member_hyperparameters_only():
    a = rb.RunConfig()
    b = a.replace(**{"optimizer.lr": 0.3, "optimizer.weight_decay": 0.0, "train.seed": 4, "schedule.kind": "step", "schedule.every": 2})
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
        ({"train": {"batch_size": 0}}, "train.batch_size", "at least 1"),
        ({"train": {"batch_size": 3.5}}, "train.batch_size", "integer"),
        ({"train": {"epochs": True}}, "train.epochs", "integer"),
        ({"model": "resnet99"}, "model.name", "unknown model"),
        ({"model": {"name": "resnet18", "mlp_dim": 8}}, "model.mlp_dim", "does not apply to resnet18"),
        ({"model": {"name": "mlp-bn-2-8", "width": 8}}, "model.width", "part of its name"),
        ({"model": {"name": "mlp-2-8", "bn_detach_var": True}}, "model.bn_detach_var", "does not apply"),
        ({"model": {"name": "vit", "activation": "tanh"}}, "model.activation", "must be one of"),
        ({"model": {"name": "vit", "dropout": 1.5}}, "model.dropout", "[0, 1)"),
        ({"data": {"name": "synthetic", "pad": 2}}, "data.pad", "applies to images"),
        ({"data": {"resize": 0}}, "data.resize", "at least 1"),
        ({"augment": {"crop": -1}}, "augment.crop", ">= 0"),
        ({"data": {"name": "synthetic"}, "augment": {"flip": True}}, "augment", "applies to images"),
        ({"record": {"step_norms": -1}}, "record.step_norms", ">= 0"),
        ({"data": {"name": "imagenet"}}, "data.name", "unknown data set"),
        ({"data": {"train_size": 0}}, "data.train_size", "at least 1"),
        ({"data": {"standardize": "yes"}}, "data.standardize", "must be one of"),
        ({"loss": "hinge"}, "loss", "must be one of"),
        ({"data": {"name": "california"}}, "loss", "mse_scalar"),
        ({"schedule": {"kind": "multistep"}}, "schedule.milestones", "at least one"),
        ({"schedule": {"kind": "multistep", "milestones": [100, 60]}}, "schedule.milestones", "increasing"),
        ({"schedule": {"kind": "step"}}, "schedule.every", "every"),
        ({"schedule": {"factor": 0}}, "schedule.factor", "> 0"),
        ({"record": {"eps": 2}}, "record.eps", "(0, 1)"),
        ({"record": {"norm": "nuclear"}}, "record.norm", "must be one of"),
        ({"record": {"every": 0}}, "record.every", "at least 1"),
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
    multistep = rb.RunConfig.from_dict({"schedule": {"kind": "multistep", "milestones": [2, 4], "factor": 0.1}}).schedule
    assert [multistep.multiplier(e) for e in range(1, 7)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    step = rb.RunConfig.from_dict({"schedule": {"kind": "step", "every": 2, "factor": 0.5}}).schedule
    assert [step.multiplier(e) for e in range(1, 6)] == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    assert rb.RunConfig().schedule.multiplier(100) == 1.0
