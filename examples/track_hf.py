"""A Hugging Face ``Trainer`` run, recorded by rankbias (docs/track.md). Offline, seconds on a CPU.

A two-layer Vision Transformer built from a config (``ViTConfig``, no weights downloaded) on
scikit-learn's bundled 8×8 digits (2×2 patches), trained by the Trainer with AdamW and weight
decay at a constant learning rate. ``RankbiasCallback`` records every weight matrix (the patch
embedding as a convolution, the attention's query, key, value and output projections, the
feed-forward layers, the classifier) after each epoch and its evaluation into ``results/<run_id>/``, with
the logged ``loss``, ``eval_loss``, ``eval_accuracy`` as train_loss, test_loss, test_acc. The
Trainer saves a checkpoint each epoch, and a run started again goes on from the last one: the
records keep each epoch once. Needs ``pip install rankbias[hf]``.

    python examples/track_hf.py [--epochs 10] [--weight-decay 0.05] [--results results]
    rankbias show results/<run_id>          # ranks per epoch
    rankbias report results/                # figures, as for runs of `rankbias run`
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to download: the model is built from its config
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from sklearn.datasets import load_digits
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification
from transformers.trainer_utils import get_last_checkpoint

from rankbias.integrations.hf import RankbiasCallback


class Digits(torch.utils.data.Dataset):
    def __init__(self, pixels, labels):
        self.images = torch.tensor(pixels, dtype=torch.float32).view(-1, 1, 8, 8) / 16
        self.labels = torch.tensor(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--results", default="results")
    parser.add_argument("--checkpoints", default=None, help="the Trainer's output_dir (default: ../checkpoints)")
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    torch.manual_seed(0)
    config = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=10)  # fmt: skip
    model = ViTForImageClassification(config)
    checkpoints = args.checkpoints or os.path.join(os.path.dirname(os.path.abspath(args.results)), "checkpoints")
    training = TrainingArguments(
        output_dir=checkpoints, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, weight_decay=args.weight_decay, optim="adamw_torch",
        lr_scheduler_type="constant", eval_strategy="epoch", logging_strategy="epoch", save_strategy="epoch",
        save_total_limit=1, report_to="none", disable_tqdm=True, use_cpu=True, seed=0,
    )  # fmt: skip
    recorder = RankbiasCallback(args.results, name="track-hf", config={"data.name": "digits"})
    trainer = Trainer(model=model, args=training, train_dataset=Digits(x[:1500], y[:1500]), compute_metrics=accuracy,
                      eval_dataset=Digits(x[1500:], y[1500:]), callbacks=[recorder])  # fmt: skip
    last = get_last_checkpoint(checkpoints) if os.path.isdir(checkpoints) else None
    trainer.train(resume_from_checkpoint=last)  # go on from the last checkpoint, if there is one
    print(f"recorded {recorder.path}: rankbias show {recorder.path}")


if __name__ == "__main__":
    main()
