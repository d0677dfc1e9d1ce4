"""Cohort models: the registry, each member = its plain module, GP's detached batch norm."""

import pytest
import torch

import rankbias as rb
from rankbias.models import build_model, parse_model_name
from rankbias.models.layers import CohortBatchNorm


def cohort(name: str, members: int = 3, bias: bool = False, input_shape=(1, 4, 5), n_out: int = 7):
    config = rb.RunConfig.from_dict({"model": {"name": name, "bias": bias}}).model
    model = build_model(config, members, input_shape, n_out)
    for r in range(members):
        model.reset_member(r, torch.Generator().manual_seed(10 + r))
    return model


def test_registry_parses_the_papers_names():
    assert parse_model_name("mlp-bn-10-100") == parse_model_name("MLP-BN-10-100")
    assert (parse_model_name("res-5-500").family, parse_model_name("res-5-500").depth) == ("res", 5)
    assert parse_model_name("twolayer-8192").width == 8192
    with pytest.raises(ValueError, match="mlp-bn-L-H"):
        parse_model_name("mlp-bn-10")


@pytest.mark.parametrize(
    "name, matrices",
    [
        ("mlp-3-8", [("hidden.0", (8, 20)), ("hidden.1", (8, 8)), ("hidden.2", (8, 8)), ("out", (7, 8))]),
        ("mlp-bn-2-8", [("hidden.0", (8, 20)), ("hidden.1", (8, 8)), ("out", (7, 8))]),
        ("res-bn-2-8", [("input", (8, 20)), ("blocks.0.w1", (8, 8)), ("blocks.0.w2", (8, 8)), ("blocks.1.w1", (8, 8)), ("blocks.1.w2", (8, 8)), ("out", (7, 8))]),
        ("twolayer-16", [("V", (16, 20)), ("a", (7, 16))]),
    ],
)
def test_each_model_lists_its_weight_matrices(name, matrices):
    model = cohort(name)
    infos = model.matrix_infos()
    assert [(i.name, i.shape) for i in infos] == matrices
    assert [i.classifier for i in infos] == [False] * (len(matrices) - 1) + [True]
    assert all(i.m_l == 1 for i in infos)
    assert all(model.weight_matrix(i.name).shape == (3, *i.shape) for i in infos)


@pytest.mark.parametrize("name, bias", [("mlp-2-8", True), ("mlp-bn-2-8", False), ("res-3-8", True), ("res-bn-2-8", False), ("twolayer-16", False)])
def test_cohort_forward_equals_each_members_plain_module(name, bias):
    model = cohort(name, bias=bias)
    x = torch.randn(3, 6, 1, 4, 5)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        out = model(x)
        for r in range(3):
            plain = model.member_module(r)
            getattr(plain, mode)()
            torch.testing.assert_close(out[r], plain(x[r]), rtol=1e-5, atol=1e-5)
    # different seeds give different members; no parameter is shared
    assert not torch.equal(model.weight_matrix(model.matrix_infos()[0].name)[0], model.weight_matrix(model.matrix_infos()[0].name)[1])
    assert all(p.shape[0] == 3 for p in model.parameters()) and all(b.shape[0] == 3 for b in model.buffers())


def test_twolayer_initialization_is_kaiming_with_zero_bias():
    model = cohort("twolayer-4096", members=1, input_shape=(50,), n_out=1)
    v = model.weight_matrix("V")[0]
    assert v.std().item() == pytest.approx((2 / 50) ** 0.5, rel=0.03)
    assert torch.count_nonzero(model.V.bias) == 0


def test_detached_variance_batch_norm():
    """GP's variant: same values and running statistics; the variance carries no gradient."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, requires_grad=True)
    plain, detached = CohortBatchNorm(2, 5), CohortBatchNorm(2, 5, detach_var=True)
    y_plain, y_detached = plain(x), detached(x)
    torch.testing.assert_close(y_plain, y_detached)
    torch.testing.assert_close(plain.running_var, detached.running_var)
    torch.testing.assert_close(plain.running_mean, detached.running_mean)
    weights = torch.randn(2, 8, 5)
    (g_plain,) = torch.autograd.grad((y_plain * weights).sum(), x)
    (g_detached,) = torch.autograd.grad((y_detached * weights).sum(), x)
    # with the variance detached, the gradient is (w·rstd)·(g − mean(g)) per feature
    rstd = torch.rsqrt(x.detach().var(1, unbiased=False, keepdim=True) + 1e-5)
    expected = rstd * (weights - weights.mean(1, keepdim=True))
    torch.testing.assert_close(g_detached, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(g_plain, g_detached, atol=1e-3)
