"""The theory checks: per-sample gradient ranks, GSGP Lemma 3.2 / Thm 3.3, GP Thm 1 and SGD noise,
CHEN Thm 2.6, Prediction 4.1 — each on hand-made inputs with known answers and on stored runs."""

import dataclasses
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
from rankbias.cli import main
from rankbias.config import ModelConfig, flatten
from rankbias.data import load_dataset
from rankbias.models import plain_model
from rankbias.store.records import Results
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
    chen = rb.RunConfig.from_dict({**BASE, "model": "twolayer-32", "loss": "mse_scalar",
                                   "train": {"batch_size": 16, "epochs": 3},
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
    # 4×4 input: 2×2 patches
    conv = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 2 * 2, 4))
    table = theory.gradient_rank(
        conv, torch.randn(6, 3, 4, 4), torch.randint(0, 4, (6,)), "cross_entropy"
    ).set_index("layer")
    assert (
        table.at["0", "kind"] == "conv"
        and table.at["0", "m_l"] == 4
        and (table.at["0", "rows"], table.at["0", "cols"]) == (16, 27)
    )
    assert 1 < table.at["0", "measured"] <= 4 and table.at["0", "holds"] and not table.at["0", "trivial"]
    assert table.at["3", "measured"] == 1

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.head = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

        def forward(self, x):  # x: (B, 5 tokens, 8)
            return self.head(self.attn(x, x, x)[0].max(1).values)

    table = theory.gradient_rank(
        Attention(), torch.randn(4, 5, 8), torch.randint(0, 3, (4,)), "cross_entropy"
    ).set_index("layer")
    assert list(table.index) == ["attn.q", "attn.k", "attn.v", "attn.out_proj", "head"]  # as rb.spectra names them
    assert (
        (table.loc[["attn.q", "attn.k", "attn.v", "attn.out_proj"], "m_l"] == 5).all()
        and table.at["attn.q", "rows"] == 8
    )
    assert (table.loc[["attn.q", "attn.k", "attn.v"], "measured"] > 1).all() and table["holds"].all()


def test_numerical_rank_sees_a_full_rank_matrix():
    """The rank check can fail: a generic matrix has full rank, a product of thin ones its width."""
    torch.manual_seed(0)
    stack = torch.stack(
        [
            torch.randn(8, 6, dtype=torch.float64),
            torch.randn(8, 3, dtype=torch.float64) @ torch.randn(3, 6, dtype=torch.float64),
        ]
    )
    ranks, rtol = numerical_rank(stack)
    assert ranks.tolist() == [6, 3] and rtol == pytest.approx(8 * np.finfo(np.float64).eps)


def test_gradient_rank_of_a_config_and_of_a_stored_run(stored, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: twolayer-32\ndata: {name: digits, train_size: 64, test_size: 16}\ntrain: {batch_size: 4}\n"
    )
    at_init = theory.gradient_rank_at(config, 8, data_root=stored["data"])
    assert set(at_init["layer"]) == {"V", "a"} and (at_init["epoch"] == 0).all() and (at_init["measured"] == 1).all()
    trained = theory.gradient_rank_at(stored["runs"][0].path, 8, data_root=stored["data"])
    assert (
        (trained["epoch"] == 3).all()
        and trained["holds"].all()
        and set(trained["check"]) == {"gsgp_lemma_3_1", "gp_lemma_2"}
    )
    assert (trained.loc[trained["check"] == "gp_lemma_2", "bound"] == 8).all()  # the run's B


# -- GSGP Lemma 3.2 -------------------------------------------------------------------------------
def hand_made_records(norm_at_7: float = 2.0) -> Results:
    """One run, 4 steps per epoch, lr 0.1 then 0.05 from epoch 2, weight decay 0.5, B = 2; at
    epoch 2 (T = 8) the step norms of counts 3..8 and W's singular values 3, 2, 1, 1, .5, .5."""
    runs = pd.DataFrame([{"run_id": "r", "state": "done",
                          "optimizer.lr": 0.1, "optimizer.weight_decay": 0.5, "optimizer.momentum": 0.0,
                          "train.batch_size": 2,
                          "schedule.kind": "multistep", "schedule.milestones": (1,), "schedule.factor": 0.5,
                          "schedule.every": 0, "record.every": 1}])
    scalars = pd.DataFrame([{"run_id": "r", "epoch": 2, "step": 8, "lr": 0.05, "avg_rank": 6.0}])
    layers = pd.DataFrame(
        [{"run_id": "r", "epoch": 2, "layer": "W", "m_l": 1, "rows": 6, "cols": 10, "counted": True, "norm_ratio": 1.0}]
    )
    spectra = pd.DataFrame(
        [{"run_id": "r", "epoch": 2, "layer": "W", "sv": np.array([3, 2, 1, 1, 0.5, 0.5], dtype=np.float32)}]
    )
    norms = {3: 4.0, 4: 3.0, 5: 3.0, 6: 2.5, 7: norm_at_7, 8: 2.0}
    step_norms = pd.DataFrame(
        [{"run_id": "r", "epoch": 2, "step": s, "layer": "W", "fro_norm": v} for s, v in norms.items()]
    )
    return Results(runs, scalars, layers, spectra, step_norms)


