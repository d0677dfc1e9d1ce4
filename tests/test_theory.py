"""The theory checks: per-sample gradient ranks, GSGP Lemma 3.2 / Thm 3.3, GP Thm 1 and SGD noise,
CHEN Thm 2.6, Prediction 4.1 — each on hand-made inputs with known answers and on stored runs."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from matplotlib.figure import Figure
from torch import nn

import rankbias as rb
from rankbias import theory
from rankbias.api import Results
from rankbias.cli import main
from rankbias.config import ModelConfig
from rankbias.data import load_dataset
from rankbias.models import plain_model
from rankbias.theory import figures
from rankbias.theory.gradients import numerical_rank

BASE = {
    "model": "mlp-bn-2-16",
    "data": {"name": "digits", "train_size": 256, "test_size": 64},
    "optimizer": {"lr": 0.1, "momentum": 0.0, "weight_decay": 5e-3},
    "train": {"batch_size": 8, "epochs": 3},
    "record": {"step_norms": 3},
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A plain-SGD sweep of mlp-bn-2-16 on digits (B 8 and 32 with weight decay, B 8 without),
    all recording step norms, and CHEN's two-layer network with squared loss on the labels."""
    root = tmp_path_factory.mktemp("theory")
    base = rb.RunConfig.from_dict(BASE)
    sweep = [base, base.replace(**{"optimizer.weight_decay": 0.0}), base.replace(**{"train.batch_size": 32})]
    chen = rb.RunConfig.from_dict({**BASE, "model": "twolayer-32", "loss": "mse_scalar", "train": {"batch_size": 16, "epochs": 3},
                                   "optimizer": {"lr": 0.01, "momentum": 0.0, "weight_decay": 1e-2}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKBIAS_OFFLINE", "1")
        runs = rb.train(sweep, root / "sweep", data_root=root / "data")
        chen_run = rb.train(chen, root / "chen", data_root=root / "data")
    assert all(r.state == "done" for r in [*runs, chen_run])
    return {"root": root, "data": root / "data", "sweep": root / "sweep", "runs": runs, "chen": chen_run}


# -- GSGP Lemma 3.1 / GP Lemmas 1-2: per-sample gradient ranks ------------------------------------
def test_fully_connected_per_sample_gradients_have_rank_one():
    torch.manual_seed(0)
    x, y = torch.randn(12, 20), torch.randint(0, 5, (12,))
    for name in ("mlp-2-16", "mlp-bn-2-16", "twolayer-32"):
        table = theory.gradient_rank(plain_model(ModelConfig(name), (20,), 5), x, y, "cross_entropy", batch_size=4)
        per_sample = table[table["check"] == "gsgp_lemma_3_1"]
        assert len(per_sample) == (3 if name.startswith("mlp") else 2)
        assert (per_sample["measured"] == 1).all() and (per_sample["bound"] == 1).all() and per_sample["holds"].all()
        assert per_sample["note"].str.contains("rank 1: 12").all() and (per_sample["rtol"] > 0).all()
        coupled = table[table["check"] == "gp_lemma_2"]
        if name == "mlp-bn-2-16":  # batch norm in train mode: the batch gradient has rank ≤ B = 4, above 1
            assert len(coupled) == 3 and (coupled["bound"] == 4).all() and coupled["holds"].all()
            assert (coupled["measured"] > 1).all() and (coupled["measured"] <= 4).all()
        else:
            assert coupled.empty


def test_convolution_and_attention_ranks_are_above_one_and_at_most_m_l():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 2 * 2, 4))  # 4×4 input: 2×2 patches
    table = theory.gradient_rank(conv, torch.randn(6, 3, 4, 4), torch.randint(0, 4, (6,)), "cross_entropy").set_index("layer")
    assert table.at["0", "kind"] == "conv" and table.at["0", "m_l"] == 4 and (table.at["0", "rows"], table.at["0", "cols"]) == (16, 27)
    assert 1 < table.at["0", "measured"] <= 4 and table.at["0", "holds"] and not table.at["0", "trivial"]
    assert table.at["3", "measured"] == 1

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.head = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

        def forward(self, x):  # x: (B, 5 tokens, 8)
            return self.head(self.attn(x, x, x)[0].max(1).values)

    table = theory.gradient_rank(Attention(), torch.randn(4, 5, 8), torch.randint(0, 3, (4,)), "cross_entropy").set_index("layer")
    assert list(table.index) == ["attn.q", "attn.k", "attn.v", "attn.out_proj", "head"]  # as rb.spectra names them
    assert (table.loc[["attn.q", "attn.k", "attn.v", "attn.out_proj"], "m_l"] == 5).all() and table.at["attn.q", "rows"] == 8
    assert (table.loc[["attn.q", "attn.k", "attn.v"], "measured"] > 1).all() and table["holds"].all()


