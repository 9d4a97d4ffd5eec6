"""Recurrent layers (core/adapters/rnn.py): hidden-size pruning of nn.LSTM / nn.GRU / nn.RNN through the
zeroed-group oracle (max rel diff < 1e-5), plus initial states, h_n/c_n, PackedSequence, a tied
LSTM language model, training and saving of the pruned module."""
from __future__ import annotations

import io
import os
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers  # noqa: E402
from helpers import check_oracle, randomize  # noqa: E402

from core.pipeline import analyze_model  # noqa: E402


@pytest.fixture(autouse=True)
def _no_onednn_rnn():
    """oneDNN's CPU RNN kernel takes ~1 s per call on tiny shapes (setup cost); the native kernel
    computes the same thing in a millisecond, which keeps this file fast."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def R(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class Head(nn.Module):
    """Linear -> recurrent layer -> Linear on the outputs (features prunable on both sides)."""

    def __init__(self, rnn: nn.RNNBase, n_in=6):
        super().__init__()
        self.pre = nn.Linear(n_in, rnn.input_size)
        self.rnn = rnn
        width = (rnn.proj_size or rnn.hidden_size) * (2 if rnn.bidirectional else 1)
        self.fc = nn.Linear(width, 5)

    def forward(self, x):
        out, _ = self.rnn(torch.tanh(self.pre(x)))
        return self.fc(out)


CASES = {
    "lstm": lambda: nn.LSTM(7, 8),
    "lstm_2layer": lambda: nn.LSTM(7, 8, num_layers=2),
    "lstm_3layer_bidir": lambda: nn.LSTM(7, 8, num_layers=3, bidirectional=True),
    "lstm_batch_first": lambda: nn.LSTM(7, 8, num_layers=2, batch_first=True),
    "lstm_no_bias": lambda: nn.LSTM(7, 8, num_layers=2, bias=False, bidirectional=True),
    "lstm_proj": lambda: nn.LSTM(7, 8, num_layers=2, proj_size=5),
    "lstm_proj_bidir_bf": lambda: nn.LSTM(7, 8, num_layers=2, proj_size=6, bidirectional=True,
                                          batch_first=True),
    "gru": lambda: nn.GRU(7, 8),
    "gru_2layer_bidir_bf": lambda: nn.GRU(7, 8, num_layers=2, bidirectional=True, batch_first=True),
    "rnn_tanh_2layer": lambda: nn.RNN(7, 8, num_layers=2),
    "rnn_relu_bidir": lambda: nn.RNN(7, 8, num_layers=2, nonlinearity="relu", bidirectional=True),
}


def _rnn_group(dg, model_name="rnn"):
    return [g for g in dg.groups_of_module(model_name)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_recurrent_oracle(name):
    torch.manual_seed(0)
    rnn = CASES[name]()
    model = randomize(Head(rnn), seed=3).eval()
    dg, res = check_oracle(model, R(3, 5, 6))
    r = res.model.rnn
    assert r.hidden_size < 8, "no hidden unit was removed"
    assert r.input_size < 7, "the input features of layer 0 were not pruned"
    if rnn.proj_size:
        assert r.proj_size < rnn.proj_size
    # the pruned module is a plain, consistent nn.RNNBase: same class, sizes match the weights
    assert type(r) is type(rnn)
    assert r.weight_ih_l0.shape[1] == r.input_size
    assert all(a is b for a, b in zip(r._flat_weights, [getattr(r, n) for n in r._flat_weights_names]))
    assert res.verify.max_rel_diff < 1e-5


def test_unit_is_one_channel_across_layers_and_directions():
    model = randomize(Head(nn.LSTM(7, 8, num_layers=2, bidirectional=True)), seed=1).eval()
    dg = analyze_model(model, R(3, 5, 6))
    groups = [g for g in dg.prunable_groups
              if any(m.slot.tensor_name == "rnn.weight_hh_l1_reverse" for m in g.members)]
    assert len(groups) == 1
    g = groups[0]
    assert g.n_channels == 8  # one channel per unit j: every layer and direction together
    names = {m.slot.tensor_name for m in g.members}
    for layer in ("l0", "l1"):
        for sfx in ("", "_reverse"):
            for t in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                assert f"rnn.{t}_{layer}{sfx}" in names
    assert "fc.weight" in names


class WithState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(6, 8, num_layers=2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x, h0, c0):
        out, _ = self.rnn(x, (h0, c0))
        return self.fc(out)


def test_given_initial_state_blocks_units():
    model = randomize(WithState(), seed=2).eval()
    dg = analyze_model(model, (R(5, 3, 6), R(2, 3, 8, seed=2), R(2, 3, 8, seed=3)))
    for g in dg.groups:
        if any(m.slot.tensor_name == "rnn.weight_hh_l0" and m.slot.dim == 0 for m in g.members):
            assert g.n_prunable == 0, "units aligned with a user-given state must stay"
            assert any("initial state" in r for r in g.blocked_reasons)
            break
    else:
        raise AssertionError("no group for the LSTM units")


class Seq2Seq(nn.Module):
    """The decoder starts from the encoder's final state (h_n, c_n): both shrink together."""

    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(6, 8, num_layers=2)
        self.dec = nn.LSTM(6, 8, num_layers=2)
        self.fc = nn.Linear(8, 5)
        self.fc_h = nn.Linear(8, 5)

    def forward(self, src, tgt):
        _, (h, c) = self.enc(src)
        out, (h2, _c2) = self.dec(tgt, (h, c))
        return self.fc(out) + self.fc_h(h2[-1])


