"""A Hugging Face ``transformers`` callback that records a ``Trainer.train`` as one rankbias run (docs/track.md).

>>> from rankbias.integrations.hf import RankbiasCallback
>>> trainer = transformers.Trainer(model, args, train_dataset=..., eval_dataset=...,
...                                callbacks=[RankbiasCallback("results", name="my-bert")])
>>> trainer.train()                        # results/<run_id>/: rb.load, rankbias show/report ...

``pip install rankbias[hf]``. The run is the model's (every ``nn.Linear``: a BERT's query, key,
value and output projections included), with the model's config and the Trainer's settings as its
config; records on the main process only (``state.is_world_process_zero``).
"""

from __future__ import annotations

from pathlib import Path

try:
    from transformers import TrainerCallback
except ImportError as error:  # pragma: no cover - the extra is not installed
    raise ImportError(f"{error}: rankbias.integrations.hf needs `pip install rankbias[hf]`") from None

from ..track import Tracker
from . import Recording, current_lr, final_index, optimizer_settings, scalars, settings

# the model config's keys that say nothing about the run (labels, bookkeeping)
UNSTORED = ("id2label", "label2id", "transformers_version", "architectures")
TRAINER_KEYS = ("lr_scheduler_type", "warmup_steps", "warmup_ratio", "optim", "max_grad_norm", "seed")
SUMMARY = "train_runtime"  # a key of the log at the end of train(): the whole run's means, not a record's


class RankbiasCallback(Recording, TrainerCallback):
    """Records the model's weight matrices during ``Trainer.train`` with an ``rb.Tracker``.

    ``results``, ``name`` (default: the model's class name), ``layers``, ``counted``, ``eps``,
    ``norm``, ``input_shape`` are the tracker's. The run's config: the model's config (its
    non-default values, ``config.to_diff_dict()``) under ``model.``, a few of the Trainer's
    arguments under ``trainer.`` (``lr_scheduler_type``, ``warmup_steps``, ``optim``, ``seed`` ...),
    rankbias's keys (``optimizer.name``, ``optimizer.lr``, ``optimizer.weight_decay`` and, for SGD,
    ``optimizer.momentum`` read from the optimizer, else ``args.learning_rate`` and
    ``args.weight_decay``; ``train.batch_size`` = ``per_device_train_batch_size`` × devices ×
    ``gradient_accumulation_steps`` × processes, the samples of one optimizer step), then
    ``config`` (wins).

    Records at the end of every ``every_n_epochs``-th epoch (epoch 0: the weights before training),
    or, with ``every_n_steps``, after every N-th optimizer step as record ``global_step // N``, and
    once more at the end when the last state was not recorded. A record is written after the
    logging and evaluation that follow its epoch or step, so it carries them: the latest value of
    each logged metric (``loss`` → ``train_loss``, ``eval_loss`` → ``test_loss``,
    ``eval_accuracy`` → ``test_acc``, ``learning_rate`` → ``lr``; others such as ``grad_norm`` in
    ``metrics``). ``train(resume_from_checkpoint=...)`` records from the checkpoint's epoch on,
    replacing any records at or after it. The Trainer has no hook for an exception: a ``train()``
    that raises leaves the run ``pending`` (as a killed process does) until the callback's next
    ``train()`` or :meth:`close`.
    """

    def __init__(self, results: str | Path = "results", **options):
        Recording.__init__(self, results, **options)
        self.logged: dict = {}
        self.pending: tuple[int, int] | None = None  # (epoch, step) of a record waiting for its logs
        self.optimizer = None

    # -- the run -----------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self.close("failed", "a previous train() ended without on_train_end")
        model_config = getattr(model, "config", None)
        described = model_config.to_diff_dict() if hasattr(model_config, "to_diff_dict") else {}
        described = {k: v for k, v in described.items() if k not in UNSTORED and not k.startswith("_")}
        trainer = {k: getattr(args, k) for k in TRAINER_KEYS if getattr(args, k, None) is not None}
        read = {"optimizer.lr": float(args.learning_rate), "optimizer.weight_decay": float(args.weight_decay)}
        read |= optimizer_settings(optimizer) if optimizer is not None else {}  # an optimizer of the user's
        per_step = getattr(args, "train_batch_size", args.per_device_train_batch_size)  # × GPUs of DataParallel
        batch = per_step * args.gradient_accumulation_steps * max(1, args.world_size)
        read["train.batch_size"] = int(batch)
        self.tracker = Tracker(model, self.results, name=self.name or type(model).__name__,
                               config=settings({"model": described, "trainer": trainer}, read, self.config),
                               input_shape=self.input_shape, **self.options)  # fmt: skip
        self.optimizer, self.logged, self.pending, self.recorded_step = optimizer, {}, None, None
        self.path = self.tracker.path
        if state.global_step == 0:
            self._record(0, 0)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.tracker is None or self.every_n_steps:
            return
        epoch = round(state.epoch or 0)
        if epoch % self.every_n_epochs == 0:
            self.pending = (epoch, state.global_step)  # written once this epoch's logs and evaluation are in

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.tracker is None or not self.every_n_steps or step % self.every_n_steps:
            return
        self.pending = (step // self.every_n_steps, step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.tracker is None or not logs:
            return
        if SUMMARY in logs:  # the end of train(): nothing of it is a record's
            self._flush()
            return
        self.logged |= logs

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.tracker is None:
            return
        self.logged |= metrics or {}
        self._flush()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._flush()

    def on_step_begin(self, args, state, control, **kwargs):
        self._flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.tracker is None:
            return
        self._flush()
        if state.global_step != self.recorded_step:  # the weights changed since the last record
            done, n = (state.global_step, self.every_n_steps) if self.every_n_steps else (state.epoch or 0, 1)
            index = final_index(done, n)
            if index > self.tracker.last:
                self._record(index, state.global_step)
        self.close()

    def close(self, state: str = "done", message: str | None = None) -> None:
        """End the run (``done``, or ``failed`` with ``message``); nothing when none is open."""
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            tracker.close(state, message)

    # -- one record ------------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.tracker is not None and self.pending is not None:
            epoch, step = self.pending
            self.pending = None
            self._record(epoch, step)

    def _record(self, epoch: int, step: int) -> None:
        values = scalars(self.logged)
        lr = current_lr(self.optimizer) if self.optimizer is not None else None
        if lr is not None:
            values.setdefault("lr", lr)
        self.tracker.record(epoch=epoch, step=step, **values)
        self.recorded_step = step
