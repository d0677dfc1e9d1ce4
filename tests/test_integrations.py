"""The Lightning and Hugging Face callbacks: a real fit / train() recorded as a run that every reader reads."""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import rankbias as rb
from rankbias.cli import main
from rankbias.errors import ConfigError
from rankbias.integrations import scalar_name, scalars, settings

lightning = pytest.importorskip("lightning")
transformers = pytest.importorskip("transformers")

from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from rankbias.integrations.hf import RankbiasCallback as HFCallback
from rankbias.integrations.lightning import RankbiasCallback

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")


def test_logged_names_map_onto_rankbias_scalars():
    assert [scalar_name(n) for n in ("val_loss", "val/acc", "eval_accuracy", "loss", "train_loss_step")] == [
        "test_loss", "test_acc", "test_acc", "train_loss", "batch_loss"]  # fmt: skip
    assert scalar_name("learning_rate") == "lr" and scalar_name("grad_norm") is None
    logged = {"test_loss": torch.tensor(0.5), "val_loss": 0.7, "train_loss": 1.0, "train_loss_epoch": 1.0,
              "grad_norm": np.float32(2.0), "epoch": 3, "per_class": torch.ones(3), "note": "text"}  # fmt: skip
    assert scalars(logged) == {"test_loss": 0.5, "train_loss": 1.0, "val_loss": 0.7, "grad_norm": 2.0}
    hparams = {"lr": 0.1, "optimizer": "sgd", "record": 1, "fn": lambda x: x, "sizes": [1, 2]}
    merged = settings(hparams, {"optimizer.lr": 0.2})
    assert merged == {"lr": 0.1, "optimizer.name": "sgd", "hparams.record": 1, "fn": "function",
                      "sizes": (1, 2), "optimizer.lr": 0.2}  # fmt: skip
    with pytest.raises(ConfigError, match="every_n_steps: must be a whole number"):
        RankbiasCallback(every_n_steps=0)


def test_only_global_rank_zero_records(tmp_path):
    callback = RankbiasCallback(tmp_path)
    callback.on_train_start(SimpleNamespace(is_global_zero=False), nn.Linear(2, 2))
    callback.on_train_epoch_end(SimpleNamespace(is_global_zero=False, current_epoch=0), nn.Linear(2, 2))
    hf = HFCallback(tmp_path)
    state = SimpleNamespace(is_world_process_zero=False, global_step=0, epoch=1.0)
    hf.on_train_begin(None, state, None, model=nn.Linear(2, 2))
    hf.on_epoch_end(None, state, None)
    hf.on_train_end(None, state, None)
    assert callback.tracker is None and hf.tracker is None and not any(tmp_path.iterdir())


# -- Lightning -------------------------------------------------------------------------------------
class LitNet(lightning.LightningModule):
    """A convolution, an attention and two linear layers, logging train_loss, val_loss, val_acc."""

    def __init__(self, lr=0.05, weight_decay=5e-3, channels=8, fail_at=None):
        super().__init__()
        self.save_hyperparameters()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.attn = nn.MultiheadAttention(channels, 2, batch_first=True)
        self.fc1 = nn.Linear(channels * 64, 32)
        self.fc2 = nn.Linear(32, 10)
        self.example_input_array = torch.zeros(1, 1, 8, 8)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)
        h = h + self.attn(h, h, h)[0]
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))

    def training_step(self, batch, batch_idx):
        if self.current_epoch == self.hparams.fail_at:
            raise RuntimeError("diverged")
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("weight_norm", sum(p.norm() for p in self.parameters()), on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        self.log("val_loss", nn.functional.cross_entropy(out, y))
        self.log("val_acc", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        hp = self.hparams
        return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)


def loaders():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 1, 8, 8, generator=g), torch.randint(0, 10, (128,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32), DataLoader(TensorDataset(x[:64], y[:64]), batch_size=64)


def fit(results, epochs, callbacks=(), ckpt_path=None, **module):
    torch.manual_seed(0)
    model = LitNet(**module)
    recorder = next((c for c in callbacks if isinstance(c, RankbiasCallback)), None) or RankbiasCallback(results)
    trainer = lightning.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), num_sanity_val_steps=0,
        callbacks=[recorder, *[c for c in callbacks if c is not recorder]],
    )  # fmt: skip
    trainer.fit(model, *loaders(), ckpt_path=ckpt_path)
    return recorder


@pytest.fixture(scope="module")
def lit(tmp_path_factory):
    root = tmp_path_factory.mktemp("lightning")
    recorder = fit(root, 3, [RankbiasCallback(root, name="lit", config={"data.name": "noise"})])
    return root, recorder


