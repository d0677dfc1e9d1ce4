import numpy as np
import pytest
import torch
from torch import nn

import rankbias as rb
from rankbias.spectra import effective_rank, eps_rank, rank_measures, singular_values, stable_rank


def matrix_of_rank(rank: int, shape=(40, 30), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))


@pytest.mark.parametrize("rank", [0, 1, 3, 17, 30])
def test_eps_rank_matches_numpy_on_known_ranks(rank):
    w = matrix_of_rank(rank)
    sv = singular_values(torch.tensor(w, dtype=torch.float32))
    assert int(eps_rank(sv, 1e-3)) == rank == np.linalg.matrix_rank(w)
    assert int(eps_rank(sv.numpy(), 1e-3)) == rank


def test_eps_rank_threshold_and_norm_against_numpy():
    sv = np.array([10.0, 1.0, 0.05, 0.001])
    fro = np.sqrt((sv**2).sum())
    for eps in (1e-1, 1e-2, 1e-3, 1e-5):
        assert eps_rank(sv, eps, "fro") == (sv / fro > eps).sum()
        assert eps_rank(sv, eps, "spectral") == (sv / 10.0 > eps).sum()
    # 1/||W||_F = 0.0995 < 0.0999 < 0.1 = 1/||W||_2: the normalization decides
    assert eps_rank(sv, 0.0999, "fro") == 1 and eps_rank(sv, 0.0999, "spectral") == 2


def test_stable_and_effective_rank_against_numpy():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((50, 20))
    sv = np.linalg.svd(w, compute_uv=False)
    assert stable_rank(sv) == pytest.approx(np.linalg.norm(w, "fro") ** 2 / np.linalg.norm(w, 2) ** 2)
    p = sv / sv.sum()
    assert effective_rank(sv) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    torch_values = rank_measures(torch.tensor(sv), 1e-3)
    assert float(torch_values["stable_rank"]) == pytest.approx(stable_rank(sv))
    assert float(torch_values["effective_rank"]) == pytest.approx(effective_rank(sv))
    # rank one: both are exactly one; zero matrix: all zero
    assert stable_rank(np.array([3.0, 0, 0])) == 1 and effective_rank(np.array([3.0, 0, 0])) == pytest.approx(1)
    zero = rank_measures(np.zeros(5))
    assert zero["eps_rank"] == 0 and zero["stable_rank"] == 0 and zero["effective_rank"] == 0


def test_batched_singular_values_equal_one_by_one():
    stack = torch.randn(4, 3, 12, 7)
    batched = singular_values(stack)
    assert batched.shape == (4, 3, 7)
    for i in range(4):
        for j in range(3):
            ref = np.linalg.svd(stack[i, j].double().numpy(), compute_uv=False)
            np.testing.assert_allclose(batched[i, j].numpy(), ref, rtol=1e-4, atol=1e-5)


def test_spectra_of_any_module():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)
    )
    with torch.no_grad():
        model[4].weight.copy_(torch.tensor(matrix_of_rank(2, (5, 36)), dtype=torch.float32))
    table = rb.spectra(model, input_shape=(3, 8, 8))
    assert list(table["name"]) == ["0", "2", "4"]
    assert list(table["shape"]) == [(8, 27), (4, 72), (5, 36)]
    assert list(table["m_l"]) == [64, 9, 1]  # output positions of each conv; 1 for a linear layer
    assert table.loc[2, "eps_rank"] == 2
    assert table.loc[0, "sv"].dtype == np.float32 and len(table.loc[1, "sv"]) == 4
    assert np.isnan(rb.spectra(model).loc[0, "m_l"])  # unknown without an input shape


def test_spectra_of_a_cohort_model_lists_each_member():
    from rankbias.models import build_model

    config = rb.RunConfig.from_dict({"model": "res-bn-2-16"})
    model = build_model(config.model, 3, (10,), 4)
    for r in range(3):
        model.reset_member(r, torch.Generator().manual_seed(r))
    table = rb.spectra(model)
    assert len(table) == 3 * 6 and set(table["member"]) == {0, 1, 2}
    names = [i.name for i in model.matrix_infos()]
    assert list(table[table.member == 1]["name"]) == names
    w = model.weight_matrix("blocks.1.w2")[2].detach()
    row = table[(table.member == 2) & (table.name == "blocks.1.w2")].iloc[0]
    np.testing.assert_allclose(row["sv"], np.linalg.svd(w.numpy(), compute_uv=False), rtol=1e-5)


