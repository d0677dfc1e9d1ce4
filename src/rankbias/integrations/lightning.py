"""A PyTorch Lightning callback that records a ``Trainer.fit`` as one rankbias run (docs/track.md).

>>> from rankbias.integrations.lightning import RankbiasCallback
>>> trainer = lightning.Trainer(max_epochs=20, callbacks=[RankbiasCallback("results", name="my-net")])
>>> trainer.fit(module, datamodule)        # results/<run_id>/: rb.load, rankbias show/report ...

``pip install rankbias[lightning]``. The run is the LightningModule's (every linear, convolution
and attention matrix in it), with the module's ``hparams``, the optimizer's settings and the batch
size as its config; records on global rank 0 only, so any data-parallel strategy (DDP) works.
"""

from __future__ import annotations

from pathlib import Path

try:
    from lightning.pytorch import Callback
except ImportError as error:  # pragma: no cover - the extra is not installed
    raise ImportError(f"{error}: rankbias.integrations.lightning needs `pip install rankbias[lightning]`") from None

from ..errors import ConfigError
from ..track import Tracker
from . import Recording, current_lr, final_index, optimizer_settings, scalars, settings

SHARDED = ("FSDPStrategy", "ModelParallelStrategy", "XLAFSDPStrategy")


class RankbiasCallback(Recording, Callback):
    """Records the LightningModule's weight matrices during ``Trainer.fit`` with an ``rb.Tracker``.

    ``results``, ``name`` (default: the module's class name), ``layers``, ``counted``, ``eps``,
    ``norm``, ``input_shape`` are the tracker's (``input_shape`` defaults to the shape of the
    module's ``example_input_array``). The run's config: the module's ``hparams`` (flattened),
    then what can be read under rankbias's key names (``optimizer.name``, ``optimizer.lr``,
    ``optimizer.momentum``, ``optimizer.weight_decay`` from the first optimizer; ``train.batch_size``:
    the train loader's batch size × ``accumulate_grad_batches`` × the number of processes, the
    samples of one optimizer step), then ``config`` (wins).

    Records at the end of every ``every_n_epochs``-th epoch (after its validation: epoch
    ``trainer.current_epoch + 1``; epoch 0 is the weights before training), or, with
    ``every_n_steps``, after every N-th optimizer step as record ``global_step // N`` with the step;
    and once more at the end of fit when the last state was not recorded. Each record takes the
    metrics logged so far (``trainer.callback_metrics``, the latest value of each): ``train_loss``,
    ``val_loss``, ``val_acc`` ... on rankbias's columns (:func:`rankbias.integrations.scalar_name`),
    the others in ``metrics``; ``lr`` is the optimizer's current rate unless one was logged. A fit
    resumed from a checkpoint (``ckpt_path``) records from its epoch on, replacing any records at
    or after it; an exception during fit marks the run failed.
    """

    def __init__(self, results: str | Path = "results", **options):
        Recording.__init__(self, results, **options)

    # -- the run -----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        """After the checkpoint (if any) is restored: open the run, record epoch 0 on a fresh start."""
        if not trainer.is_global_zero:
            return
        self.close("failed", "a previous fit ended without on_fit_end")
        strategy = type(trainer.strategy).__name__
        if strategy in SHARDED:
            raise ConfigError("strategy", f"{strategy} shards the weights: rankbias records whole matrices "
                                          "(use a data-parallel strategy such as ddp)")  # fmt: skip
        hparams = dict(getattr(pl_module, "hparams", None) or {})
        read = optimizer_settings(trainer.optimizers[0]) if trainer.optimizers else {}
        batch = _batch_size(trainer)
        if batch is not None:
            read["train.batch_size"] = batch * max(1, trainer.accumulate_grad_batches) * max(1, trainer.world_size)
        example = getattr(pl_module, "example_input_array", None)
        input_shape = self.input_shape
        if input_shape is None and hasattr(example, "shape"):
            input_shape = tuple(example.shape[1:])
        self.tracker = Tracker(pl_module, self.results, name=self.name or type(pl_module).__name__,
                               config=settings(hparams, read, self.config), input_shape=input_shape,
                               **self.options)  # fmt: skip
        self.path, self.recorded_step = self.tracker.path, None
        if trainer.global_step == 0 and trainer.current_epoch == 0:
            self._record(trainer, 0, logged=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.tracker is None or self.every_n_steps:
            return
        epoch = trainer.current_epoch + 1  # current_epoch counts the epochs completed before this one
        if epoch % self.every_n_epochs == 0:
            self._record(trainer, epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.tracker is None or not self.every_n_steps or step % self.every_n_steps or step == self.recorded_step:
            return
        self._record(trainer, step // self.every_n_steps)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.tracker is None:
            return
        if trainer.global_step != self.recorded_step:  # the weights changed since the last record
            done, n = (trainer.global_step, self.every_n_steps) if self.every_n_steps else (trainer.current_epoch, 1)
            index = final_index(done, n)
            if index > self.tracker.last:
                self._record(trainer, index)
        self.close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.close("failed", f"{type(exception).__name__}: {exception}")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.close()

    def close(self, state: str = "done", message: str | None = None) -> None:
        """End the run (``done``, or ``failed`` with ``message``); nothing when none is open."""
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            tracker.close(state, message)

    # -- one record ------------------------------------------------------------------------------
    def _record(self, trainer, epoch: int, logged: bool = True) -> None:
        values = scalars(trainer.callback_metrics) if logged else {}
        lr = current_lr(trainer.optimizers[0]) if trainer.optimizers else None
        if lr is not None:
            values.setdefault("lr", lr)
        self.tracker.record(epoch=epoch, step=trainer.global_step, **values)
        self.recorded_step = trainer.global_step


def _batch_size(trainer) -> int | None:
    """The batch size of one process: the train loader's, else its datamodule's ``batch_size``."""
    loader = getattr(trainer, "train_dataloader", None)
    sizes = [getattr(loader, "batch_size", None), getattr(getattr(loader, "batch_sampler", None), "batch_size", None)]
    datamodule = getattr(trainer, "datamodule", None)
    sizes += [getattr(datamodule, "batch_size", None), (getattr(datamodule, "hparams", None) or {}).get("batch_size")]
    return next((int(s) for s in sizes if isinstance(s, int) and not isinstance(s, bool) and s > 0), None)
