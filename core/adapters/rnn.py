"""Recurrent layers: hidden-size pruning for ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``.

``nn.LSTM.forward`` ends in one fused call, ``_VF.lstm(input, hx, flat_weights, has_biases,
num_layers, dropout, train, bidirectional, batch_first)`` (``gru``, ``rnn_tanh``, ``rnn_relu``
alike; with a PackedSequence the call is ``(data, batch_sizes, hx, flat_weights, has_biases,
num_layers, dropout, train, bidirectional)``). The flat weights hold, per layer and direction,
``w_ih (G*H, in), w_hh (G*H, H|P), [b_ih (G*H), b_hh (G*H)], [w_hr (P, H)]`` with G = 4 (LSTM
gates i, f, g, o), 3 (GRU r, z, n) or 1 (RNN).

Hidden unit j is the rows ``k*H + j`` of every gate in ``w_ih``, ``w_hh`` and both biases, plus
column j of ``w_hh`` (or of ``w_hr`` with ``proj_size``, where ``w_hh``'s columns are the
projection's outputs). The next layer reads unit j of direction d at its input column ``d*H + j``.
Removing a unit whose slices are zero is exact: its gates' pre-activations are 0, so with a zero
initial state its cell and output stay 0 (LSTM: c = 0.5 c + 0.5 tanh(0); GRU: h = 0.5 n + 0.5 h with
n = tanh(0); RNN: tanh/relu(0) = 0) and its outgoing columns are zero anyway.

PyTorch needs one ``hidden_size`` (and ``proj_size``) for every layer and direction, so unit j of
every layer and direction is one channel: removing it keeps the module a valid ``nn.LSTM``. An
initial state passed by the caller is aligned with the units and must shrink with them: it is
joined with the units (so a state that cannot be pruned blocks them); the zeros the module creates
itself when no state is given follow the module and are fine.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from core.ops.atoms import Labeling
from core.ops.registry import register_op
from core.prune.apply import register_module_updater

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _parse(call):
    """(input, batch_sizes, hx list, weights, has_biases, num_layers, bidirectional) of the call."""
    a = call.args
    packed = isinstance(a[1], torch.Tensor) and not a[1].is_floating_point()
    if packed:
        x, batch_sizes, hx, weights, bias, layers, _drop, _train, bidir = a[:9]
    else:
        x, hx, weights, bias, layers, _drop, _train, bidir = a[:8]
        batch_sizes = None
    hx = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    return x, batch_sizes, hx, list(weights), bool(bias), int(layers), bool(bidir)


_MODULE_PY = nn.Module._call_impl.__code__.co_filename
_FORWARDS = {nn.LSTM.forward.__code__, nn.GRU.forward.__code__, nn.RNN.forward.__code__}


def _default_state(weights) -> bool:
    """True when the state is the zeros the RNN module made itself (the caller passed none).

    torch's own ``forward`` overwrites its ``hx`` argument, but ``Module._call_impl`` right above
    it still holds the caller's arguments. Anything else (a subclass with its own ``forward``, a
    functional call of ``_VF``) counts as a given state, which is the safe side."""
    impl = nn.Module._call_impl.__code__
    f = sys._getframe(1)
    while f is not None:
        if f.f_code in _FORWARDS:
            mod, up = f.f_locals.get("self"), f.f_back
            while up is not None and up.f_code is not impl and up.f_code.co_filename == _MODULE_PY:
                up = up.f_back  # hook wrappers of _call_impl (``inner``)
            if (isinstance(mod, nn.RNNBase) and up is not None and up.f_code is impl
                    and up.f_locals.get("self") is mod
                    and any(w is weights[0] for w in getattr(mod, "_flat_weights", [])[:1])):
                args, kwargs = up.f_locals.get("args", ()), up.f_locals.get("kwargs") or {}
                given = args[1] if len(args) > 1 else kwargs.get("hx")
                return given is None
            return False
        f = f.f_back
    return False


@register_op("lstm", "gru", "rnn_tanh", "rnn_relu")
def recurrent(ctx, call):
    x, _batch_sizes, hx, weights, bias, layers, bidir = _parse(call)
    dirs = 2 if bidir else 1
    per = len(weights) // (layers * dirs)
    proj = call.name == "lstm" and per % 2 == 1
    if per * layers * dirs != len(weights) or per not in (2, 3, 4, 5):
        return ctx.block_inputs(call, "unexpected layout of the recurrent weights")
    g = _GATES[call.name]
    reason = ctx.reason(call, "hidden units that cannot be pruned")

    def w(layer, d):
        i = (layer * dirs + d) * per
        ws = weights[i:i + per]
        w_ih, w_hh = ws[0], ws[1]
        b = ws[2:4] if bias else []
        w_hr = ws[-1] if proj else None
        return w_ih, w_hh, b, w_hr

    units = hid_out = None  # reference atoms of unit j / of output feature j (P with proj_size)
    for layer in range(layers):
        for d in range(dirs):
            w_ih, w_hh, b, w_hr = w(layer, d)
            h = w_hr.shape[1] if proj else w_hh.shape[1]
            rows = [ctx.dim_atoms(t, 0, call, role="out") for t in [w_ih, w_hh] + list(b)]
            for r in rows:
                for k in range(g):
                    part = r[k * h:(k + 1) * h]
                    if units is None:
                        units = part
                    else:
                        ctx.table.join(units, part, reason)
            if proj:
                ctx.table.join(units, ctx.dim_atoms(w_hr, 1, call, role="in"), reason)
                p_rows = ctx.dim_atoms(w_hr, 0, call, role="out")
                if hid_out is None:
                    hid_out = p_rows
                else:
                    ctx.table.join(hid_out, p_rows, reason)
                ctx.table.join(hid_out, ctx.dim_atoms(w_hh, 1, call, role="in"), reason)
            else:
                ctx.table.join(units, ctx.dim_atoms(w_hh, 1, call, role="in"), reason)
                hid_out = units
            cols = ctx.dim_atoms(w_ih, 1, call, role="in")
            if layer == 0:
                ctx.table.join(ctx.dim_atoms(x, x.ndim - 1, call), cols,
                               ctx.reason(call, "input features that cannot be pruned"))
            else:  # direction d' of the layer below feeds columns d'*H .. (d'+1)*H
                for dd, part in enumerate(cols.reshape(dirs, -1)):
                    ctx.table.join(hid_out, part, reason)
    # labels the op does not carry through (time/batch dims of the input or of a state)
    for t in [x] + hx:
        for lab in ctx.labels(t):
            if lab.dims != (t.ndim - 1,):
                ctx.table.block(lab.atoms, ctx.reason(call, "channels on a time or batch dimension"))
    # a state given by the caller has the units' size: it must shrink with them
    if not _default_state(weights):
        sizes = [hid_out, units] if call.name == "lstm" else [hid_out]
        for t, ref in zip(hx, sizes):
            if isinstance(t, torch.Tensor):
                ctx.table.join(ctx.dim_atoms(t, t.ndim - 1, call), ref,
                               ctx.reason(call, "an initial state that cannot be pruned"))
    outs = call.out_tensors
    ctx.set(outs[0], [Labeling((outs[0].ndim - 1,), np.tile(hid_out, dirs))])
    states = [hid_out, units] if call.name == "lstm" else [hid_out]
    for o, ref in zip(outs[1:], states):
        ctx.set(o, [Labeling((o.ndim - 1,), ref)])


@register_op("_pack_padded_sequence")
def pack_padded(ctx, call):
    """(input, lengths, batch_first) -> (data (sum(lengths), *F), batch_sizes): features pass."""
    x = call.args[0]
    keep = []
    for lab in ctx.labels(x):
        if all(d >= 2 for d in lab.dims):
            keep.append(Labeling(tuple(d - 1 for d in lab.dims), lab.atoms, lab.joint))
        else:
            ctx.table.block(lab.atoms, ctx.reason(call, "channels on a time or batch dimension"))
    if call.out_tensors:
        ctx.set(call.out_tensors[0], keep)


@register_op("_pad_packed_sequence")
def pad_packed(ctx, call):
    """(data, batch_sizes, batch_first, padding_value, total_length) -> (padded (T, B, *F), lengths).
    Padding is a constant in every channel: a removed channel's padding is not read by anyone."""
    data = call.args[0]
    keep = []
    for lab in ctx.labels(data):
        if all(d >= 1 for d in lab.dims):
            keep.append(Labeling(tuple(d + 1 for d in lab.dims), lab.atoms, lab.joint))
        else:
            ctx.table.block(lab.atoms, ctx.reason(call, "channels on a time or batch dimension"))
    if call.out_tensors:
        ctx.set(call.out_tensors[0], keep)


@register_module_updater(nn.RNNBase)
def _rnn(m, virtual):
    m.input_size = m.weight_ih_l0.shape[1]
    if getattr(m, "proj_size", 0):
        m.proj_size, m.hidden_size = m.weight_hr_l0.shape
    else:
        m.hidden_size = m.weight_hh_l0.shape[1]
    # the fused kernel reads the weights through _flat_weights (lists of the old tensors)
    if hasattr(m, "_init_flat_weights"):
        m._init_flat_weights()
    else:  # pragma: no cover - older torch
        m._flat_weights = [getattr(m, n, None) for n in m._flat_weights_names]
