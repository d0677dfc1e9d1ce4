"""Models: the registry, every family's matrices and sizes, each member = its plain module."""

import pytest
import torch
from torch import nn

import rankbias as rb
from rankbias.models import build_model, list_models, matrix_infos, parse_model_name, plain_model
from rankbias.models.layers import CohortBatchNorm, DetachedVarBatchNorm
from rankbias.models.registry import parse_template

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)
# tiny members of every family, for the forward-equality tests (dropout on where there is one)
TINY = {
    "mlp-2-8": ({"bias": True}, DIGITS),
    "mlp-bn-2-8": ({}, DIGITS),
    "res-3-8": ({"bias": True}, DIGITS),
    "res-bn-2-8": ({"bn_detach_var": True}, DIGITS),
    "twolayer-16": ({}, (20,)),
    "convnet-2-8": ({}, DIGITS),
    "resnet18": ({"width": 4, "activation": "leaky_relu"}, DIGITS),
    "vgg16": ({"width": 4}, DIGITS),
    "vit": ({"width": 16, "dropout": 0.0}, DIGITS),
}


def model_config(name, **options):
    return rb.RunConfig.from_dict({"model": {"name": name, **options}}).model


def cohort(name: str, members: int = 3, input_shape=DIGITS, n_out: int = 7, strategy="auto", **options):
    model = build_model(model_config(name, **options), members, input_shape, n_out, strategy)
    for r in range(members):
        model.reset_member(r, torch.Generator().manual_seed(10 + r))
    return model


def test_registry_parses_the_papers_names_and_lists_every_family():
    assert parse_model_name("mlp-bn-10-100") == parse_model_name("MLP-BN-10-100")
    assert (parse_model_name("res-5-500").family, parse_model_name("res-5-500").depth) == ("res", 5)
    assert parse_model_name("twolayer-8192").width == 8192
    assert (parse_model_name("convnet-3-64").depth, parse_model_name("convnet-3-64").width) == (3, 64)
    assert parse_model_name("resnet18").activation == "relu" and parse_model_name("resnet18").width == 64
    with pytest.raises(ValueError, match="mlp-bn-L-H"):
        parse_model_name("mlp-bn-10")
    patterns = [m["pattern"] for m in list_models()]
    assert patterns == [
        "mlp-L-H", "mlp-bn-L-H", "res-L-H", "res-bn-L-H", "twolayer-H", "convnet-D-W", "vgg16", "resnet18", "vit"
    ]
    assert all(m["paper"] and m["description"] for m in list_models())
    assert rb.list_models() == list_models()


def test_a_family_is_registered_from_one_name_template():
    assert parse_template("mlp-bn-{depth:L}-{width:H}")[:2] == ("mlp-bn", "mlp-bn-L-H")
    assert parse_template("twolayer-{width:H}")[:2] == ("twolayer", "twolayer-H")
    assert parse_template("vgg16")[:2] == ("vgg16", "vgg16")
    regex = parse_template("convnet-{depth:D}-{width:W}")[2]
    assert regex.fullmatch("convnet-3-64").groupdict() == {"depth": "3", "width": "64"}
    assert not any(regex.fullmatch(n) for n in ("convnet-3", "convnet-D-W", "convnet-3-64-1", "convnetx3-64"))
    spec = parse_model_name("vit")  # the options are plain fields of the spec
    assert (spec.width, spec.mlp_dim, spec.dropout, spec.activation, spec.bn_detach_var) == (
        512, None, 0.1, "gelu", False
    )
    assert parse_model_name("res-bn-2-8").bn_detach_var is False
    assert build_model(model_config("res-bn-2-8", bn_detach_var=True), 1, DIGITS, 3).spec.bn_detach_var is True


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_of_the_papers_architectures():
    """ResNet-18 (CIFAR, 10 classes) has 11,173,962 parameters; VGG-16 as defined in docs/models.md."""
    with torch.device("meta"):
        assert parameters(plain_model(model_config("resnet18"), CIFAR, 10)) == 11_173_962
        assert parameters(plain_model(model_config("vgg16"), CIFAR, 10)) == 14_728_266
        assert parameters(plain_model(model_config("convnet-3-64"), (1, 32, 32), 10)) == 169_162
        assert parameters(plain_model(model_config("vit"), CIFAR, 10)) == 9_532_938