def test_lemma_3_2_known_answers_across_a_learning_rate_drop():
    table = theory.lemma_3_2(hand_made_records()).set_index("n")
    assert list(table.index) == [1, 2, 3, 4, 5]
    # n = 1: rank ≤ m_l·B·n = 2 → distance sqrt((1 + 1 + .25 + .25) / 15.5); bound (1 − 0.05·0.5)·‖W_7‖/‖W_8‖
    assert table.at[1, "measured"] == pytest.approx(math.sqrt(2.5 / 15.5), rel=1e-6)
    assert table.at[1, "bound"] == pytest.approx(0.975) and table.at[1, "holds"] and not table.at[1, "trivial"]
    # n = 5 reaches back into epoch 1 (update 4 at lr 0.1): 0.95 · 0.975⁴ · ‖W_3‖/‖W_8‖; rank 10 ≥ 6 is trivial
    assert (
        table.at[5, "bound"] == pytest.approx(0.95 * 0.975**4 * 2)
        and table.at[5, "trivial"]
        and table.at[5, "measured"] == 0
    )
    # 0.975² · 2.5/2 > 1
    assert table.at[2, "rank_cap"] == 4 and table.at[2, "trivial"] and "bound ≥ 1" in table.at[2, "note"]
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

    run = pd.Series({"optimizer.lr": 0.1, "optimizer.weight_decay": 5e-3, "schedule.kind": "constant",
                     "schedule.milestones": (), "schedule.factor": 0.1, "schedule.every": 1})
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
    model, data = (
        rb.load_model(run.path).double().train(),
        load_dataset(rb.RunConfig.from_dict(BASE).data, stored["data"]),
    )
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
    assert (
        pd.isna(table.at[large_batch, "twin_run_id"]) and "no run without weight decay" in table.at[large_batch, "note"]
    )
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
# 5 seeds: B holds only when its trend with weight decay beats the λ = 0 control's in a sign-flip
# test over the pairs of blocks, whose smallest p-value with 3 seeds (one block each) is 1/8 > 0.05
BATCHES, DECAYS, SEEDS = (8, 32, 128), (5e-3, 0.0), (0, 1, 2, 3, 4)
FULL = 64  # every counted matrix is 64 × 64: the full rank


def hand_made_sweep(rank=None, shrinking: bool = False) -> Results:
    """5 seeds × B ∈ {8, 32, 128} × λ ∈ {5e-3, 0}, 10 epochs, records at epochs 0, 5 and 10 and
    known final average ranks ``rank(batch, decay, seed)`` (default: with weight decay 20, 30,
    40 + seed — the rank rises with B —, without it 50, 51, 50: flat). The norms stay constant
    (every run is at the norm equilibrium) unless ``shrinking`` (with λ > 0 they halve over the
    last five epochs: not converged). Plus one diverged run (B = 4) that must be left out."""
    rank = rank or (lambda b, wd, s: {8: 20.0, 32: 30.0, 128: 40.0 + s}[b] if wd else {8: 50.0, 32: 51.0, 128: 50.0}[b])
    base = rb.RunConfig.from_dict({**BASE, "train": {"batch_size": 8, "epochs": 10}})
    settings = [(b, wd, s) for b in BATCHES for wd in DECAYS for s in SEEDS]
    configs = [base.replace(**{"train.batch_size": b, "optimizer.weight_decay": wd,
                               "train.seed": s, "data.subset_seed": s})
               for b, wd, s in settings]
    runs = [{"run_id": c.run_id(), "state": "done", **flatten(c.to_dict())} for c in configs]
    runs.append({**runs[0], "run_id": "bad", "state": "diverged", "train.batch_size": 4})
    scalars, layers = [], []
    for run, (b, wd, s) in zip(runs, [*settings, (4, 5e-3, 0)]):
        final = 64.0 if run["run_id"] == "bad" else rank(b, wd, s)  # the diverged run would break the B trend of seed 0
        for epoch in (0, 5, 10):
            scalars.append(
                {
                    "run_id": run["run_id"],
                    "epoch": epoch,
                    "step": 10 * epoch,
                    "avg_rank": final if epoch == 10 else 60.0,
                }
            )
            norm = 2.0 if not (shrinking and wd and epoch == 10) else 1.0
            layers += [{"run_id": run["run_id"], "epoch": epoch, "index": i, "layer": f"hidden.{i}", "counted": True,
                        "rows": FULL, "cols": FULL, "fro_norm": norm} for i in range(2)]  # fmt: skip
    return Results(pd.DataFrame(runs), pd.DataFrame(scalars), pd.DataFrame(layers), pd.DataFrame())


