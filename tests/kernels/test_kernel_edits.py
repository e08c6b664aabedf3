"""Kernel-side edits (removed keys, streaming windows, ACT) against the edited dense pattern in float64.

The expected pattern is built independently of kernels/edits.py: the float64 dense softmax of the
unedited reference, then the eager edit functions of `workbench.interventions` (remove_keys, the
streaming mask) or ACT's closed form written out per row. Every statistic and the output are compared,
in a prefill, a chunked prefill (q_offset) and a decode step (one query against every key).

Tolerance 2e-5 absolute: the torch backend accumulates in float32 (scores of order 5, rows of <= 64
probabilities; observed <= 3e-6), the expectation is float64.
"""

from __future__ import annotations

import pytest
import torch

from workbench.interventions.attention_edits import remove_keys
from workbench.interventions.kv_budget import streaming_mask
from workbench.kernels import HeadEdit, attention_with_stats

TOL = 2e-5
B, HQ, HKV, NK, D = 2, 4, 2, 40, 16


def _qkv(nq: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, nq, D, generator=g) * 1.5
    k = torch.randn(B, HKV, NK, D, generator=g) * 1.5
    v = torch.randn(B, HKV, NK, D, generator=g)
    return q, k, v


def _ref(q, k, v, q_offset, sliding_window):
    from workbench.kernels.reference import reference_attention_with_stats

    return reference_attention_with_stats(
        q.double(),
        k.double(),
        v.double(),
        scale=D**-0.5,
        q_offset=q_offset,
        return_probs=True,
        sliding_window=sliding_window,
        stats_dtype=torch.float64,
    )


def _act_closed_form(p_row: torch.Tensor, sinks: list[int], beta: float) -> torch.Tensor:
    """ACT on one row, written out: sinks scaled by beta, the rest by 1 + (1 - beta) m_S / m_rest."""
    out = p_row.clone()
    m_s = float(sum(p_row[j] for j in sinks))
    m_rest = float(p_row.sum()) - m_s
    for j in range(p_row.shape[0]):
        out[j] = p_row[j] * (beta if j in sinks else 1 + (1 - beta) * m_s / m_rest)
    return out


