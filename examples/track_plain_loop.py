"""Your own model and training loop, recorded by rankbias (docs/track.md). Offline, seconds on a CPU.

A small convolution + attention network on scikit-learn's bundled 8×8 digits, trained by a plain
PyTorch loop with SGD, momentum and weight decay. ``rb.Tracker`` records every weight matrix's
singular values after each epoch into ``results/<run_id>/``; the loop saves its own checkpoint, so
a run that is killed goes on from its last epoch when started again, and the records keep each
epoch once. Then:

    python examples/track_plain_loop.py [--epochs 20] [--weight-decay 5e-3] [--results results]
    rankbias show results/<run_id>          # ranks per epoch
    rankbias report results/                # figures, as for runs of `rankbias run`
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

import rankbias as rb


class SmallNet(nn.Module):
    def __init__(self, channels: int = 16, hidden: int = 64):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.attn = nn.MultiheadAttention(channels, 2, batch_first=True)
        self.fc1 = nn.Linear(channels * 64, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):  # x: (batch, 1, 8, 8)
        h = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)  # (batch, 64 positions, channels)
        h = h + self.attn(h, h, h)[0]
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--weight-decay", type=float, default=5e-3)
    parser.add_argument("--results", default="results")
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16, torch.tensor(y)
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]
    torch.manual_seed(0)
    model = SmallNet()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    # the settings under rankbias's key names: the figures and theory checks read them as μ, B, λ
    settings = {"optimizer": {"lr": args.lr, "momentum": 0.9, "weight_decay": args.weight_decay},
                "train.batch_size": args.batch_size, "data.name": "digits"}  # fmt: skip
    with rb.Tracker(model, args.results, name="track-plain-loop", config=settings, input_shape=(1, 8, 8)) as tracker:
        checkpoint = Path(tracker.path) / "user-checkpoint.pt"  # the loop's own: rankbias stores no weights
        first, step = 0, 0
        if checkpoint.exists():  # killed earlier: go on from the loop's last saved epoch
            state = torch.load(checkpoint)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            first, step = state["epoch"] + 1, state["step"]
        generator = torch.Generator().manual_seed(first)
        for epoch in range(first, args.epochs + 1):
            model.train()
            for batch in torch.randperm(len(x_train), generator=generator).split(args.batch_size) if epoch else []:
                loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
            model.eval()
            with torch.no_grad():
                train_out, test_out = model(x_train), model(x_test)
            tracker.record(
                epoch=epoch, step=step, lr=args.lr,
                train_loss=nn.functional.cross_entropy(train_out, y_train),
                train_acc=(train_out.argmax(1) == y_train).float().mean(),
                test_loss=nn.functional.cross_entropy(test_out, y_test),
                test_acc=(test_out.argmax(1) == y_test).float().mean(),
            )  # fmt: skip
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "step": step}, checkpoint)
    print(f"recorded {tracker.path}: rankbias show {tracker.path}")


if __name__ == "__main__":
    main()
