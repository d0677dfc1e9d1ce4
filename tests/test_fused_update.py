"""The fused SGD update: the cohort linear layers' backward updates their weights in
place (``CohortSGD.fuse``) and gives the same parameters and momentum buffers as the unfused
``CohortSGD.step``.

The comparisons over many steps run in float64, where the two differ by summation order only
(≈ 1e-15 a step); in float32 a long run of a network amplifies rounding differences chaotically,
so the float32 check runs a few steps only.
"""

import pytest
import torch

import rankbias as rb
from rankbias.data import load_dataset
from rankbias.models import build_model
from rankbias.options import EngineOptions
from rankbias.store import RunStore
from rankbias.training.engine import CohortTrainer, Member
from rankbias.training.losses import member_losses
from rankbias.training.optimizer import CohortSGD

from .conftest import small_config
from .test_engine import assert_same_records

SHAPE = (1, 8, 8)
LR = [0.05, 0.1, 0.02]
# per member: momentum, nesterov, weight decay (different lr and weight decay per member throughout)
CASES = {
    "plain SGD": ([0.0] * 3, [False] * 3, [1e-2, 5e-3, 2e-2]),
    "plain SGD, no weight decay": ([0.0] * 3, [False] * 3, [0.0] * 3),
    "momentum": ([0.9, 0.5, 0.0], [False] * 3, [1e-2, 5e-3, 0.0]),
    "nesterov": ([0.9, 0.8, 0.7], [True] * 3, [1e-2, 5e-3, 2e-2]),
    "nesterov, no weight decay": ([0.9] * 3, [True] * 3, [0.0] * 3),
    "nesterov and momentum mixed": ([0.9, 0.5, 0.9], [True, False, False], [1e-2, 0.0, 5e-4]),
}


def train(fused: bool, momentum, nesterov, weight_decay, dtype, steps, strategy="folded", drop_at=None):
    """``steps`` SGD steps of a 3-member mlp-bn with biases on random data; the learning rates
    change at step 10 (a schedule) and member 1 is dropped at ``drop_at`` (divergence)."""
    config = rb.RunConfig.from_dict({"model": {"name": "mlp-bn-2-8", "bias": True}}).model
    model = build_model(config, 3, SHAPE, 10, strategy).to(dtype)
    for r in range(3):
        model.reset_member(r, torch.Generator().manual_seed(r))
    optimizer = CohortSGD(model.parameters(), lr=LR, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if fused:
        assert optimizer.fuse(model.modules()) == 3  # hidden.0, hidden.1, out
    data = torch.Generator().manual_seed(7)
    members = 3
    for step in range(steps):
        if step == 10:
            optimizer.set_lr([0.01, 0.2, 0.03][:members])
        if step == drop_at:
            keep = torch.tensor([0, 2])
            for param in model.parameters():
                param.data = param.data[keep]
            for module in model.modules():
                for name, buffer in module._buffers.items():
                    module._buffers[name] = buffer[keep]
            optimizer.select(keep)
            members = 2
        x = torch.randn(3, 16, *SHAPE, generator=data, dtype=dtype)[:members]
        y = torch.randint(0, 10, (3, 16), generator=data)[:members]
        member_losses("cross_entropy", model(x), y).sum().backward()
        optimizer.step()
    return model, optimizer


def assert_same_training(a, b, rtol, atol):
    (model_a, opt_a), (model_b, opt_b) = a, b
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol, msg=name)
        assert pa.grad is None and pb.grad is None
    assert len(opt_a.buffers) == len(opt_b.buffers)
    for name, ba, bb in zip([n for n, _ in model_a.named_parameters()], opt_a.buffers, opt_b.buffers):
        torch.testing.assert_close(ba, bb, rtol=rtol, atol=atol, msg=f"momentum of {name}")


@pytest.mark.parametrize("case", list(CASES))
def test_fused_update_equals_unfused_in_float64_over_50_steps(case):
    momentum, nesterov, weight_decay = CASES[case]
    fused = train(True, momentum, nesterov, weight_decay, torch.float64, 50, drop_at=30)
    unfused = train(False, momentum, nesterov, weight_decay, torch.float64, 50, drop_at=30)
    assert_same_training(fused, unfused, rtol=0, atol=1e-12)
    start = train(False, momentum, nesterov, weight_decay, torch.float64, 0)[0]
    assert (fused[0].net.hidden[0].weight - start.net.hidden[0].weight[[0, 2]]).abs().max() > 1e-2  # it trained


def test_fused_update_equals_unfused_in_float32_over_a_few_steps():
    momentum, nesterov, weight_decay = CASES["nesterov and momentum mixed"]
    fused = train(True, momentum, nesterov, weight_decay, torch.float32, 5)
    unfused = train(False, momentum, nesterov, weight_decay, torch.float32, 5)
    assert_same_training(fused, unfused, rtol=1e-5, atol=1e-6)


def test_a_fused_weight_gets_no_gradient_and_the_rest_stay_with_the_optimizer():
    config = rb.RunConfig.from_dict({"model": {"name": "mlp-bn-2-8", "bias": True}}).model
    model = build_model(config, 2, SHAPE, 10, "folded")
    optimizer = CohortSGD(
        model.parameters(), lr=[0.1, 0.1], momentum=[0.0] * 2, weight_decay=[0.0] * 2, nesterov=[False] * 2
    )
    optimizer.fuse(model.modules())
    before = model.net.out.weight.detach().clone()
    member_losses("cross_entropy", model(torch.randn(2, 4, *SHAPE)), torch.randint(0, 10, (2, 4))).sum().backward()
    assert model.net.out.weight.grad is None and not torch.equal(model.net.out.weight, before)  # updated in backward
    assert model.net.out.bias.grad is not None and model.net.norms[0].weight.grad is not None
    optimizer.step()
    assert all(p.grad is None for p in model.parameters())


def test_loop_strategy_falls_back_to_the_gradient():
    """Under the ``loop`` strategy the plain layers run, so a fused weight is updated from its .grad."""
    momentum, nesterov, weight_decay = CASES["momentum"]
    fused = train(True, momentum, nesterov, weight_decay, torch.float64, 5, strategy="loop")
    folded = train(False, momentum, nesterov, weight_decay, torch.float64, 5)
    assert_same_training(fused, folded, rtol=0, atol=1e-12)


def test_engine_fused_and_unfused_give_the_same_records(tmp_path):
    configs = [
        small_config(),
        small_config(**{"train.seed": 2, "optimizer.nesterov": True, "optimizer.weight_decay": 0.0}),
    ]
    data = load_dataset(configs[0].data)
    for fused, folder in ((None, "fused"), (False, "unfused")):  # None: the default, fused on a CPU
        trainer = CohortTrainer(
            [Member(c, RunStore(tmp_path / folder, c.run_id())) for c in configs],
            data,
            EngineOptions(device="cpu", fused_update=fused),
        )
        assert (trainer.model.net.out.fused_step is not None) == (fused is None)
        trainer.run()
    for config in configs:
        assert_same_records(tmp_path / "fused", tmp_path / "unfused", config.run_id(), rtol=1e-4, atol=1e-5)