def test_a_lightning_fit_is_recorded_as_a_run(lit):
    root, _ = lit
    records = rb.load(root)
    run = records.runs.iloc[0]
    assert run["state"] == "done" and run["state_epoch"] == 3 and run["model.name"] == "LitNet"
    assert run["tracked.name"] == "lit" and run["data.name"] == "noise" and run["channels"] == 8  # hparams
    assert (run["optimizer.lr"], run["optimizer.momentum"], run["optimizer.weight_decay"]) == (0.05, 0.9, 5e-3)
    assert run["optimizer.name"] == "SGD" and run["train.batch_size"] == 32
    scalars_ = records.scalars.set_index("epoch")
    assert scalars_.index.tolist() == [0, 1, 2, 3] and scalars_["step"].tolist() == [0, 4, 8, 12]
    logged = scalars_.loc[1:, ["train_loss", "test_loss", "test_acc", "batch_loss", "lr"]]
    assert logged.notna().all().all() and scalars_.at[0, "lr"] == 0.05 and np.isnan(scalars_.at[0, "test_loss"])
    names = ["conv", "attn.q", "attn.k", "attn.v", "attn.out_proj", "fc1", "fc2"]
    last = records.layers[records.layers["epoch"] == 3].sort_values("index")
    assert last["layer"].tolist() == names and last.set_index("layer").at["attn.q", "m_l"] == 64
    assert sorted(records.metrics["name"].unique()) == ["weight_norm"] and len(records.metrics) == 3
    # the stored spectra are the trained module's
    expected = rb.spectra(recorder_model(root, 3)).set_index("name")
    spectra = records.spectra[records.spectra["epoch"] == 3].set_index("layer")["sv"]
    np.testing.assert_allclose(spectra["fc1"], expected.at["fc1", "sv"], rtol=1e-5, atol=1e-6)


def recorder_model(root, epochs):
    """The module of a plain fit of ``epochs`` with no recorder (the same seed and data)."""
    torch.manual_seed(0)
    model = LitNet()
    trainer = lightning.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, *loaders())
    return model


def test_every_reader_reads_the_lightning_run(lit):
    root, recorder = lit
    runner = CliRunner()
    report = runner.invoke(main, ["report", str(root)])
    assert report.exit_code == 0, report.output
    page = (root / "report.html").read_text()
    assert page.count("<img") >= 3 and "could not be drawn" not in page and recorder.path.name in page
    shown = runner.invoke(main, ["show", str(recorder.path)])
    assert shown.exit_code == 0 and "done at epoch 3" in shown.output and "attn.q" in shown.output


def test_lightning_records_every_n_steps_and_a_failed_fit(tmp_path):
    recorder = fit(tmp_path / "steps", 2, [RankbiasCallback(tmp_path / "steps", every_n_steps=3)])
    scalars_ = rb.load(tmp_path / "steps").scalars
    # 8 steps: records at steps 0, 3, 6 as 0, 1, 2, and the last state (step 8) as 3
    assert scalars_["epoch"].tolist() == [0, 1, 2, 3] and scalars_["step"].tolist() == [0, 3, 6, 8]
    assert recorder.tracker is None
    with pytest.raises(RuntimeError, match="diverged"):
        fit(tmp_path / "failed", 3, fail_at=1)
    records = rb.load(tmp_path / "failed")
    assert records.runs["state"].tolist() == ["failed"] and "RuntimeError: diverged" in records.runs["message"].iloc[0]
    assert records.scalars["epoch"].tolist() == [0, 1]