def test_numerical_rank_sees_a_full_rank_matrix():
    """The rank check can fail: a generic matrix has full rank, a product of thin ones its width."""
    torch.manual_seed(0)
    stack = torch.stack([torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64) @ torch.randn(3, 6, dtype=torch.float64)])
    ranks, rtol = numerical_rank(stack)
    assert ranks.tolist() == [6, 3] and rtol == pytest.approx(8 * np.finfo(np.float64).eps)


def test_gradient_rank_of_a_config_and_of_a_stored_run(stored, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("model: twolayer-32\ndata: {name: digits, train_size: 64, test_size: 16}\ntrain: {batch_size: 4}\n")
    at_init = theory.gradient_rank_at(config, 8, data_root=stored["data"])
    assert set(at_init["layer"]) == {"V", "a"} and (at_init["epoch"] == 0).all() and (at_init["measured"] == 1).all()
    trained = theory.gradient_rank_at(stored["runs"][0].path, 8, data_root=stored["data"])
    assert (trained["epoch"] == 3).all() and trained["holds"].all() and set(trained["check"]) == {"gsgp_lemma_3_1", "gp_lemma_2"}
    assert (trained.loc[trained["check"] == "gp_lemma_2", "bound"] == 8).all()  # the run's B


# -- GSGP Lemma 3.2 -------------------------------------------------------------------------------
def hand_made_records(norm_at_7: float = 2.0) -> Results:
    """One run, 4 steps per epoch, lr 0.1 then 0.05 from epoch 2, weight decay 0.5, B = 2; at
    epoch 2 (T = 8) the step norms of counts 3..8 and W's singular values 3, 2, 1, 1, .5, .5."""
    runs = pd.DataFrame([{"run_id": "r", "state": "done", "optimizer.lr": 0.1, "optimizer.weight_decay": 0.5, "optimizer.momentum": 0.0,
                          "train.batch_size": 2, "schedule.kind": "multistep", "schedule.milestones": (1,), "schedule.factor": 0.5,
                          "schedule.every": 0, "record.every": 1}])
    scalars = pd.DataFrame([{"run_id": "r", "epoch": 2, "step": 8, "lr": 0.05, "avg_rank": 6.0}])
    layers = pd.DataFrame([{"run_id": "r", "epoch": 2, "layer": "W", "m_l": 1, "rows": 6, "cols": 10, "counted": True, "norm_ratio": 1.0}])
    spectra = pd.DataFrame([{"run_id": "r", "epoch": 2, "layer": "W", "sv": np.array([3, 2, 1, 1, 0.5, 0.5], dtype=np.float32)}])
    norms = {3: 4.0, 4: 3.0, 5: 3.0, 6: 2.5, 7: norm_at_7, 8: 2.0}
    step_norms = pd.DataFrame([{"run_id": "r", "epoch": 2, "step": s, "layer": "W", "fro_norm": v} for s, v in norms.items()])
    return Results(runs, scalars, layers, spectra, step_norms)


def test_lemma_3_2_known_answers_across_a_learning_rate_drop():
    table = theory.lemma_3_2(hand_made_records()).set_index("n")
    assert list(table.index) == [1, 2, 3, 4, 5]
    # n = 1: rank ≤ m_l·B·n = 2 → distance sqrt((1 + 1 + .25 + .25) / 15.5); bound (1 − 0.05·0.5)·‖W_7‖/‖W_8‖
    assert table.at[1, "measured"] == pytest.approx(math.sqrt(2.5 / 15.5), rel=1e-6)
    assert table.at[1, "bound"] == pytest.approx(0.975) and table.at[1, "holds"] and not table.at[1, "trivial"]
    # n = 5 reaches back into epoch 1 (update 4 at lr 0.1): 0.95 · 0.975⁴ · ‖W_3‖/‖W_8‖; rank 10 ≥ 6 is trivial
    assert table.at[5, "bound"] == pytest.approx(0.95 * 0.975**4 * 2) and table.at[5, "trivial"] and table.at[5, "measured"] == 0
    assert table.at[2, "rank_cap"] == 4 and table.at[2, "trivial"] and "bound ≥ 1" in table.at[2, "note"]  # 0.975² · 2.5/2 > 1
    only = theory.lemma_3_2(hand_made_records(), n=[1, 3])
    assert only["n"].tolist() == [1, 3]


def test_lemma_3_2_fails_on_tampered_norms_and_refuses_missing_ones():
    tampered = theory.lemma_3_2(hand_made_records(norm_at_7=0.1)).set_index("n")
    assert not tampered.at[1, "holds"] and "VIOLATED" in tampered.at[1, "note"]
    records = hand_made_records()
    records.scalars["lr"] = 0.07  # not the schedule's 0.05
    with pytest.raises(ValueError, match="differs from its schedule"):
        theory.lemma_3_2(records)
    with pytest.raises(ValueError, match="record.step_norms"):
        theory.lemma_3_2(Results(records.runs, records.scalars, records.layers, records.spectra, pd.DataFrame()))
    with pytest.raises(ValueError, match="n=\\[9\\]"):
        theory.lemma_3_2(hand_made_records(), n=9)


def test_lemma_3_2_holds_on_a_plain_sgd_run_and_fails_when_its_norms_are_tampered(stored):
    results = rb.load(stored["runs"][0].path)
    table = theory.lemma_3_2(results)
    assert set(table["epoch"]) == {1, 2, 3} and set(table["layer"]) == {"hidden.0", "hidden.1", "out"}
    assert table["n"].min() == 1 and table["n"].max() >= 2
    assert table["holds"].all()
    assert (~table["trivial"]).any()  # m_l·B·n = 8 < 16 with a bound below 1: the lemma has something to say
    norms = results.step_norms.copy()
    last = norms.groupby(["epoch"])["step"].transform("max")
    norms.loc[norms["step"] < last, "fro_norm"] *= 0.01  # ‖W_{T−n}‖ recorded 100× too small
    tampered = theory.lemma_3_2(results, step_norms=norms)
    assert not tampered.loc[tampered["n"] == 1, "holds"].any()  # rank ≤ 8 < every matrix's size: the bound bites


# -- GSGP Theorem 3.3 ---------------------------------------------------------------------------
def test_theorem_3_3_bound_and_measured_rank(stored):
    results = rb.load(stored["sweep"])
    table = theory.theorem_3_3(results, eps=[1e-3, 0.3])
    run = stored["runs"][0].run_id
    row = table[(table["run_id"] == run) & (table["layer"] == "hidden.0") & (table["eps"] == 1e-3)].iloc[0]
    # 3 short epochs: Σ μ·weight_decay over the whole training is below log(2/ε): the bound is infinite
    assert math.isinf(row["bound"]) and "whole training" in row["note"]
    recorded = results.layers.query("run_id == @run and layer == 'hidden.0' and epoch == 3")["eps_rank"].iloc[0]
    assert row["measured"] == recorded and row["approx_rank"] >= row["measured"] and row["epoch"] == 3
    assert row["ratio_over"] == "1 step" and row["trivial"] and row["holds"]
    no_decay = table[table["run_id"] == stored["runs"][1].run_id]
    assert np.isinf(no_decay["bound"]).all() and no_decay["note"].str.contains("no weight decay").all()


def test_theorem_3_3_uses_the_learning_rate_in_force_not_the_last_one():
    from rankbias.theory.gsgp import steps_to_decay

    run = pd.Series({"optimizer.lr": 0.1, "optimizer.weight_decay": 5e-3, "schedule.kind": "constant", "schedule.milestones": (),
                     "schedule.factor": 0.1, "schedule.every": 1})
    target = math.log(2 / 0.3)
    assert steps_to_decay(run, 100, 50, target) == pytest.approx(target / (0.1 * 5e-3))  # the theorem's log(2/ε)/(2μλ)
    assert math.isinf(steps_to_decay(run, 10, 50, target))  # 500 steps · 5e-4 < log(2/0.3)
    # lr × 0.1 after epoch 90: the last 10 epochs give 10·50·5e-5 = 0.025, the rest comes from epochs at lr 0.1
    decayed = run.copy()
    decayed["schedule.kind"], decayed["schedule.milestones"] = "multistep", (90,)
    expected = 500 + (target - 0.025) / 5e-4
    assert steps_to_decay(decayed, 100, 50, target) == pytest.approx(expected)
    assert expected < target / (0.01 * 5e-3) / 5  # not the last lr's bound, 10× larger


# -- GP Theorem 1 and SGD noise ---------------------------------------------------------------------
def test_gp_theorem_1_is_the_gradient_identity(stored):
    run = stored["runs"][0]
    table = theory.gp_theorem_1(run.path, batches=1, seed=3, data_root=stored["data"]).set_index("layer")
    assert table["holds"].all() and (table["param"] == "B*=8").all()
    # the bound by hand: one batch, ‖∇L + weight_decay·W‖ / weight_decay, W's distance to rank 8
    model, data = rb.load_model(run.path).double().train(), load_dataset(rb.RunConfig.from_dict(BASE).data, stored["data"])
    (index,) = theory.live.random_batches(len(data.x_train), 8, 1, 3)
    loss = nn.functional.cross_entropy(model(data.x_train[index].double()), data.y_train[index])
    weight = model.get_submodule("hidden.0").weight
    (g,) = torch.autograd.grad(loss, [weight])
    W = weight.detach()
    assert table.at["hidden.0", "bound"] == pytest.approx(float((g + 5e-3 * W).norm()) / 5e-3, rel=1e-9)
    sv = torch.linalg.svdvals(W)
    assert table.at["hidden.0", "measured"] == pytest.approx(float(sv[8:].square().sum().sqrt()), rel=1e-9)


def test_sgd_noise_compares_with_the_run_without_weight_decay(stored):
    table = theory.sgd_noise(rb.load(stored["sweep"])).set_index("run_id")
    with_decay, without, large_batch = (r.run_id for r in stored["runs"])
    assert pd.isna(table.at[without, "holds"]) and "baseline" in table.at[without, "note"]
    assert table.at[with_decay, "twin_run_id"] == without
    assert table.at[with_decay, "bound"] == pytest.approx(table.at[without, "measured"])
    assert table.at[with_decay, "holds"] == (table.at[with_decay, "measured"] > table.at[without, "measured"])
    assert pd.isna(table.at[large_batch, "twin_run_id"]) and "no run without weight decay" in table.at[large_batch, "note"]
    assert table.at[large_batch, "holds"]  # d stays far above 1e-3 × ‖W‖ after 3 epochs
    # a run whose distance is NaN (only its initialization recorded) gets no prediction, not a failure
    records = rb.load(stored["sweep"])
    records.scalars.loc[records.scalars["run_id"] == with_decay, "distance"] = float("nan")
    row = theory.sgd_noise(records).set_index("run_id").loc[with_decay]
    assert pd.isna(row["holds"]) and "no prediction" in row["note"]


# -- CHEN Theorem 2.6 -------------------------------------------------------------------------------
def test_chen_batch_gradient_norms_and_low_rank_distances(stored):
    table = theory.chen_theorem_2_6(stored["chen"].path, data_root=stored["data"])
    norms = table[(table["check"] == "chen_assumption_2_5") & (table["layer"] == "V")].iloc[0]
    assert len(norms["norms"]) == 256 // 16 and norms["measured"] == pytest.approx(max(norms["norms"]))
    assert norms["bound"] == pytest.approx(math.sqrt(32 * 64))  # a standard Gaussian 32×64 matrix
    ranks = table[(table["check"] == "chen_theorem_2_6") & (table["layer"] == "V")].set_index("param")
    assert 0 < ranks.at["rank 2", "measured"] < ranks.at["rank 1", "measured"] < 1 and ranks["holds"].isna().all()
    assert table.loc[(table["check"] == "chen_theorem_2_6") & (table["layer"] == "a"), "trivial"].all()  # a is 1 × 32


# -- GSGP Prediction 4.1 ------------------------------------------------------------------------------
def hand_made_sweep() -> Results:
    """Known answers: with weight decay the rank falls with smaller B, larger lr and larger λ except
    one pair (B 8 vs 32 at lr 0.2); without weight decay B barely matters (50 vs 51) — one failed run."""
    rows = [  # batch, lr, weight decay, final average rank
        (8, 0.1, 5e-3, 20.0), (32, 0.1, 5e-3, 30.0), (8, 0.2, 5e-3, 15.0), (32, 0.2, 5e-3, 12.0),
        (8, 0.1, 0.0, 50.0), (32, 0.1, 0.0, 51.0),
    ]
    runs = [{"run_id": f"r{i}", "state": "done", "train.batch_size": b, "optimizer.lr": lr, "optimizer.weight_decay": wd,
             "model.name": "mlp-bn-2-16", "train.seed": 0} for i, (b, lr, wd, _) in enumerate(rows)]
    runs.append({**runs[0], "run_id": "bad", "state": "diverged", "train.batch_size": 4})
    scalars = pd.DataFrame([{"run_id": f"r{i}", "epoch": e, "avg_rank": rank if e == 10 else 64.0} for i, (*_, rank) in enumerate(rows) for e in (0, 10)])
    return Results(pd.DataFrame(runs), scalars, pd.DataFrame(), pd.DataFrame())


def test_prediction_4_1_on_hand_made_records():
    agreement = theory.prediction_4_1(hand_made_sweep())
    table = agreement.table.set_index(["knob", "run_id", "other_run_id"])
    # B pairs: (r0 < r1) agrees, (r2 < r3) does not (15 > 12), (r4 vs r5) without weight decay: similar, agrees
    assert table.loc[("train.batch_size", "r0", "r1"), "agrees"]
    assert not table.loc[("train.batch_size", "r2", "r3"), "agrees"] and table.loc[("train.batch_size", "r2", "r3"), "observed"] == "higher"
    assert table.loc[("train.batch_size", "r4", "r5"), "expected"] == "similar" and table.loc[("train.batch_size", "r4", "r5"), "agrees"]
    # lr pairs (predicted lower: the larger lr): (r2 vs r0) and (r3 vs r1) agree
    assert table.loc[("optimizer.lr", "r2", "r0"), "agrees"] and table.loc[("optimizer.lr", "r3", "r1"), "agrees"]
    # weight decay pairs (predicted lower: the larger λ): r0 vs r4 and r1 vs r5 agree
    assert table.loc[("optimizer.weight_decay", "r0", "r4"), "agrees"] and table.loc[("optimizer.weight_decay", "r1", "r5"), "agrees"]
    assert len(agreement.table) == 7 and agreement.share == pytest.approx(6 / 7)
    assert agreement.table.attrs["left_out"] == ["bad"] and set(agreement.table["symbol"]) == {"B", "μ", "λ"}
    strict = theory.prediction_4_1(hand_made_sweep(), no_decay_tolerance=0.0)
    assert strict.share == pytest.approx(5 / 7)


# -- the command and the figures ------------------------------------------------------------------------
def test_theory_command(stored, tmp_path):
    runner = CliRunner()
    run = stored["runs"][0].path
    out = runner.invoke(main, ["theory", str(run), "--samples", "8", "--batches", "2", "--eps", "0.01", "--data-dir", str(stored["data"])])
    assert out.exit_code == 0, out.output
    for check in ("gsgp_theorem_3_3", "gsgp_lemma_3_2", "gp_sgd_noise", "gsgp_lemma_3_1", "gp_lemma_2", "gp_theorem_1", "chen_assumption_2_5"):
        assert check in out.output
    sweep = runner.invoke(main, ["theory", str(stored["sweep"]), "--records-only"])
    assert sweep.exit_code == 0 and "GSGP Prediction 4.1" in sweep.output and "of 2 pairs agree" in sweep.output
    config = tmp_path / "tiny.yaml"
    config.write_text("model: mlp-2-16\ndata: {name: digits, train_size: 64, test_size: 16}\n")
    ranks = runner.invoke(main, ["theory", "--gradient-rank", str(config), "--samples", "4", "--data-dir", str(stored["data"])])
    assert ranks.exit_code == 0 and "4 samples" in ranks.output and "gsgp_lemma_3_1" in ranks.output
    neither = runner.invoke(main, ["theory"])
    assert neither.exit_code == 2 and "one of the two" in neither.output and "Traceback" not in neither.output


def test_figures(stored):
    results = rb.load(stored["sweep"])
    made = [
        figures.theorem_3_3_figure(theory.theorem_3_3(results)),
        figures.lemma_3_2_figure(theory.lemma_3_2(results)),
        figures.batch_gradient_figure(theory.chen_theorem_2_6(stored["chen"].path, batches=4, data_root=stored["data"])),
        figures.gradient_rank_figure(theory.gradient_rank_at(stored["runs"][0].path, 8, data_root=stored["data"])),
        figures.prediction_figure(theory.prediction_4_1(hand_made_sweep()).table),
    ]
    assert all(isinstance(f, Figure) and f.axes for f in made)
    assert len(made[3].axes) == 2  # Lemma 3.1 and GP Lemma 2 panels
    with pytest.raises(ValueError, match="no gsgp_lemma_3_2 rows"):
        figures.lemma_3_2_figure(theory.theorem_3_3(results))
