"""Tests of the test: every check can come out "fails", noise does not pass, a placebo does not
pass, a clear effect does, and an effect that is as large without weight decay is not "holds".

The rates measured here are in docs/reproduce.md ("Tests of the test"). Draws are seeded.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import rankbias as rb
from rankbias.reproduce.catalog import Claim
from rankbias.reproduce.claims import check
from rankbias.store.records import Results
from rankbias.theory.prediction import trend_verdict
from rankbias.theory.trend import signed_tau, trend_test

B, MU, WD = "train.batch_size", "optimizer.lr", "optimizer.weight_decay"
DRAWS = 500
NO_CONVERGENCE = pd.DataFrame(columns=["run_id", "drift", "converged"])  # every run counts as converged


def sweep(values, *, levels=(8, 32, 128), panels=(0.1, 0.3), seeds=3, decays=(5e-3, 0.0), full=64.0) -> pd.DataFrame:
    """A B-trend preset's final values: ``values(b, panel, wd, seed)`` → the final rank."""
    rows = []
    for wd in decays:
        for seed in range(seeds):
            for panel in panels:
                for b in levels:
                    rows.append({"run_id": f"{b}-{panel}-{wd}-{seed}", B: b, MU: panel, WD: wd, "train.seed": seed,
                                 "data.subset_seed": seed, "value": values(b, panel, wd, seed), "full": full})
    return pd.DataFrame(rows)


def verdict_of(frame, knob=B):
    return trend_verdict(frame, knob, NO_CONVERGENCE, 2.0)[0]


def rate(verdicts, wanted="holds") -> float:
    return float(np.mean([v == wanted for v in verdicts]))


def test_signed_tau_is_scipys_kendall_tau_b():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 3, 6).astype(float), rng.integers(0, 4, 6).astype(float)
        expected = stats.kendalltau(x, y).statistic
        assert signed_tau(x, y, "smaller")[0] == pytest.approx(0.0 if np.isnan(expected) else expected)
        assert signed_tau(x, y, "larger")[0] == pytest.approx(0.0 if np.isnan(expected) else -expected)


def test_exact_permutation_p_of_a_perfect_trend():
    # 2 blocks of 3 levels, both perfectly ordered: 1 of 6² arrangements reaches τ = 1
    frame = pd.DataFrame({"k": [1, 2, 3] * 2, "value": [1.0, 2, 3, 1, 2, 3], "block": [0, 0, 0, 1, 1, 1],
                          "seed": [0, 0, 0, 1, 1, 1], "full": 10.0})
    test = trend_test(frame, "k", "smaller")
    assert test.exact and test.statistic == 1 and test.p == pytest.approx(1 / 36) and test.p_opposite == 1
    assert test.effect == pytest.approx(20.0) and test.ci == (20.0, 20.0)  # value 3 − 1 of 10, both seeds


# -- trends: (a) noise, (c) a clear effect, (d) an effect as large at λ = 0 ---------------------------
def test_a_random_ranks_hold_in_at_most_5_percent():
    rng = np.random.default_rng(1)
    verdicts = [verdict_of(sweep(lambda *_: rng.normal(50, 3))) for _ in range(DRAWS)]
    assert rate(verdicts) <= 0.05, rate(verdicts)
    assert rate(verdicts, "fails") > 0.2  # noise-sized effects: often the whole interval lies below 2 %


def test_a_random_ranks_of_a_lambda_trend_hold_in_at_most_5_percent():
    rng = np.random.default_rng(2)  # λ ∈ {0, 5e-3, 5e-2} in panels B ∈ {16, 128}
    verdicts = [verdict_of(sweep(lambda *_: rng.normal(50, 3), levels=(16, 128), panels=(0.1,),
                                 decays=(0.0, 5e-3, 5e-2)), WD)
                for _ in range(DRAWS)]  # fmt: skip
    assert rate(verdicts) <= 0.05, rate(verdicts)