class Tagger(nn.Module):
    """An embedding, an LSTM, attention and a linear head: every kind of 2-D parameter."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens):
        x = self.embed(tokens.long())
        x, _ = self.lstm(x)
        x, _ = self.attn(x, x, x)
        return self.head(x)


def test_spectra_splits_attention_and_lists_every_parameter_it_skips():
    torch.manual_seed(0)
    model = Tagger()
    table = rb.spectra(model, input_shape=(5,))
    analysed = table[table.analysed]
    assert list(analysed["name"]) == ["attn.q", "attn.k", "attn.v", "attn.out_proj", "head"]
    assert list(analysed["m_l"]) == [5, 5, 5, 5, 5]  # every matrix here is applied to each of the 5 tokens
    q = model.attn.in_proj_weight[:8].detach().numpy()
    np.testing.assert_allclose(analysed.iloc[0]["sv"], np.linalg.svd(q, compute_uv=False), rtol=1e-5)
    skipped = table[~table.analysed].set_index("name")
    assert set(skipped.index) == {"embed.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0"}
    assert "LSTM" in skipped.loc["lstm.weight_ih_l0", "reason"] and "Embedding" in skipped.loc["embed.weight", "reason"]
    assert skipped["eps_rank"].isna().all()


def test_spectra_of_a_vit_member_matches_the_models_own_matrix_list():
    from rankbias.models import matrix_infos, plain_model

    config = rb.RunConfig.from_dict({"model": {"name": "vit", "width": 16}}).model
    net = plain_model(config, (1, 8, 8), 10)
    table = rb.spectra(net, input_shape=(1, 8, 8))
    analysed = table[table.analysed].set_index("name")
    infos = matrix_infos(config, (1, 8, 8), 10)
    assert list(analysed.index) == [i.name for i in infos]
    # 5 tokens; patch positions for the embedding
    assert [analysed.loc[i.name, "m_l"] for i in infos] == [i.m_l for i in infos]
    assert set(table[~table.analysed]["name"]) == {"cls_token.weight", "pos_embed.weight"}


class TokensToLogits(nn.Module):
    """A language model fed a float tensor of token ids (what rb.spectra's zero input pass gives)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return self.model(tokens.long()).logits


def test_spectra_reads_gpt2s_transposed_linear_layers(tmp_path):
    """Hugging Face's Conv1D (weight (in, out)): analysed as Wᵀ, GPT-2's packed c_attn split into
    q, k, v; a Tracker records them; only the embeddings are skipped."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=12, n_layer=2, n_head=2)
    gpt = transformers.GPT2LMHeadModel(config)
    table = rb.spectra(TokensToLogits(gpt), input_shape=(6,))
    analysed = table[table.analysed].set_index("name")
    block = "model.transformer.h.0"
    for name in ("attn.c_attn.q", "attn.c_attn.k", "attn.c_attn.v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        assert analysed.loc[f"{block}.{name}", "m_l"] == 6, name  # each of the 6 tokens
    assert analysed.loc[f"{block}.attn.c_attn.v", "kind"] == "attention"
    assert analysed.loc[f"{block}.mlp.c_fc", "shape"] == (48, 12)  # (out, in): the weight transposed
    v = gpt.transformer.h[0].attn.c_attn.weight[:, 24:].detach().numpy()  # (in, out) columns of v
    sv = analysed.loc[f"{block}.attn.c_attn.v", "sv"]
    np.testing.assert_allclose(sv, np.linalg.svd(v, compute_uv=False), rtol=1e-5)
    skipped = table[~table.analysed]
    assert set(skipped["name"]) == {"model.transformer.wte.weight", "model.transformer.wpe.weight"}
    with rb.Tracker(gpt, tmp_path, name="gpt2", layers="*.c_attn.*") as tracker:
        tracker.record(0)
    layers = rb.load(tmp_path).layers
    assert sorted(set(layers["layer"])) == [f"transformer.h.{i}.attn.c_attn.{p}" for i in (0, 1) for p in "kqv"]