def test_a_lightning_fit_resumed_from_its_checkpoint_keeps_each_epoch_once(tmp_path):
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    first = fit(tmp_path / "results", 3, [RankbiasCallback(tmp_path / "results"), saver])
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    # from the end of epoch 3 on to 5: records 4 and 5 appended to the same run
    again = fit(tmp_path / "results", 5, ckpt_path=tmp_path / "ckpt" / "epoch=2.ckpt")
    assert again.path == first.path
    assert rb.load(tmp_path / "results").scalars["epoch"].tolist() == [0, 1, 2, 3, 4, 5]
    # from the end of epoch 1 again: records 2 .. 5 replaced, each epoch once, as an uninterrupted fit's
    fit(tmp_path / "results", 5, ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt")
    records = rb.load(tmp_path / "results")
    assert records.scalars["epoch"].tolist() == [0, 1, 2, 3, 4, 5] and records.runs["state"].tolist() == ["done"]
    assert records.layers.groupby("epoch").size().eq(7).all()
    fit(tmp_path / "plain", 5)
    plain = rb.load(tmp_path / "plain")
    resumed, uninterrupted = (np.concatenate(t.spectra.sort_values(["epoch", "layer"])["sv"].tolist())
                              for t in (records, plain))  # fmt: skip
    np.testing.assert_allclose(resumed, uninterrupted, rtol=1e-5, atol=1e-6)


def test_the_lightning_example_runs_and_goes_on_where_it_stopped(tmp_path):
    for epochs in (1, 2):
        subprocess.run([sys.executable, os.path.join(EXAMPLES, "track_lightning.py"), "--epochs", str(epochs),
                        "--results", str(tmp_path / "results")], check=True, capture_output=True)  # fmt: skip
    records = rb.load(tmp_path / "results")
    assert records.scalars["epoch"].tolist() == [0, 1, 2] and records.runs["data.name"].tolist() == ["digits"]
    assert records.scalars["test_acc"].iloc[-1] > 0.5 and records.runs["optimizer.momentum"].tolist() == [0.9]


# -- Hugging Face ----------------------------------------------------------------------------------
class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(5, 30, (n, 8), generator=g)
        self.y = (self.x[:, 0] > 17).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.y[i]}


def accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    args = transformers.TrainingArguments(
        output_dir=str(root / "out"), num_train_epochs=3, per_device_train_batch_size=16, gradient_accumulation_steps=2,
        learning_rate=1e-3, weight_decay=0.01, eval_strategy="epoch", logging_strategy="epoch", save_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
    )  # fmt: skip
    recorder = HFCallback(root / "results", name="bert")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(128, 0), eval_dataset=Tokens(64, 1),
                                   compute_metrics=accuracy, callbacks=[recorder])  # fmt: skip
    trainer.train()
    return root / "results", recorder


def test_a_hugging_face_trainer_is_recorded_as_a_run(hf):
    root, recorder = hf
    records = rb.load(root)
    run = records.runs.iloc[0]
    assert run["state"] == "done" and run["state_epoch"] == 3 and run["model.name"] == "BertForSequenceClassification"
    assert run["model.hidden_size"] == 16 and run["model.num_hidden_layers"] == 2 and run["model.model_type"] == "bert"
    assert (run["optimizer.lr"], run["optimizer.weight_decay"], run["optimizer.name"]) == (1e-3, 0.01, "AdamW")
    assert run["train.batch_size"] == 32 and run["trainer.lr_scheduler_type"] == "linear"  # 16 × 2 accumulated
    scalars_ = records.scalars.set_index("epoch")
    assert scalars_.index.tolist() == [0, 1, 2, 3] and scalars_["step"].tolist() == [0, 4, 8, 12]
    assert scalars_.loc[1:, ["train_loss", "test_loss", "test_acc", "lr"]].notna().all().all()
    assert scalars_["lr"].is_monotonic_decreasing and scalars_.at[0, "lr"] == 1e-3  # the linear schedule
    layers = set(records.layers["layer"])
    assert {"bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.value",
            "bert.encoder.layer.0.attention.output.dense", "classifier"} <= layers  # fmt: skip
    assert records.layers.groupby("epoch").size().eq(14).all()
    assert {"grad_norm", "eval_runtime"} <= set(records.metrics["name"])
    assert "train_runtime" not in set(records.metrics["name"])  # the end of train()'s summary is no record's
    report = CliRunner().invoke(main, ["report", str(root)])
    assert report.exit_code == 0, report.output
    page = (root / "report.html").read_text()
    assert page.count("<img") >= 3 and "could not be drawn" not in page and recorder.path.name in page


def test_the_hf_example_runs_and_goes_on_from_its_checkpoint(tmp_path):
    for epochs in (1, 2):
        subprocess.run([sys.executable, os.path.join(EXAMPLES, "track_hf.py"), "--epochs", str(epochs),
                        "--results", str(tmp_path / "results")], check=True, capture_output=True)  # fmt: skip
    records = rb.load(tmp_path / "results")
    assert records.scalars["epoch"].tolist() == [0, 1, 2] and records.runs["state"].tolist() == ["done"]
    assert records.scalars["step"].tolist() == [0, 47, 94] and records.runs["data.name"].tolist() == ["digits"]
    layers = set(records.layers["layer"])
    assert {"vit.embeddings.patch_embeddings.projection", "vit.layers.0.attention.q_proj", "classifier"} <= layers
