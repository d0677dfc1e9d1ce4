"""The cohort engine: cohort = solo, = plain PyTorch, resume = uninterrupted, divergence isolated."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import rankbias as rb
from rankbias import native as native_step
from rankbias.data import load_dataset
from rankbias.options import EngineOptions
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer, Member

from .conftest import small_config

SCALAR_COLUMNS = [
    "epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "batch_loss", "avg_rank", "distance"
]
LAYER_COLUMNS = [
    "epoch", "layer", "fro_norm", "spectral_norm", "delta_fro", "norm_ratio", "stable_rank", "effective_rank"
]


def records(path, run_id):
    loaded = rb.load(path / run_id)
    spectra = np.concatenate(loaded.spectra.sort_values(["epoch", "layer"])["sv"].map(np.asarray).to_list())
    return loaded.scalars.sort_values("epoch"), loaded.layers.sort_values(["epoch", "layer"]), spectra


def assert_same_records(path_a, path_b, run_id, rtol=0.0, atol=0.0):
    sa, la, spa = records(path_a, run_id)
    sb, lb, spb = records(path_b, run_id)
    pd.testing.assert_frame_equal(
        sa[SCALAR_COLUMNS].reset_index(drop=True),
        sb[SCALAR_COLUMNS].reset_index(drop=True),
        rtol=rtol,
        atol=atol,
        check_exact=rtol == 0 and atol == 0,
    )
    pd.testing.assert_frame_equal(
        la[LAYER_COLUMNS].reset_index(drop=True),
        lb[LAYER_COLUMNS].reset_index(drop=True),
        rtol=rtol,
        atol=atol,
        check_exact=rtol == 0 and atol == 0,
    )
    np.testing.assert_allclose(spa, spb, rtol=rtol, atol=atol)


MEMBERS = [
    {},
    {"train.seed": 1, "optimizer.lr": 0.1, "optimizer.momentum": 0.5},
    {"train.seed": 2, "optimizer.weight_decay": 0.0, "optimizer.nesterov": True},
    {"train.seed": 3, "schedule.kind": "multistep", "schedule.milestones": [2], "schedule.factor": 0.2},
]


PATHS = pytest.mark.parametrize("native", [None, False], ids=["default-path", "eager-path"])


@PATHS
def test_cohort_members_equal_their_solo_runs(tmp_path, native):
    configs = [small_config(**m) for m in MEMBERS]
    assert len({c.cohort_key() for c in configs}) == 1
    rb.train(configs, tmp_path / "cohort", max_cohort=4, native=native)
    for config in configs:
        rb.train(config, tmp_path / "solo", native=native)
    for config in configs:  # bit for bit: a member's arithmetic does not depend on its cohort (test_models.py)
        assert_same_records(tmp_path / "cohort", tmp_path / "solo", config.run_id())
        _, layers, _ = records(tmp_path / "cohort", config.run_id())
        _, solo_layers, _ = records(tmp_path / "solo", config.run_id())
        assert np.array_equal(layers["eps_rank"].values, solo_layers["eps_rank"].values)


def test_records_do_not_depend_on_the_evaluation_chunks(tmp_path, monkeypatch):
    # the evaluation's chunk size shrinks with the cohort's size (memory): a member's losses must not
    config = small_config(**{"train.epochs": 2})
    rb.train(config, tmp_path / "whole")
    monkeypatch.setattr("rankbias.training.engine.EVAL_FLOATS", 2_000)  # chunks of about 15 samples
    rb.train(config, tmp_path / "chunked")
    assert_same_records(tmp_path / "whole", tmp_path / "chunked", config.run_id())


def test_records_have_every_epoch_including_initialization(tmp_path):
    config = small_config(**{"schedule.kind": "step", "schedule.every": 2, "schedule.factor": 0.5})
    run = rb.train(config, tmp_path)
    assert run.state == "done" and run.epoch == 3 and not run.reused
    loaded = rb.load(run.path)
    assert list(loaded.scalars["epoch"]) == [0, 1, 2, 3]
    assert list(loaded.scalars["lr"]) == pytest.approx([0.05, 0.05, 0.05, 0.025])
    assert loaded.scalars["step"].tolist() == [0, 8, 16, 24]  # 256 samples / 32, drop_last
    layers = loaded.layers
    assert set(layers["layer"]) == {"hidden.0", "hidden.1", "out"}
    assert layers[layers.layer == "out"]["counted"].eq(False).all()
    assert layers[layers.epoch == 0]["delta_fro"].isna().all() and layers[layers.epoch > 0]["delta_fro"].gt(0).all()
    # avg_rank is the mean ε-rank of the hidden matrices; spectra hold all singular values
    epoch3 = layers[(layers.epoch == 3) & layers.counted]
    assert loaded.scalars.iloc[-1]["avg_rank"] == pytest.approx(epoch3["eps_rank"].mean())
    sv = loaded.spectra[(loaded.spectra.epoch == 3) & (loaded.spectra.layer == "hidden.0")]["sv"].iloc[0]
    assert len(sv) == 16 and sv.dtype == np.float32
    row = layers[(layers.epoch == 3) & (layers.layer == "hidden.0")].iloc[0]
    assert row["fro_norm"] == pytest.approx(np.sqrt((sv.astype(np.float64) ** 2).sum()), rel=1e-5)
    assert row["spectral_norm"] == pytest.approx(sv.max(), rel=1e-6)
    # the norm ratio is ||W_{t-1}|| / ||W_t|| between records
    prev = layers[(layers.epoch == 2) & (layers.layer == "hidden.0")].iloc[0]
    assert row["norm_ratio"] == pytest.approx(prev["fro_norm"] / row["fro_norm"], rel=1e-5)
    # ranks at another ε, recomputed from the stored spectra without retraining
    coarse = rb.load(run.path, eps=0.05)
    assert (coarse.layers["eps_rank"].values <= loaded.layers["eps_rank"].values).all()
    assert coarse.layers["eps_rank"].sum() < loaded.layers["eps_rank"].sum()


def test_record_every_k_epochs_keeps_zero_and_last(tmp_path):
    run = rb.train(small_config(**{"train.epochs": 5, "record.every": 2}), tmp_path)
    assert rb.load(run.path).scalars["epoch"].tolist() == [0, 2, 4, 5]
    assert rb.load(run.path).layers[lambda d: d.epoch == 2]["delta_fro"].notna().all()


@PATHS
def test_engine_equals_plain_pytorch_sgd(tmp_path, native):
    """One member trained by the engine = its plain nn.Module trained with torch.optim.SGD."""
    config = small_config(**{"optimizer.weight_decay": 1e-2, "model.bias": True})
    data = load_dataset(config.data)
    options = EngineOptions(device="cpu", native=native)
    trainer = CohortTrainer([Member(config, RunStore(tmp_path, config.run_id()))], data, options)
    plain = trainer.model.member_module(0)
    generator = torch.Generator()
    generator.set_state(trainer.generators[0].get_state())
    trainer.run()
    assert trainer.path == ("native" if native is None and native_step.available() else "eager")

    opt = config.optimizer
    sgd = torch.optim.SGD(plain.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    n, batch = len(data.x_train), config.train.batch_size
    for _ in range(config.train.epochs):
        order = torch.randperm(n, generator=generator)
        for s in range(n // batch):
            index = order[s * batch : (s + 1) * batch]
            loss = F.cross_entropy(plain(data.x_train[index]), data.y_train[index])
            sgd.zero_grad()
            loss.backward()
            sgd.step()
    trained = trainer.model.member_module(0).state_dict()
    for name, value in plain.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(trained[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_same_seed_same_records_and_reuse(tmp_path):
    config = small_config()
    first = rb.train(config, tmp_path / "a")
    rb.train(config, tmp_path / "b")
    assert_same_records(tmp_path / "a", tmp_path / "b", config.run_id())
    stamp = (first.path / "scalars.parquet").stat().st_mtime_ns
    again = rb.train(config, tmp_path / "a")
    assert again.reused and (first.path / "scalars.parquet").stat().st_mtime_ns == stamp
    forced = rb.train(config, tmp_path / "a", force=True)
    assert not forced.reused and (first.path / "scalars.parquet").stat().st_mtime_ns != stamp
    assert_same_records(tmp_path / "a", tmp_path / "b", config.run_id())


class Killed(KeyboardInterrupt):
    pass


def kill_in_epoch(monkeypatch, epoch: int):
    """Make every trainer raise ``Killed`` when it starts ``epoch``; returns the original method."""
    original = CohortTrainer._train_epoch

    def dies(self, *args):
        if self.epoch == epoch:
            raise Killed
        return original(self, *args)

    monkeypatch.setattr(CohortTrainer, "_train_epoch", dies)
    return original


@PATHS
def test_killed_run_resumes_to_the_uninterrupted_records(tmp_path, monkeypatch, native):
    configs = [small_config(**{"train.epochs": 5}), small_config(**{"train.epochs": 5, "train.seed": 9})]
    rb.train(configs, tmp_path / "straight", native=native)

    original = kill_in_epoch(monkeypatch, 4)
    with pytest.raises(Killed):
        rb.train(configs, tmp_path / "killed", native=native)
    store = RunStore(tmp_path / "killed", configs[0].run_id())
    assert store.status()["state"] == "running" and store.load_checkpoint()["epoch"] == 3
    monkeypatch.setattr(CohortTrainer, "_train_epoch", original)
    runs = rb.train(configs, tmp_path / "killed")
    assert [r.state for r in runs] == ["done", "done"]
    for config in configs:
        assert_same_records(tmp_path / "straight", tmp_path / "killed", config.run_id())


def test_crash_between_records_and_checkpoint_drops_the_orphan_records(tmp_path, monkeypatch):
    config = small_config(**{"train.epochs": 4})
    rb.train(config, tmp_path / "straight")
    original = RunStore.save_checkpoint

    def fails_at_epoch_3(self, state):
        if state["epoch"] == 3:
            raise OSError("disk full")
        return original(self, state)

    monkeypatch.setattr(RunStore, "save_checkpoint", fails_at_epoch_3)
    run = rb.train(config, tmp_path / "crashed")
    assert run.state == "failed" and "disk full" in run.message and run.epoch == 2
    assert (run.path / "scalars" / "e000003.parquet").exists()  # written before the checkpoint failed
    monkeypatch.setattr(RunStore, "save_checkpoint", original)
    assert rb.train(config, tmp_path / "crashed").state == "done"
    assert_same_records(tmp_path / "straight", tmp_path / "crashed", config.run_id())


def test_a_diverging_member_is_isolated(tmp_path):
    stable = small_config(**{"model.name": "mlp-2-16", "optimizer.momentum": 0.0})
    wild = stable.replace(**{"optimizer.lr": 1e4, "train.seed": 5})
    runs = rb.train([stable, wild], tmp_path / "cohort")
    assert runs[0].state == "done"
    assert runs[1].state == "diverged" and runs[1].epoch == 1 and "not finite" in runs[1].message
    diverged = rb.load(runs[1].path)
    assert diverged.runs.iloc[0]["state"] == "diverged" and diverged.scalars["epoch"].tolist() == [0]
    rb.train(stable, tmp_path / "solo")
    assert_same_records(tmp_path / "cohort", tmp_path / "solo", stable.run_id(), rtol=1e-5, atol=1e-6)


def test_bad_input_stops_before_training_and_touches_nothing(tmp_path):
    results = tmp_path / "results"
    good = small_config()
    rb.train(good, results)
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    with pytest.raises(rb.ConfigError, match="train.batch_size: 512 is larger than the training set"):
        rb.train([small_config(**{"train.seed": 3}), small_config(**{"train.batch_size": 512})], results)
    with pytest.raises(rb.ConfigError, match="record.layers: no weight matrix matches 'hidden.7'"):
        rb.train(small_config(**{"record.layers": ["hidden.0", "hidden.7"]}), results)
    with pytest.raises(rb.DataError):
        rb.train(small_config(**{"data.name": "cifar10"}), results)
    assert sorted(p.relative_to(results) for p in results.rglob("*")) == before


def test_regression_twolayer_on_synthetic_teacher(tmp_path):
    config = rb.RunConfig.from_dict(
        {
            "model": "twolayer-64",
            "data": {"name": "synthetic", "train_size": 128, "test_size": 64, "synthetic": {"dim": 8, "classes": 0}},
            "loss": "mse_scalar",
            "optimizer": {"lr": 0.01, "weight_decay": 1e-3},
            "train": {"batch_size": 16, "epochs": 3},
        }
    )
    run = rb.train(config, tmp_path)
    loaded = rb.load(run.path)
    assert run.state == "done" and loaded.scalars["train_acc"].isna().all()
    assert loaded.scalars["train_loss"].iloc[-1] < loaded.scalars["train_loss"].iloc[0]
    assert set(loaded.layers["layer"]) == {"V", "a"}
    assert loaded.layers[loaded.layers.layer == "V"]["counted"].all()


def test_a_cohort_that_fails_before_its_first_record_is_marked_failed(tmp_path, monkeypatch):
    from rankbias.training import engine

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(engine, "build_model", out_of_memory)
    run = rb.train(small_config(), tmp_path)
    assert run.state == "failed" and "out of memory" in run.message
    assert rb.load(tmp_path).runs.iloc[0]["state"] == "failed"


def test_evaluation_in_chunks_equals_one_pass(tmp_path, monkeypatch):
    from rankbias.training import engine

    config = small_config(**{"train.epochs": 1})
    rb.train(config, tmp_path / "one")
    monkeypatch.setattr(engine, "EVAL_FLOATS", 64 * 37)  # chunks of 37 samples, the last one short
    rb.train(config, tmp_path / "chunked")
    assert_same_records(tmp_path / "one", tmp_path / "chunked", config.run_id(), rtol=1e-5, atol=1e-6)


def test_step_norms_record_the_last_steps_of_each_recorded_epoch(tmp_path):
    config = small_config(**{"record.step_norms": 3, "record.every": 2, "train.epochs": 3, "optimizer.momentum": 0.0})
    loaded = rb.load(rb.train(config, tmp_path).path)
    norms = loaded.step_norms
    steps = loaded.scalars.set_index("epoch")["step"]  # 0, 16, 24 (8 steps an epoch)
    assert sorted(norms["epoch"].unique()) == [0, 2, 3]
    for epoch, group in norms.groupby("epoch"):
        expected = [0] if epoch == 0 else list(range(steps[epoch] - 3, steps[epoch] + 1))
        assert sorted(group["step"].unique()) == expected
        assert set(group["layer"]) == {"hidden.0", "hidden.1", "out"}
    # the norm after the record's last step is the record's own ‖W‖_F
    last = norms[norms.step == steps[3]].set_index("layer")["fro_norm"]
    recorded = loaded.layers[loaded.layers.epoch == 3].set_index("layer")["fro_norm"]
    for layer in last.index:
        assert last[layer] == pytest.approx(recorded[layer], rel=1e-6)
    # plain SGD with weight decay: the norm changes every step
    assert norms[norms.epoch == 3].groupby("layer")["fro_norm"].nunique().eq(4).all()


def test_a_run_killed_after_its_first_checkpoint_joins_a_cohort_of_new_runs(tmp_path, monkeypatch):
    """A sweep killed between two members' epoch-0 checkpoints leaves one run resumable at epoch 0
    and one new: both group at epoch 0 and train together; the records equal uninterrupted ones."""
    first, second = small_config(**{"train.seed": 5}), small_config(**{"train.seed": 6})
    rb.train([first, second], tmp_path / "straight")
    original = kill_in_epoch(monkeypatch, 1)
    with pytest.raises(Killed):
        rb.train(first, tmp_path / "killed")
    assert RunStore(tmp_path / "killed", first.run_id()).load_checkpoint()["epoch"] == 0
    monkeypatch.setattr(CohortTrainer, "_train_epoch", original)
    runs = rb.train([first, second], tmp_path / "killed")
    assert [r.state for r in runs] == ["done", "done"]
    for config in (first, second):
        assert_same_records(tmp_path / "straight", tmp_path / "killed", config.run_id(), rtol=1e-4, atol=1e-5)


def test_cuda_graph_is_refused_where_the_step_cannot_be_captured(tmp_path):
    config = small_config()
    data = load_dataset(config.data)
    with pytest.raises(rb.ConfigError, match="cuda_graph: needs a CUDA device"):
        CohortTrainer(
            [Member(config, RunStore(tmp_path, config.run_id()))], data, EngineOptions(device="cpu", cuda_graph=True)
        )
    trainer = CohortTrainer([Member(config, RunStore(tmp_path, config.run_id()))], data, EngineOptions(device="cpu"))
    assert trainer.graphed is None  # auto: eager on a CPU
    assert not list(tmp_path.iterdir())  # nothing written before run()


def test_optimizer_version_changes_only_with_its_factors():
    """A captured CUDA graph holds the optimizer's per-member factors: the engine captures again
    when ``CohortSGD.version`` changes, so it must change with new learning rates or members
    and only then (an unchanged lr every epoch must not force a capture)."""
    from rankbias.training.optimizer import CohortSGD

    params = [torch.zeros(3, 4, requires_grad=True)]
    sgd = CohortSGD(params, lr=[0.1, 0.2, 0.3], momentum=[0.9] * 3, weight_decay=[0.0] * 3, nesterov=[False] * 3)
    sgd.set_lr([0.1, 0.2, 0.3])
    assert sgd.version == 0
    sgd.set_lr([0.01, 0.2, 0.3])
    assert sgd.version == 1 and sgd.lr.tolist() == pytest.approx([0.01, 0.2, 0.3])
    sgd.select(torch.tensor([0, 2]))
    assert sgd.version == 2 and sgd.lr.tolist() == pytest.approx([0.01, 0.3])


def test_runs_with_and_without_momentum_train_in_separate_cohorts():
    # the fused update computes the two forms differently: mixed, a run would not replay its solo run
    base = small_config()
    other_momentum = base.replace(**{"optimizer.momentum": 0.5, "optimizer.lr": 0.2, "train.seed": 3})
    plain_sgd = base.replace(**{"optimizer.momentum": 0.0})
    assert base.cohort_key() == other_momentum.cohort_key() != plain_sgd.cohort_key()
