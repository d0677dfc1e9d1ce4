"""rb.Tracker: a training loop the user wrote, recorded as a rankbias run that every reader reads."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import rankbias as rb
from rankbias.cli import main
from rankbias.errors import ConfigError, StoreError
from rankbias.spectra.modules import module_spectra


class UserNet(nn.Module):
    """Not one of rankbias's models: a convolution, an attention and two linear layers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc1 = nn.Linear(8 * 64, 32)
        self.fc2 = nn.Linear(32, 10)
        self.embedding = nn.Embedding(4, 3)  # a matrix parameter that is not a linear map: skipped

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)  # (batch, 64 tokens, 8)
        h = h + self.attn(h, h, h)[0]
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


SETTINGS = {"optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3}, "train.batch_size": 32}


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(256, 1, 8, 8, generator=g), torch.randint(0, 10, (256,), generator=g)


def train(model, tracker, epochs, first=0):
    """A plain loop of the user's: SGD with momentum and weight decay, a record every epoch."""
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
    step = 0
    for epoch in range(first, epochs + 1):
        for i in range(0, len(x), 32) if epoch > 0 else []:
            loss = nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        with torch.no_grad():
            out = model(x)
        accuracy = (out.argmax(1) == y).float().mean()
        tracker.record(epoch=epoch, step=step, train_loss=nn.functional.cross_entropy(out, y), train_acc=accuracy,
                       lr=0.05, grad_clip=1.0)  # fmt: skip


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    torch.manual_seed(0)
    model = UserNet()
    with rb.Tracker(model, root, name="user-net", config=SETTINGS, input_shape=(1, 8, 8)) as tracker:
        train(model, tracker, epochs=3)
    return root, model, tracker


def test_a_plain_loop_is_recorded_as_a_run(tracked):
    root, model, tracker = tracked
    records = rb.load(root)
    run = records.runs.iloc[0]
    assert run["state"] == "done" and run["state_epoch"] == 3 and run["model.name"] == "UserNet"
    assert run["optimizer.weight_decay"] == 5e-3 and run["train.batch_size"] == 32
    assert sorted(records.scalars["epoch"]) == [0, 1, 2, 3]
    names = ["conv", "attn.q", "attn.k", "attn.v", "attn.out_proj", "fc1", "fc2"]
    last = records.layers[records.layers["epoch"] == 3].sort_values("index")
    assert last["layer"].tolist() == names
    assert [name for name, *_ in tracker.skipped] == ["embedding.weight"]
    # the stored spectra are rb.spectra's of the trained model; m_l from the forward pass
    expected = module_spectra(model, input_shape=(1, 8, 8)).set_index("name")
    spectra = records.spectra[records.spectra["epoch"] == 3].set_index("layer")["sv"]
    for row in last.itertuples():
        np.testing.assert_allclose(spectra[row.layer], expected.at[row.layer, "sv"], rtol=1e-5, atol=1e-6)
        assert row.eps_rank == expected.at[row.layer, "eps_rank"] and row.m_l == expected.at[row.layer, "m_l"]
    assert last.set_index("layer").at["conv", "m_l"] == 64 and last.set_index("layer").at["attn.q", "m_l"] == 64
    scalars = records.scalars.set_index("epoch")
    assert scalars.at[3, "avg_rank"] == pytest.approx(last["eps_rank"].mean())
    assert scalars.at[3, "step"] == 24 and scalars.at[0, "train_acc"] < scalars.at[3, "train_acc"]
    first = records.layers[records.layers["epoch"] == 0]
    assert last["delta_fro"].notna().all() and first["delta_fro"].isna().all()  # ‖W_t − W_{t−1}‖ from epoch 1
    assert records.metrics["name"].unique().tolist() == ["grad_clip"] and len(records.metrics) == 4


def test_every_reader_reads_it(tracked):
    root, _, tracker = tracked
    runner = CliRunner()
    report = runner.invoke(main, ["report", str(root)])
    assert report.exit_code == 0, report.output
    page = (root / "report.html").read_text()
    assert page.count("<img") >= 3 and "could not be drawn" not in page and tracker.run_id in page
    query = runner.invoke(main, ["query", str(root), "select count(*) as n from scalars"])
    assert query.exit_code == 0 and query.stdout.split()[-1] == "4"
    shown = runner.invoke(main, ["show", str(tracker.path), "--eps", "0.1"])
    assert shown.exit_code == 0 and "done at epoch 3" in shown.output and "attn.out_proj" in shown.output
    status = runner.invoke(main, ["status", str(root)])
    assert "done: 1" in status.output
    theory = runner.invoke(main, ["theory", str(tracker.path)])
    assert theory.exit_code == 0, theory.output
    assert "gsgp_theorem_3_3" in theory.output and "rb.Tracker stores no network" in theory.output
    compress = runner.invoke(main, ["compress", str(tracker.path)])
    assert compress.exit_code == 2 and "rb.compress(your_model" in compress.output


def test_the_tracker_never_changes_the_model_or_its_training(tmp_path):
    torch.manual_seed(1)
    model = UserNet()
    twin = UserNet()
    twin.load_state_dict(model.state_dict())
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tracker = rb.Tracker(model, tmp_path, name="x", input_shape=(1, 8, 8))
    tracker.record(epoch=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())
    # trained with and without a record after every step: bit-identical weights
    x, y = data()
    for net, record in ((model, True), (twin, False)):
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
        for i, start in enumerate(range(0, 128, 32)):
            nn.functional.cross_entropy(net(x[start : start + 32]), y[start : start + 32]).backward()
            opt.step()
            opt.zero_grad()
            if record:
                tracker.record(epoch=i + 1)
    tracker.close()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))