def test_state_from_encoder_is_prunable_and_h_n_labelled():
    model = randomize(Seq2Seq(), seed=4).eval()
    dg, res = check_oracle(model, (R(5, 3, 6), R(4, 3, 6, seed=2)))
    assert res.model.enc.hidden_size == res.model.dec.hidden_size < 8


class LanguageModel(nn.Module):
    def __init__(self, vocab=20, emb=8):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, emb, num_layers=2, batch_first=True)
        self.decoder = nn.Linear(emb, vocab)
        self.decoder.weight = self.embedding.weight  # tied

    def forward(self, tokens):
        out, _ = self.lstm(self.embedding(tokens))
        return self.decoder(out)


@pytest.fixture
def tie_aware(monkeypatch):
    """helpers.kept_params_equal looks up kept indices by each parameter's own name; a tied
    parameter is sliced under its first name only, so alias names are mapped onto it."""
    original = helpers.kept_params_equal

    def kept_params_equal(orig_model, pruned, kept):
        first = {}
        for n, p in orig_model.named_parameters():
            first[id(p)] = n
        kept = dict(kept)
        for n, p in orig_model.named_parameters(remove_duplicate=False):
            if first[id(p)] in kept:
                kept.setdefault(n, kept[first[id(p)]])
        original(orig_model, pruned, kept)

    monkeypatch.setattr(helpers, "kept_params_equal", kept_params_equal)


def _tokens():
    return torch.randint(0, 20, (3, 7), generator=torch.Generator().manual_seed(0))


def test_tied_lstm_language_model(tie_aware):
    model = randomize(LanguageModel(), seed=5).eval()
    assert model.decoder.weight is model.embedding.weight
    dg, res = check_oracle(model, _tokens())
    m = res.model
    assert m.decoder.weight is m.embedding.weight, "the tie was broken by pruning"
    e = m.embedding.weight.shape[1]
    assert e < 8 and m.lstm.hidden_size == e and m.lstm.input_size == e
    assert m.embedding.embedding_dim == e and m.decoder.in_features == e