def test_prediction_4_1_on_hand_made_records():
    prediction = theory.prediction_4_1(hand_made_sweep())
    tests = prediction.tests.set_index("symbol")
    # μ does not vary
    assert list(tests.index) == ["B", "λ"] and set(tests["verdict"]) <= set(theory.prediction.VERDICTS)
    # B: with weight decay the rank rises with B in every seed (τ = 1 in 5 blocks: exact p = 1/6⁵);
    # effect (rank at B 128 − at B 8) = (20 + seed) / 64 of the full rank; the λ = 0 control is flat
    b = tests.loc["B"]
    assert b["verdict"] == "holds", b["why"]
    assert b["statistic"] == pytest.approx(1.0) and b["exact"] and b["p"] == pytest.approx(1 / 6**5)
    assert b["effect"] == pytest.approx(100 * 22 / 64) and b["ci_low"] > 2 and b["ci_high"] <= 100 * 24 / 64
    assert b["control_effect"] == pytest.approx(0.0) and b["difference_ci_low"] > 0 and b["seeds"] == list(SEEDS)
    # λ (all runs; blocks = B × seed): the rank at λ = 0 is higher in each of the 15 blocks
    wd = tests.loc["λ"]
    assert wd["verdict"] == "holds" and wd["blocks"] == 15 and wd["p"] < 0.01 and wd["ci_low"] > 2
    # the blocks: B has 5 with weight decay and 5 controls, 3 runs each (the diverged B = 4 run left out)
    blocks = prediction.blocks
    b_blocks = blocks[blocks["knob"] == "train.batch_size"]
    assert sorted(b_blocks["group"].value_counts().items()) == [("λ = 0 control", 5), ("λ > 0", 5)]
    assert (b_blocks["runs"] == 3).all() and (b_blocks["levels"] == 3).all()
    assert (blocks.loc[blocks["group"] == "λ > 0", "tau"] == 1).all()


def test_prediction_4_1_verdicts_follow_the_data():
    # without weight decay the rank rises with B just as much: the trend is not weight decay's
    same = theory.prediction_4_1(
        hand_made_sweep(lambda b, wd, s: {8: 20.0, 32: 30.0, 128: 40.0 + s}[b] + (0 if wd else 25))
    ).tests
    b = same.set_index("symbol").loc["B"]
    assert b["verdict"] == "holds without weight decay" and b["ci_low"] > 2
    assert b["control_effect"] == pytest.approx(b["effect"]) and not b["difference_ci_low"] > 0
    # equal ranks at every B: no trend (τ = 0, effect 0: the whole interval below the minimum effect)
    flat = (
        theory.prediction_4_1(hand_made_sweep(lambda b, wd, s: 30.0 if wd else 50.0)).tests.set_index("symbol").loc["B"]
    )
    assert flat["verdict"] == "fails" and flat["effect"] == 0 and flat["p"] == 1
    # the rank falls with B: fails, the other way significantly
    reverse = theory.prediction_4_1(
        hand_made_sweep(lambda b, wd, s: {8: 40.0, 32: 30.0, 128: 20.0}[b] if wd else 50.0)
    ).tests
    assert (
        reverse.set_index("symbol").at["B", "verdict"] == "fails"
        and "other way" in reverse.set_index("symbol").at["B", "why"]
    )
    # the same ranks, but the runs with weight decay are still shrinking: not at the equilibrium Thm 3.3 assumes
    stopped = theory.prediction_4_1(hand_made_sweep(shrinking=True)).tests.set_index("symbol").loc["B"]
    assert stopped["verdict"] == "inconclusive" and "not converged: 15 of 15 runs" in stopped["why"]
    # one seed only: no interval
    one = hand_made_sweep()
    one = dataclasses.replace(one, runs=one.runs[one.runs["train.seed"] == 0])
    single = theory.prediction_4_1(one).tests.set_index("symbol").loc["B"]
    assert single["verdict"] == "inconclusive" and "too few seeds" in single["why"] and math.isnan(single["ci_low"])
    # every run without weight decay: B's effect is not the papers'
    none = hand_made_sweep()
    none = dataclasses.replace(none, runs=none.runs[none.runs["optimizer.weight_decay"] == 0])
    assert theory.prediction_4_1(none).tests.set_index("symbol").at["B", "verdict"] == "not applicable"


