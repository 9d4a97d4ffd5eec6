"""Contractions (matmul, einsum, linear): a summed index couples the contracted positions, a kept
index aligns its positions across operands."""
from __future__ import annotations

import numpy as np

from core.ops.atoms import Labeling
from core.ops.common import combine, lead_labels
from core.ops.registry import register_op

def einsum_semantics(ctx, call, spec: str, operands, out, exact_contraction=True, note=""):
    """Generic rule for products: a letter kept in the output aligns its positions across operands,
    a summed letter couples the contracted positions (exact: a zeroed slice contributes zero)."""
    ins, out_spec = spec.split("->")
    in_specs = ins.split(",")
    size = {}
    for t, s in zip(operands, in_specs):
        for d, ch in enumerate(s):
            size[ch] = max(size.get(ch, 1), int(t.shape[d]))
    letters = {}
    for t, s in zip(operands, in_specs):
        for d, ch in enumerate(s):
            if t.shape[d] == 1 and size[ch] > 1:
                continue  # broadcast
            letters.setdefault(ch, []).append(ctx.dim_atoms(t, d, call))
    labs = []
    for ch, vecs in letters.items():
        if ch in out_spec:
            labs.extend(combine(ctx, vecs, out_spec.index(ch), call))
        else:
            acc = vecs[0]
            if len(vecs) == 1:
                if (acc >= 0).any():
                    ctx.table.mark_approx(acc, ctx.reason(call, "sum over pruned channels"))
                continue
            for v in vecs[1:]:
                ctx.table.join(acc, v, ctx.reason(call, "contracted with a tensor that cannot be pruned"))
            if not exact_contraction:
                ctx.table.mark_approx(np.concatenate(vecs), ctx.reason(call, note))
    ctx.set(out, labs)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _matmul_spec(a_nd, b_nd):
    if a_nd == 1 and b_nd == 1:
        return "k,k->"
    if a_nd == 1:
        batch = _LETTERS[: b_nd - 2]
        return f"k,{batch}km->{batch}m"
    if b_nd == 1:
        batch = _LETTERS[: a_nd - 2]
        return f"{batch}nk,k->{batch}n"
    nb = max(a_nd, b_nd) - 2
    batch = _LETTERS[:nb]
    return f"{batch[nb - (a_nd - 2):]}nk,{batch[nb - (b_nd - 2):]}km->{batch}nm"


@register_op("matmul", "mm", "bmm", "rmatmul", "inner_", "dot", "vdot", "mv")
def matmul(ctx, call):
    a, b = call.in_tensors[:2]
    if call.name == "rmatmul":
        a, b = b, a
    einsum_semantics(ctx, call, _matmul_spec(a.ndim, b.ndim), [a, b], call.out_tensors[0])


@register_op("einsum")
def einsum(ctx, call):
    eq = call.args[0] if isinstance(call.args[0], str) else call.kwargs.get("equation")
    ops = call.in_tensors
    if "..." in eq or "->" not in eq:
        return ctx.block_inputs(call, "einsum with ellipsis or implicit output")
    einsum_semantics(ctx, call, eq.replace(" ", ""), ops, call.out_tensors[0])


@register_op("linear")
def linear(ctx, call):
    x, w = call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs["weight"]
    b = call.args[2] if len(call.args) > 2 else call.kwargs.get("bias")
    out = call.out_tensors[0]
    w_out = ctx.dim_atoms(w, 0, call, role="out")
    w_in = ctx.dim_atoms(w, 1, call, role="in")
    ctx.table.join(ctx.dim_atoms(x, x.ndim - 1, call), w_in,
                   ctx.reason(call, "input features that cannot be pruned"))
    if b is not None:
        ctx.table.join(w_out, ctx.dim_atoms(b, 0, call, role="out"), ctx.reason(call, "bias"))
    labs = [lab for lab in lead_labels(ctx, x, call, x.ndim - 1)]
    if (w_out >= 0).any():
        labs.append(Labeling((out.ndim - 1,), w_out))
    ctx.set(out, labs)



@register_op("bilinear")
def bilinear(ctx, call):
    ctx.block_inputs(call, "bilinear layers are not supported")