def test_counted_matrices_per_family_as_the_authors_count():
    resnet = matrix_infos(model_config("resnet18"), CIFAR, 10)
    counted = [i for i in resnet if i.counted]
    assert len(counted) == 17 and all(i.shape[1] % 9 == 0 for i in counted)  # stem + 16 block 3×3 convolutions
    assert {i.name for i in resnet if not i.counted} == {
        "fc", "layer2.0.shortcut.0", "layer3.0.shortcut.0", "layer4.0.shortcut.0"
    }
    assert next(i for i in resnet if i.name == "layer4.1.conv2").m_l == 16  # 4×4 output positions
    vgg = matrix_infos(model_config("vgg16"), CIFAR, 10)
    assert sum(i.counted for i in vgg) == 13 and vgg[-1].name == "fc" and vgg[-1].classifier
    convnet = matrix_infos(model_config("convnet-3-64"), (1, 32, 32), 10)
    assert [(i.shape, i.m_l, i.counted) for i in convnet] == [
        ((64, 4), 256, True), ((64, 256), 64, True),
        ((64, 576), 64, True), ((64, 576), 64, True), ((64, 576), 64, True),
        ((10, 4096), 1, False),
    ]
    vit = matrix_infos(model_config("vit"), CIFAR, 10)
    assert sum(i.counted for i in vit) == 36 and {i.m_l for i in vit if i.counted} == {65}  # 64 patches + class token
    assert {i.name for i in vit if not i.counted} == {"patch_embed", "head"}


def test_a_convolution_is_the_out_by_in_k_k_matrix_on_hand_built_weights():
    model = cohort("convnet-1-2", members=2, input_shape=(1, 8, 8))
    conv = model.net.convs[0]
    weight = torch.arange(2 * 2 * 2 * 3 * 3, dtype=torch.float32).view(2, 2, 2, 3, 3)
    with torch.no_grad():
        conv.weight.copy_(weight)
    matrix = model.weight_matrix("convs.0")
    assert matrix.shape == (2, 2, 18)
    assert torch.equal(matrix[1, 0], weight[1, 0].reshape(-1))  # row = the vectorized kernel of one output channel
    assert matrix[1, 1, 9].item() == weight[1, 1, 1, 0, 0].item()  # column = (input channel, kernel row, kernel column)
    info = {i.name: i for i in model.matrix_infos()}
    # 8 -> 4 -> 2 positions per side
    assert info["stem.0"].m_l == 16 and info["stem.1"].m_l == 4 and info["convs.0"].m_l == 4


@pytest.mark.parametrize("strategy", ["folded", "loop"])
@pytest.mark.parametrize("name", list(TINY))
def test_cohort_forward_equals_each_members_plain_module(name, strategy):
    options, shape = TINY[name]
    model = cohort(name, input_shape=shape, strategy=strategy, **options)
    x = torch.randn(3, 6, *shape)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        out = model(x)
        for r in range(3):
            plain = getattr(model.member_module(r), mode)()
            torch.testing.assert_close(out[r], plain(x[r]), rtol=1e-4, atol=1e-4)
    shared = model(x[0], shared=True)  # (B, ...) for every member: the first layer runs once for all (eval mode)
    for r in range(3):
        torch.testing.assert_close(shared[r], model.member_module(r).eval()(x[0]), rtol=1e-4, atol=1e-4)
    first = model.matrix_infos()[0].name
    assert not torch.equal(model.weight_matrix(first)[0], model.weight_matrix(first)[1])  # different seeds
    assert all(p.shape[0] == 3 for p in model.parameters()) and all(b.shape[0] == 3 for b in model.buffers())
    assert not any(type(m).__name__.startswith("Cohort") for m in model.member_module(0).modules())