SCRIPT = """
import os, signal, sys
import torch
import rankbias as rb
from rankbias.store.run_store import RunStore
sys.path.insert(0, {tests!r})
from test_track import SETTINGS, UserNet, train

kill_at = int(sys.argv[2])
append = RunStore.append
def dying_append(self, epoch, tables):
    append(self, epoch, tables)
    if epoch == kill_at and "layers" in tables:  # the record half written: no scalars yet
        os.kill(os.getpid(), signal.SIGKILL)
RunStore.append = dying_append
torch.manual_seed(0)
model = UserNet()
tracker = rb.Tracker(model, sys.argv[1], name="killed", config=SETTINGS)
train(model, tracker, epochs=6, first=int(sys.argv[3]) if len(sys.argv) > 3 else tracker.last + 1)
tracker.close()
"""


def test_killed_mid_record_and_restarted_each_epoch_is_stored_once(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    killed = subprocess.run([sys.executable, str(script), str(results), "4"], env=env, check=False)
    assert killed.returncode == -signal.SIGKILL
    status = CliRunner().invoke(main, ["status", str(results)])
    assert "pending: 1" in status.output  # killed: its lock is stale, its records up to epoch 3 readable
    assert sorted(rb.load(results).scalars["epoch"]) == [0, 1, 2, 3]
    # the loop goes on where the records end (the half-written epoch 4 is dropped) ...
    subprocess.run([sys.executable, str(script), str(results), "-1"], env=env, check=True)
    records = rb.load(results)
    assert sorted(records.scalars["epoch"]) == [0, 1, 2, 3, 4, 5, 6] and records.runs["state"].tolist() == ["done"]
    assert records.layers.groupby("epoch").size().eq(7).all() and len(records.spectra) == 7 * 7
    # ... and a loop started again from epoch 2 (its own checkpoint) replaces the records from there on
    subprocess.run([sys.executable, str(script), str(results), "-1", "2"], env=env, check=True)
    again = rb.load(results)
    assert sorted(again.scalars["epoch"]) == list(range(7)) and len(again.layers) == 7 * 7
    assert len(again.metrics) == 7


def test_bad_input_is_one_message(tmp_path):
    model = UserNet()
    with pytest.raises(ConfigError, match="layers: no weight matrix matches"):
        rb.Tracker(model, tmp_path, layers="decoder.*")
    with pytest.raises(ConfigError, match="record.eps: the sections tracked, record are rankbias's"):
        rb.Tracker(model, tmp_path, config={"record.eps": 0.1})
    with pytest.raises(ConfigError, match="model: must be a torch.nn.Module"):
        rb.Tracker("resnet", tmp_path)
    tracker = rb.Tracker(model, tmp_path, name="bad")
    with pytest.raises(ConfigError, match="note: a recorded scalar must be a number"):
        tracker.record(epoch=0, note="hello")
    with pytest.raises(ConfigError, match="epoch: must be a whole number"):
        tracker.record(epoch=-1)
    with pytest.raises(StoreError, match="being recorded by another process"):
        rb.Tracker(model, tmp_path, name="bad")
    tracker.close()
    assert not (tracker.path / "scalars").exists()  # nothing was recorded


def test_the_example_loop_runs_and_goes_on_where_it_stopped(tmp_path):
    example = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "track_plain_loop.py")
    for epochs in (1, 2):
        subprocess.run([sys.executable, example, "--epochs", str(epochs), "--results", str(tmp_path)], check=True)
    records = rb.load(tmp_path)
    assert sorted(records.scalars["epoch"]) == [0, 1, 2] and records.runs["data.name"].tolist() == ["digits"]
    assert records.scalars["test_acc"].iloc[-1] > 0.5
