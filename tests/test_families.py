"""Every family trains as a cohort: each member's records equal its solo run's bit for bit
(augmentation and dropout drawn from the member's own generator), and a few epochs lower the loss.

On a CPU at one torch thread (the training processes' default) a member's arithmetic does not
depend on its cohort (``test_models.py``): convolution and attention networks run member by
member there, since their grouped kernels sum in another order than a plain network's, and tiny
batch-normalized nets are chaotic in float32 (differences of 1e-7 grow to 1e-2 within two epochs).
"""

import numpy as np
import pandas as pd
import pytest

import rankbias as rb

from .test_engine import LAYER_COLUMNS, SCALAR_COLUMNS, records

FAMILIES = {
    "convnet": {"name": "convnet-1-8"},
    "resnet18": {"name": "resnet18", "width": 4},
    "vgg16": {"name": "vgg16", "width": 4},
    "vit": {"name": "vit", "width": 16, "dropout": 0.1},
}


def family_configs(model: dict) -> list[rb.RunConfig]:
    base = rb.RunConfig.from_dict(
        {
            "model": model,
            "data": {"name": "digits", "train_size": 64, "test_size": 32},
            "optimizer": {"lr": 0.02, "momentum": 0.5, "weight_decay": 5e-3},
            "train": {"batch_size": 16, "epochs": 2},
            "augment": {"crop": 1, "flip": True, "rotate": 10.0},
        }
    )
    return [base, base.replace(**{"train.seed": 1, "optimizer.lr": 0.01, "optimizer.momentum": 0.2})]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cohort_members_equal_their_solo_runs(family, tmp_path):
    configs = family_configs(FAMILIES[family])
    cohort = rb.train(configs, tmp_path / "cohort")
    solo = [rb.train(c, tmp_path / "solo") for c in configs]
    assert [r.state for r in cohort + solo] == ["done"] * 4
    for config in configs:
        (sa, la, spa), (sb, lb, spb) = (records(tmp_path / kind, config.run_id()) for kind in ("cohort", "solo"))
        pd.testing.assert_frame_equal(
            sa[SCALAR_COLUMNS].reset_index(drop=True), sb[SCALAR_COLUMNS].reset_index(drop=True), check_exact=True
        )
        pd.testing.assert_frame_equal(
            la[LAYER_COLUMNS].reset_index(drop=True), lb[LAYER_COLUMNS].reset_index(drop=True), check_exact=True
        )
        np.testing.assert_array_equal(spa, spb)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_few_epochs_lower_the_loss_and_records_cover_every_counted_matrix(family, tmp_path):
    config = rb.RunConfig.from_dict(
        {
            "model": FAMILIES[family],
            "data": {"name": "digits", "train_size": 256, "test_size": 32},
            "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
            "train": {"batch_size": 32, "epochs": 3},
        }
    )
    records = rb.load(rb.train(config, tmp_path).path)
    scalars = records.scalars.set_index("epoch")
    assert scalars.loc[3, "batch_loss"] < scalars.loc[1, "batch_loss"]  # the mini-batch loss, in train mode
    counted = records.layers[(records.layers.epoch == 3) & records.layers.counted]
    assert len(counted) > 0 and (counted["m_l"] >= 1).all() and scalars.loc[3, "avg_rank"] > 0


def test_record_layers_takes_names_and_glob_patterns(tmp_path):
    config = rb.RunConfig.from_dict(
        {
            "model": {"name": "resnet18", "width": 4},
            "data": {"name": "digits", "train_size": 64, "test_size": 16},
            "train": {"batch_size": 32, "epochs": 1},
            "record": {"layers": ["conv1", "layer4.*.conv?"]},
        }
    )
    records = rb.load(rb.train(config, tmp_path).path)
    counted = records.layers[(records.layers.epoch == 1) & records.layers.counted]
    assert sorted(counted["layer"]) == ["conv1", "layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
    assert records.scalars.set_index("epoch").loc[1, "avg_rank"] == pytest.approx(counted["eps_rank"].mean())
    with pytest.raises(rb.ConfigError, match="record.layers: no weight matrix matches 'layer5.*'"):
        rb.train(config.replace(**{"record.layers": ["conv1", "layer5.*"]}), tmp_path)


def test_pad_and_resize_give_the_models_their_image_size():
    from rankbias.data import load_dataset

    plain = load_dataset(rb.RunConfig.from_dict({"data": {"name": "digits", "standardize": "none"}}).data)
    padded = load_dataset(rb.RunConfig.from_dict({"data": {"name": "digits", "standardize": "none", "pad": 2}}).data)
    assert padded.input_shape == (1, 12, 12)
    assert padded.x_train[:, :, :2].abs().max() == 0 and padded.x_train[:, :, :, -2:].abs().max() == 0  # zero border
    assert padded.x_train[:, :, 2:-2, 2:-2].equal(plain.x_train)
    resized = load_dataset(rb.RunConfig.from_dict({"data": {"name": "digits", "resize": 32}}).data)
    assert resized.input_shape == (1, 32, 32) and len(resized.x_train) == len(plain.x_train)
    assert abs(float(resized.x_train.mean())) < 1e-4  # standardized after resizing