def test_c_a_clear_effect_holds_in_at_least_95_percent():
    rng = np.random.default_rng(3)
    effect = lambda b, panel, wd, seed: 40 + (4 * np.log2(b / 8) if wd > 0 else 0) + rng.normal(0, 1)
    verdicts = [verdict_of(sweep(effect)) for _ in range(DRAWS // 5)]
    assert rate(verdicts) >= 0.95, rate(verdicts)


def test_d_an_effect_as_large_without_weight_decay_never_holds():
    rng = np.random.default_rng(4)
    effect = lambda b, panel, wd, seed: 40 + 4 * np.log2(b / 8) + rng.normal(0, 1)  # same at λ = 0
    verdicts = [verdict_of(sweep(effect)) for _ in range(DRAWS // 5)]
    assert rate(verdicts) == 0.0
    assert rate(verdicts, "holds without weight decay") >= 0.9


def test_a_b_trend_with_lambda_pinned_to_zero_is_not_applicable():
    frame = sweep(lambda b, *_: 40 + b / 8, decays=(0.0,))
    assert verdict_of(frame) == "not applicable"


def test_the_opposite_trend_fails():
    rng = np.random.default_rng(5)
    effect = lambda b, panel, wd, seed: 60 - 4 * np.log2(b / 8) + rng.normal(0, 1)
    assert verdict_of(sweep(effect)) == "fails"


def test_one_seed_is_inconclusive_and_unconverged_runs_are_inconclusive():
    effect = lambda b, panel, wd, seed: 40 + (4 * np.log2(b / 8) if wd > 0 else 0) + 0.1 * seed
    one = sweep(effect, seeds=1)
    verdict, why, *_ = trend_verdict(one, B, NO_CONVERGENCE, 2.0)
    assert verdict == "inconclusive" and "too few seeds" in why
    frame = sweep(effect)
    stopped = pd.DataFrame(
        {
            "run_id": frame["run_id"],
            "drift": 1.0,
            "converged": pd.array([True] * (len(frame) - 1) + [False], "boolean"),
        }
    )
    stopped.loc[frame.index[frame[WD] > 0][0], "converged"] = False
    verdict, why, *_ = trend_verdict(frame, B, stopped, 2.0)
    assert verdict == "inconclusive" and why.startswith("not converged")


# -- (b) placebo: seed replicates of real runs relabelled as knob levels ----------------------------
@pytest.fixture(scope="module")
def replicates(tmp_path_factory):
    """18 real runs: 9 seeds of one configuration with weight decay and 9 of its λ = 0 twin."""
    base = {"model": "mlp-bn-2-16", "data": {"name": "digits", "train_size": 128, "test_size": 64},
            "optimizer": {"lr": 0.1, "weight_decay": 5e-3}, "train": {"batch_size": 16, "epochs": 3},
            "record": {"eps": 1e-2}}
    configs = [rb.RunConfig.from_dict({**base, "optimizer": {"lr": 0.1, "weight_decay": wd},
                                       "train": {**base["train"], "seed": s},
                                       "data": {**base["data"], "subset_seed": s}})
               for wd in (5e-3, 0.0) for s in range(9)]  # fmt: skip
    out = tmp_path_factory.mktemp("replicates")
    rb.train(configs, out, device="cpu")
    from rankbias.theory.prediction import final_values

    return final_values(rb.load(out))


def test_b_placebo_relabelling_of_seed_replicates_holds_in_at_most_10_percent(replicates):
    rng = np.random.default_rng(6)
    verdicts = []
    for _ in range(200):
        frame = []
        for wd, group in replicates.groupby(WD):
            order = rng.permutation(len(group))  # 9 runs → 3 "B levels" × 3 "seeds"
            labelled = group.iloc[order].assign(
                **{B: np.repeat([8, 32, 128], 3)[:len(group)], "train.seed": np.tile(range(3), 3)}
            )
            frame.append(labelled.assign(**{"data.subset_seed": labelled["train.seed"]}))
        verdicts.append(verdict_of(pd.concat(frame, ignore_index=True)))
    assert rate(verdicts) <= 0.10, rate(verdicts)


# -- layer shapes, bounds and properties: each can fail ------------------------------------------
def layered(ranks_initial, ranks_final, *, seeds=3, configs=2, wd=5e-3, norms=(1.0, 1.0)) -> Results:
    """Hand-made records: runs with the given counted ε-ranks at epoch 0 and epoch 20."""
    runs, scalars, layers = [], [], []
    for seed in range(seeds):
        for c in range(configs):
            run_id = f"r{seed}-{c}"
            runs.append({"run_id": run_id, "state": "done", "train.seed": seed, "data.subset_seed": seed,
                         B: 32 * (c + 1), MU: 0.1, WD: wd, "optimizer.momentum": 0.0,
                         "schedule.kind": "constant", "schedule.milestones": (), "schedule.factor": 0.1,
                         "schedule.every": 1, "record.eps": 1e-2, "loss": "cross_entropy"})  # fmt: skip
            for epoch, ranks, norm in ((0, ranks_initial(seed, c), norms[0]), (20, ranks_final(seed, c), norms[1])):
                scalars.append({"run_id": run_id, "epoch": epoch, "step": epoch * 16, "avg_rank": float(np.mean(ranks)),
                                "train_acc": 0.1 + 0.8 * (epoch > 0),
                                "train_loss": 2.3 - 2 * (epoch > 0),
                                "distance": 1.0, "lr": 0.1})  # fmt: skip
                layers += [{"run_id": run_id, "epoch": epoch, "layer": f"l{i}", "index": i,
                            "rows": 64, "cols": 64, "counted": True,
                            "eps_rank": r, "fro_norm": norm, "norm_ratio": 1.0, "stable_rank": r / 4}
                           for i, r in enumerate(ranks)]  # fmt: skip
    return Results(pd.DataFrame(runs), pd.DataFrame(scalars), pd.DataFrame(layers), pd.DataFrame())


BOTTLENECK = Claim("bottleneck", "bottleneck")
BALANCED = Claim("balanced", "balanced", tolerance=0.5)


def test_bottleneck_noise_holds_rarely_and_a_made_bottleneck_holds():
    rng = np.random.default_rng(7)
    noisy = [
        check(BOTTLENECK, layered(lambda *_: [64] * 5, lambda *_: list(rng.integers(40, 64, 5)))).verdict
        for _ in range(100)
    ]
    assert rate(noisy) <= 0.05, rate(noisy)
    made = lambda *_: [60 + rng.integers(0, 3), 30 + rng.integers(0, 3), 20 + rng.integers(0, 3), 30, 58]
    assert rate([check(BOTTLENECK, layered(lambda *_: [64] * 5, made)).verdict for _ in range(20)]) >= 0.95
    # one epoch: nothing happened
    none = check(BOTTLENECK, layered(lambda *_: [64] * 5, lambda *_: [64, 64, 63, 64, 64]))
    assert none.verdict == "fails"
    there = check(BOTTLENECK, layered(lambda *_: [64, 30, 30, 30, 64], lambda *_: [64, 30, 30, 30, 64]))
    assert there.verdict == "uninformative"  # present at initialization, training did not make it


def test_balanced_at_initialization_is_uninformative_and_imbalance_fails():
    assert check(BALANCED, layered(lambda *_: [64] * 5, lambda *_: [64] * 5)).verdict == "uninformative"
    assert check(BALANCED, layered(lambda *_: [64] * 5, lambda s, c: [64, 30 + s, 31, 29, 30])).verdict == "holds"
    assert check(BALANCED, layered(lambda *_: [64] * 5, lambda s, c: [64, 60, 5 + s, 60, 8])).verdict == "fails"


def test_norm_ratio_fails_when_the_norm_is_still_shrinking():
    claim = Claim("norm ratio → 1", "norm_ratio")
    assert check(claim, layered(lambda *_: [64] * 3, lambda *_: [60] * 3, norms=(2.0, 2.0))).verdict == "holds"
    # 20 epochs × 16 steps × μλ' = 0.16: pure decay would shrink the norm by e^-0.16, and this one does
    shrinking = layered(lambda *_: [64] * 3, lambda *_: [60] * 3, norms=(2.0, 2.0 * np.exp(-0.16)))
    verdict = check(claim, shrinking)
    assert verdict.verdict == "fails" and (verdict.table["drift"] > 0.9).all()


def test_sgd_noise_fails_when_a_decayed_run_stops_moving():
    claim = Claim("sgd noise", "sgd_noise", min_share=1.0)

    def results(distance_with_decay):
        base = layered(lambda *_: [64] * 3, lambda *_: [60] * 3, configs=1, seeds=6)
        twins = layered(lambda *_: [64] * 3, lambda *_: [60] * 3, configs=1, seeds=6, wd=0.0)
        twins.runs["run_id"] += "z"
        twins.scalars["run_id"] += "z"
        twins.layers["run_id"] += "z"
        base.scalars["distance"] = distance_with_decay
        return Results(pd.concat([base.runs, twins.runs]), pd.concat([base.scalars, twins.scalars]),
                       pd.concat([base.layers, twins.layers]), pd.DataFrame())

    assert check(claim, results(5.0)).verdict == "holds"  # d stays 5× above the twins'
    assert check(claim, results(0.0)).verdict == "fails"  # d(W_t+1, W_t) fell to 0