def _expected_stats(p: torch.Tensor, v: torch.Tensor, q_offset: int):
    vv = v.double().repeat_interleave(HQ // HKV, dim=1)
    nq = p.shape[-2]
    qpos = torch.arange(nq)[:, None] + q_offset
    j = torch.arange(NK)[None, :]
    local = (j > qpos - 16) & (j <= qpos)
    return {
        "out": p @ vv,
        "entropy": torch.special.entr(p).sum(-1),
        "pmax": p.amax(-1),
        "first_k_mass": p[..., 0],
        "window_mass": (p * local).sum(-1),
        "col_sum": p.sum(-2),
    }


def _compare(out, stats, exp, p):
    torch.testing.assert_close(out.double(), exp["out"], atol=TOL, rtol=0)
    for name in ("entropy", "pmax", "first_k_mass", "window_mass", "col_sum"):
        torch.testing.assert_close(getattr(stats, name).double(), exp[name], atol=TOL, rtol=0, msg=name)
    top2 = p.topk(2, dim=-1).values
    decided = (top2[..., 0] - top2[..., 1]) > 1e-5
    assert torch.equal(stats.argmax[decided], p.argmax(-1)[decided])


# (queries, q_offset): a prefill, the last 8 queries of a chunked prefill, one decode step
SHAPES = [(NK, 0), (8, NK - 8), (1, NK - 1)]


@pytest.mark.parametrize("nq,q_offset", SHAPES)
def test_removed_keys_match_the_eager_renormalised_pattern(nq, q_offset):
    q, k, v = _qkv(nq)
    edits = [HeadEdit(head=1, removed=(0, 3)), HeadEdit(head=2, rows=(1,), removed=(0,))]
    out, stats = attention_with_stats(q, k, v, scale=D**-0.5, q_offset=q_offset, backend="torch", chunk=16, pool=8, edits=edits)
    _, _, p = _ref(q, k, v, q_offset, None)
    exp_p = p.clone()
    exp_p[:, 1] = remove_keys(p[:, 1], [0, 3])
    exp_p[1, 2] = remove_keys(p[1:2, 2], [0])[0]
    assert (exp_p - p).abs().max() > 50 * TOL  # the edit moves something, well above the tolerance
    _compare(out, stats, _expected_stats(exp_p, v, q_offset), exp_p)


@pytest.mark.parametrize("nq,q_offset", SHAPES)
@pytest.mark.parametrize("window", [None, 24])
def test_streaming_window_matches_the_masked_softmax(nq, q_offset, window):
    q, k, v = _qkv(nq, seed=1)
    sink, recent = 2, 6
    edits = [HeadEdit(head=h, stream=(sink, recent)) for h in (0, 3)] + [HeadEdit(head=1, rows=(0,), stream=(1, 4))]
    out, stats = attention_with_stats(
        q, k, v, scale=D**-0.5, q_offset=q_offset, backend="torch", chunk=16, pool=8, edits=edits, sliding_window=window
    )
    _, _, p = _ref(q, k, v, q_offset, window)
    exp_p = p.clone()

    def stream(rows, head, s, r):
        keep = streaming_mask(nq, NK, s, r).double()
        kept = p[rows, head] * keep
        return kept / kept.sum(-1, keepdim=True)

    for h in (0, 3):
        exp_p[:, h] = stream(slice(None), h, sink, recent)
    exp_p[0, 1] = stream(0, 1, 1, 4)
    assert (exp_p - p).abs().max() > 50 * TOL
    _compare(out, stats, _expected_stats(exp_p, v, q_offset), exp_p)


@pytest.mark.parametrize("nq,q_offset", SHAPES)
def test_act_reweighting_matches_acts_formula(nq, q_offset):
    q, k, v = _qkv(nq, seed=2)
    beta, sinks = 0.4, [2, 5]
    edits = [HeadEdit(head=0, act_sinks=tuple(sinks), act_beta=beta), HeadEdit(head=3, rows=(1,), act_sinks=(0,), act_beta=0.1)]
    out, stats = attention_with_stats(q, k, v, scale=D**-0.5, q_offset=q_offset, backend="torch", chunk=16, pool=8, edits=edits)
    _, _, p = _ref(q, k, v, q_offset, None)
    exp_p = p.clone()
    first = 6 - q_offset  # rows that see keys beyond the sinks (earlier rows could hold only sinks)
    for b in range(B):
        for i in range(max(first, 0), nq):
            exp_p[b, 0, i] = _act_closed_form(p[b, 0, i], sinks, beta)
    for i in range(max(1 - q_offset, 0), nq):
        exp_p[1, 3, i] = _act_closed_form(p[1, 3, i], [0], 0.1)
    rows = slice(max(first, 0), None)
    assert (exp_p - p).abs().max() > 50 * TOL
    torch.testing.assert_close(stats.lse.double(), _ref(q, k, v, q_offset, None)[1].lse, atol=TOL, rtol=0)  # unedited LSE
    exp = _expected_stats(exp_p, v, q_offset)
    torch.testing.assert_close(out.double()[:, :, rows], exp["out"][:, :, rows], atol=TOL, rtol=0)
    for name in ("entropy", "pmax", "first_k_mass", "window_mass"):
        torch.testing.assert_close(getattr(stats, name).double()[..., rows], exp[name][..., rows], atol=TOL, rtol=0, msg=name)


def test_reference_backend_applies_the_same_edits():
    q, k, v = _qkv(NK, seed=3)
    edits = [HeadEdit(head=1, removed=(0,)), HeadEdit(head=2, stream=(1, 5)), HeadEdit(head=3, act_sinks=(4,))]
    out_t, st_t = attention_with_stats(q, k, v, scale=D**-0.5, backend="torch", chunk=8, pool=8, edits=edits)
    out_r, st_r = attention_with_stats(q, k, v, scale=D**-0.5, backend="reference", pool=8, edits=edits)
    torch.testing.assert_close(out_t, out_r, atol=TOL, rtol=0)
    for name in ("entropy", "pmax", "first_k_mass", "window_mass", "col_sum", "lse"):
        torch.testing.assert_close(getattr(st_t, name), getattr(st_r, name), atol=TOL, rtol=0, msg=name)


@pytest.mark.parametrize(
    "edit,message",
    [
        (HeadEdit(head=9, removed=(0,)), "query heads"),
        (HeadEdit(head=0, rows=(5,), removed=(0,)), "outside the batch"),
        (HeadEdit(head=0, stream=(1, 0)), "recent >= 1"),
        (HeadEdit(head=0, act_sinks=(1,), act_beta=1.5), "act_beta"),
        (HeadEdit(head=0, removed=(-1,)), ">= 0"),
    ],
)
def test_bad_edits_are_refused_by_name(edit, message):
    q, k, v = _qkv(4)
    with pytest.raises(ValueError, match=message):
        attention_with_stats(q, k, v, scale=1.0, q_offset=NK - 4, backend="torch", edits=[edit])


def test_triton_refuses_edits_instead_of_ignoring_them():
    q, k, v = _qkv(4)
    with pytest.raises(ValueError, match="Triton kernels do not implement per-head edits"):
        attention_with_stats(q, k, v, scale=1.0, q_offset=NK - 4, backend="triton", edits=[HeadEdit(head=0, removed=(0,))])