def test_plain_model_is_a_member_and_runs_on_any_image_size():
    net = plain_model(model_config("vgg16", width=4), (1, 8, 8), 10, seed=3)
    same = plain_model(model_config("vgg16", width=4), (1, 8, 8), 10, seed=3)
    x = torch.randn(5, 1, 8, 8)
    net.eval(), same.eval()
    torch.testing.assert_close(net(x), same(x))
    for name, shape in (
        ("resnet18", (1, 28, 28)), ("vgg16", (3, 28, 28)), ("vit", (3, 12, 12)), ("convnet-1-4", (1, 6, 6))
    ):
        net = plain_model(model_config(name, **({"width": 8} if name != "convnet-1-4" else {})), shape, 10)
        assert net(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("strategy", ["folded", "loop"])
def test_cohort_dropout_draws_from_each_members_generator(strategy):
    model = cohort("vit", members=2, input_shape=(1, 8, 8), strategy=strategy, width=8, dropout=0.5)
    x = torch.randn(2, 4, 1, 8, 8)
    model.train()
    if strategy == "folded":
        with pytest.raises(RuntimeError, match="generators"):
            model(x)
    model.set_generators([torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    a = model(x)
    model.set_generators([torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    torch.testing.assert_close(model(x), a)  # same generators, same masks
    model.set_generators([torch.Generator().manual_seed(1), torch.Generator().manual_seed(5)])
    b = model(x)
    torch.testing.assert_close(b[0], a[0])
    assert not torch.allclose(b[1], a[1])


def test_twolayer_initialization_is_kaiming_with_zero_bias():
    model = cohort("twolayer-4096", members=1, input_shape=(50,), n_out=1)
    v = model.weight_matrix("V")[0]
    assert v.std().item() == pytest.approx((2 / 50) ** 0.5, rel=0.03)
    assert torch.count_nonzero(model.net.V.bias) == 0


def test_detached_variance_batch_norm():
    """GP's variant: same values and running statistics; the variance carries no gradient."""
    torch.manual_seed(0)
    x = torch.randn(8, 2 * 5, requires_grad=True)  # (B, R·F): 2 members of 5 features
    plain, detached = CohortBatchNorm(2, 5), CohortBatchNorm(2, 5, detach_var=True)
    y_plain, y_detached = plain(x), detached(x)
    torch.testing.assert_close(y_plain, y_detached)
    torch.testing.assert_close(plain.running_var, detached.running_var)
    torch.testing.assert_close(plain.running_mean, detached.running_mean)
    weights = torch.randn(8, 10)
    (g_plain,) = torch.autograd.grad((y_plain * weights).sum(), x)
    (g_detached,) = torch.autograd.grad((y_detached * weights).sum(), x)
    # with the variance detached, the gradient is (w·rstd)·(g − mean(g)) per feature
    rstd = torch.rsqrt(x.detach().var(0, unbiased=False, keepdim=True) + 1e-5)
    expected = rstd * (weights - weights.mean(0, keepdim=True))
    torch.testing.assert_close(g_detached, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(g_plain, g_detached, atol=1e-3)
    # the plain module of a member is the same function, on images too
    images = torch.randn(6, 3, 4, 4, requires_grad=True)
    cohort_bn, member_bn = CohortBatchNorm(1, 3, detach_var=True), DetachedVarBatchNorm(3)
    torch.testing.assert_close(cohort_bn(images), member_bn(images))
    torch.testing.assert_close(cohort_bn.running_var[0], member_bn.running_var)


@pytest.mark.parametrize("strategy", ["folded", "loop"])
@pytest.mark.parametrize("name", ["convnet-2-8", "resnet18", "vgg16", "vit"])
def test_a_member_in_a_cohort_trains_exactly_as_alone_in_float64(name, strategy):
    """The cohort's math is exact: in float64, five SGD steps (momentum, weight decay, dropout masks
    from the member's generator) leave a member's parameters equal to a solo model's to 1e-10.
    In float32 the two differ by summation order only (see ``test_families.py``)."""
    from rankbias.training.losses import member_losses
    from rankbias.training.optimizer import CohortSGD

    options, shape = TINY[name]
    options = {**options, "dropout": 0.2} if name == "vit" else options
    config = model_config(name, **options)
    pair, alone = (
        build_model(config, 2, shape, 10, strategy).double(),
        build_model(config, 1, shape, 10, "folded").double(),
    )
    optimizers = []
    for model, seeds in ((pair, (0, 1)), (alone, (0,))):
        for r, seed in enumerate(seeds):
            model.reset_member(r, torch.Generator().manual_seed(seed))
        model.set_generators([torch.Generator().manual_seed(100 + s) for s in seeds])
        optimizers.append(
            CohortSGD(
                model.parameters(),
                lr=[0.05, 0.01][: len(seeds)],
                momentum=[0.9, 0.0][: len(seeds)],
                weight_decay=[5e-3, 0.0][: len(seeds)],
                nesterov=[False] * len(seeds),
            )
        )
    data = torch.Generator().manual_seed(7)
    for _ in range(5):
        x, y = (
            torch.randn(2, 16, *shape, generator=data, dtype=torch.float64),
            torch.randint(0, 10, (2, 16), generator=data),
        )
        for model, optimizer, members in ((pair, optimizers[0], 2), (alone, optimizers[1], 1)):
            member_losses("cross_entropy", model(x[:members]), y[:members]).sum().backward()
            optimizer.step()
    for (param_name, a), b in zip(pair.named_parameters(), alone.parameters()):
        torch.testing.assert_close(a[0], b[0], rtol=1e-10, atol=1e-12, msg=param_name)
    assert not torch.equal(a[0], a[1])


# every family, and a biased linear layer wider than the CPU kernels' vector blocks (a bias
# gradient summed over the batch in place depended on the member's column position)
INVARIANT = {**TINY, "mlp-2-40": ({"bias": True}, DIGITS)}


@pytest.mark.parametrize("name", list(INVARIANT))
def test_a_members_arithmetic_does_not_depend_on_its_cohort(name):
    """Bit for bit: a run resumed alone (or in another cohort) must replay the records of its
    uninterrupted cohort, so a member's outputs on its own inputs (train mode), on an input shared
    by the cohort (evaluation) and its gradients are the same alone as at any place in a cohort
    of 3 or 6. At one torch thread, the training processes' default: with more, the BLAS may
    split a batched product differently for different batch counts (measured: twolayer-16
    differs in the last bits at 2 threads). On a CPU the auto strategy runs convolution and
    attention networks member by member (their grouped kernels sum in another order than a
    plain network's)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _member_alone_and_in_cohorts(name)
    finally:
        torch.set_num_threads(threads)


def _member_alone_and_in_cohorts(name):
    from rankbias.training.losses import member_losses

    options, shape = INVARIANT[name]
    six = cohort(name, members=6, input_shape=shape, **options)
    x, y = torch.randn(6, 8, *shape), torch.randint(0, 7, (6, 8))

    def member(members: int, place: int):
        order = [place] + [r for r in range(6) if r != place][: members - 1]
        model = cohort(name, members=members, input_shape=shape, **options)
        with torch.no_grad():
            for (_, a), (_, b) in zip(model.state_dict().items(), six.state_dict().items()):
                a.copy_(b[order])
        out = model.train()(x[order])
        member_losses("cross_entropy", out, y[order]).sum().backward()
        shared = model.eval()(x[place], shared=True)
        return [out[0], shared[0], *(p.grad[0] for p in model.parameters())]

    names = ["train output", "eval output", *(n for n, _ in six.named_parameters())]
    for members, place in ((3, 0), (3, 2), (6, 4)):
        alone, together = member(1, place), member(members, place)
        for what, a, b in zip(names, alone, together):
            assert torch.equal(a, b), (members, place, what)
