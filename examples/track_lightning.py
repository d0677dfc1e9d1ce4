"""A PyTorch Lightning training run, recorded by rankbias (docs/track.md). Offline, seconds on a CPU.

The convolution + attention network of examples/track_plain_loop.py as a LightningModule on
scikit-learn's bundled 8×8 digits, SGD with momentum and weight decay. ``RankbiasCallback`` records
every weight matrix's singular values after each epoch (after its validation) into
``results/<run_id>/``, with the logged ``train_loss``, ``val_loss``, ``val_acc`` as train_loss,
test_loss, test_acc. Lightning saves its last checkpoint, and a run started again goes on from it
(``ckpt_path="last"``): the records keep each epoch once. Needs ``pip install rankbias[lightning]``.

    python examples/track_lightning.py [--epochs 20] [--weight-decay 5e-3] [--results results]
    rankbias show results/<run_id>          # ranks per epoch
    rankbias report results/                # figures, as for runs of `rankbias run`
"""

from __future__ import annotations

import argparse
import os

import lightning
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rankbias.integrations.lightning import RankbiasCallback


class SmallNet(lightning.LightningModule):
    def __init__(self, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-3, channels: int = 16):
        super().__init__()
        self.save_hyperparameters()  # recorded as the run's config, with optimizer.* read from the optimizer
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.attn = nn.MultiheadAttention(channels, 2, batch_first=True)
        self.fc1 = nn.Linear(channels * 64, 64)
        self.fc2 = nn.Linear(64, 10)
        self.example_input_array = torch.zeros(1, 1, 8, 8)  # gives m_l, each layer's input patches (GSGP)

    def forward(self, x):  # x: (batch, 1, 8, 8)
        h = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)  # (batch, 64 positions, channels)
        h = h + self.attn(h, h, h)[0]
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        self.log("val_loss", nn.functional.cross_entropy(out, y))
        self.log("val_acc", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        hp = self.hparams
        return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--weight-decay", type=float, default=5e-3)
    parser.add_argument("--results", default="results")
    parser.add_argument("--checkpoints", default=None, help="Lightning's checkpoints (default: results/../checkpoints)")
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16, torch.tensor(y)
    train = DataLoader(TensorDataset(x[:1500], y[:1500]), batch_size=args.batch_size, shuffle=True)
    test = DataLoader(TensorDataset(x[1500:], y[1500:]), batch_size=256)
    lightning.seed_everything(0, verbose=False)
    model = SmallNet(lr=args.lr, weight_decay=args.weight_decay)
    checkpoints = args.checkpoints or os.path.join(os.path.dirname(os.path.abspath(args.results)), "checkpoints")
    recorder = RankbiasCallback(args.results, name="track-lightning", config={"data.name": "digits"})
    saver = ModelCheckpoint(dirpath=checkpoints, filename="track-lightning", save_last=True)
    trainer = lightning.Trainer(
        max_epochs=args.epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[recorder, saver],
    )  # fmt: skip
    trainer.fit(model, train, test, ckpt_path="last")  # "last": go on from the last checkpoint, if there is one
    print(f"recorded {recorder.path}: rankbias show {recorder.path}")


if __name__ == "__main__":
    main()