def test_prediction_figure_draws_the_effects():
    tests = theory.prediction_4_1(hand_made_sweep()).tests
    figure = figures.prediction_figure(tests)
    (ax,) = figure.axes
    assert ax.get_title() == "GSGP Prediction 4.1" and [t.get_text() for t in ax.get_xticklabels()] == ["B", "λ"]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)  # B and λ with weight decay, B's λ = 0 control
    assert heights == sorted(
        round(v, 6) for v in [*tests["effect"], tests.set_index("symbol").at["B", "control_effect"]]
    )
    bars = [segment[:, 1] for c in ax.collections for segment in c.get_segments()]  # the error bars' y ranges
    intervals = sorted((round(float(y.min()), 6), round(float(y.max()), 6)) for y in bars)
    b = tests.set_index("symbol").loc["B"]
    expected = [*zip(tests["ci_low"], tests["ci_high"]), (b["control_ci_low"], b["control_ci_high"])]
    assert intervals == sorted((round(lo, 6), round(hi, 6)) for lo, hi in expected)  # the error bars are the intervals
    assert [t.get_text() for t in ax.texts] == ["holds", "holds"]
    assert figures.prediction_figure(theory.prediction_4_1(hand_made_sweep()))  # the Prediction itself
    with pytest.raises(ValueError, match="no knobs"):
        figures.prediction_figure(tests.iloc[:0])


# -- the command and the figures ------------------------------------------------------------------------
def test_theory_command(stored, tmp_path):
    runner = CliRunner()
    run = stored["runs"][0].path
    out = runner.invoke(
        main,
        ["theory", str(run), "--samples", "8", "--batches", "2", "--eps", "0.01", "--data-dir", str(stored["data"])],
    )
    assert out.exit_code == 0, out.output
    for check in (
        "gsgp_theorem_3_3", "gsgp_lemma_3_2", "gp_sgd_noise", "gsgp_lemma_3_1", "gp_lemma_2", "gp_theorem_1",
        "chen_assumption_2_5",
    ):
        assert check in out.output
    sweep = runner.invoke(main, ["theory", str(stored["sweep"]), "--records-only"])
    assert sweep.exit_code == 0 and "GSGP Prediction 4.1:" in sweep.output and "pairs agree" not in sweep.output
    # the per-knob table: B varies (8 and 32 with weight decay, 8 without), one seed: no interval
    prediction = theory.prediction_4_1(rb.load(stored["sweep"])).tests
    assert list(prediction["symbol"]) == ["B", "λ"]
    table = sweep.output[sweep.output.index("GSGP Prediction 4.1:") :].splitlines()
    assert table[1].split()[:3] == ["symbol", "verdict", "effect"] and "why" in table[1]
    for line, (_, row) in zip(table[2:], prediction.iterrows()):
        assert line.split()[0] == row["symbol"] and row["verdict"] in line and row["why"] in line
    config = tmp_path / "tiny.yaml"
    config.write_text("model: mlp-2-16\ndata: {name: digits, train_size: 64, test_size: 16}\n")
    ranks = runner.invoke(
        main, ["theory", "--gradient-rank", str(config), "--samples", "4", "--data-dir", str(stored["data"])]
    )
    assert ranks.exit_code == 0 and "4 samples" in ranks.output and "gsgp_lemma_3_1" in ranks.output
    neither = runner.invoke(main, ["theory"])
    assert neither.exit_code == 2 and "one of the two" in neither.output and "Traceback" not in neither.output


def test_figures(stored):
    results = rb.load(stored["sweep"])
    made = [
        figures.theorem_3_3_figure(theory.theorem_3_3(results)),
        figures.lemma_3_2_figure(theory.lemma_3_2(results)),
        figures.batch_gradient_figure(
            theory.chen_theorem_2_6(stored["chen"].path, batches=4, data_root=stored["data"])
        ),
        figures.gradient_rank_figure(theory.gradient_rank_at(stored["runs"][0].path, 8, data_root=stored["data"])),
        figures.prediction_figure(theory.prediction_4_1(hand_made_sweep()).tests),
    ]
    assert all(isinstance(f, Figure) and f.axes for f in made)
    assert len(made[3].axes) == 2  # Lemma 3.1 and GP Lemma 2 panels
    with pytest.raises(ValueError, match="no gsgp_lemma_3_2 rows"):
        figures.lemma_3_2_figure(theory.theorem_3_3(results))