class Packed(nn.Module):
    def __init__(self, bidirectional=False):
        super().__init__()
        self.pre = nn.Linear(6, 7)
        self.rnn = nn.GRU(7, 8, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(16 if bidirectional else 8, 5)

    def forward(self, x, lengths):
        p = pack_padded_sequence(self.pre(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(p)
        out, _ = pad_packed_sequence(out, batch_first=True)
        return self.fc(out)


class PackedLSTM(Packed):
    def __init__(self):
        super().__init__(bidirectional=True)
        self.rnn = nn.LSTM(7, 8, num_layers=2, batch_first=True, bidirectional=True, proj_size=4)
        self.fc = nn.Linear(8, 5)


@pytest.mark.parametrize("cls", [Packed, PackedLSTM])
def test_packed_sequence(cls):
    model = randomize(cls(), seed=6).eval()
    lengths = torch.tensor([5, 2, 4])
    dg, res = check_oracle(model, (R(3, 5, 6), lengths))
    assert res.model.rnn.hidden_size < 8 and res.model.rnn.input_size < 7
    assert not dg.blocked_ops


def test_pruned_model_trains(tie_aware):
    model = randomize(LanguageModel(), seed=7).eval()
    _, res = check_oracle(model, _tokens())
    m = res.model.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    tokens = _tokens()
    target = torch.roll(tokens, -1, dims=1)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(tokens).flatten(0, 1), target.flatten())
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert m.decoder.weight is m.embedding.weight


def test_pruned_model_saves_and_reloads(tie_aware):
    model = randomize(Head(nn.LSTM(7, 8, num_layers=2, proj_size=5, bidirectional=True)),
                      seed=8).eval()
    x = R(3, 5, 6)
    _, res = check_oracle(model, x, train_check=False)
    buf = io.BytesIO()
    torch.save(res.model, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    with torch.no_grad():
        assert torch.equal(back(x), res.model(x))
    assert back.rnn.hidden_size == res.model.rnn.hidden_size
    assert back.rnn.proj_size == res.model.rnn.proj_size
    lm = randomize(LanguageModel(), seed=9).eval()
    _, res = check_oracle(lm, _tokens(), train_check=False)
    buf = io.BytesIO()
    torch.save(res.model, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert back.decoder.weight is back.embedding.weight
    with torch.no_grad():
        assert torch.equal(back(_tokens()), res.model(_tokens()))


def test_ratio_settings_and_h_n_output_blocks():
    # returning h_n makes its width part of the model's output: the units must stay
    class Out(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(6, 8)

        def forward(self, x):
            return self.rnn(x)[1]

    dg = analyze_model(randomize(Out(), seed=1).eval(), R(5, 3, 6))
    assert not dg.prunable_groups


class Unbatched(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(6, 7)
        self.rnn = nn.LSTM(7, 8, num_layers=2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.rnn(self.pre(x))[0])


def test_unbatched_input():
    _, res = check_oracle(randomize(Unbatched(), seed=1).eval(), R(5, 6))
    assert res.model.rnn.hidden_size < 8 and res.model.rnn.input_size < 7


class StateKwarg(Unbatched):
    def forward(self, x, h):
        return self.fc(self.rnn(self.pre(x), hx=(h, h))[0])


class ZerosSub(nn.GRU):
    """Its own state of a hard-coded width: must block (it would not shrink)."""

    def forward(self, x):
        return super().forward(x, torch.zeros(1, x.shape[1], 8))


class WithZerosSub(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = ZerosSub(6, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


@pytest.mark.parametrize("model,inputs", [
    (StateKwarg, lambda: (R(5, 3, 6), R(2, 3, 8, seed=2))),
    (WithZerosSub, lambda: (R(5, 3, 6),)),
])
def test_states_not_from_the_module_block(model, inputs):
    dg = analyze_model(randomize(model(), seed=1).eval(), inputs())
    for g in dg.groups:
        if any(m.slot.tensor_name == "rnn.weight_hh_l0" and m.slot.dim == 0 for m in g.members):
            assert g.n_prunable == 0
            break
    else:
        raise AssertionError("no group for the recurrent units")
