"""Chunked torch backend: the CPU path (also works on CUDA tensors).

Loops over query chunks; per chunk it holds the scores of ``chunk`` queries against the visible keys
(at most two tensors of ``[B, Hq, chunk, Nk]``), so memory is O(N x chunk), never N x N.
GQA is handled by viewing q as ``[B, Hkv, group, Nq, D]`` and multiplying each kv head with all of its
query heads at once (K and V are never repeated). Scores, softmax and all statistics are accumulated in
float32 (float64 for float64 inputs) whatever the input dtype; column sums and pooled maps are summed
across chunks in float64.

Causal chunks only multiply against keys ``< q_offset + chunk_end`` (keys after the last query of the
chunk are invisible), which halves the work of a causal prefill.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._validate import check_inputs
from .edits import HeadEdit, act_reweight, check_edits, mask_scores, rows_of
from .stats import AttentionStats

__all__ = ["torch_attention_with_stats"]

# Finite stand-in for -inf on masked scores: exp(NEG - m) == 0 and 0 * (NEG - m) == 0 (no NaN).
_NEG = -1.0e30


def torch_attention_with_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    causal: bool = True,
    q_offset: int = 0,
    first_k: int = 1,
    window: int = 16,
    columns: bool = True,
    pool: int = 64,
    chunk: int = 256,
    check: bool = True,
    sliding_window: int | None = None,
    softcap: float | None = None,
    edits: Sequence[HeadEdit] | None = None,
):
    """Same contract as :func:`workbench.kernels.attention_with_stats` with ``backend="torch"``.

    With ``sliding_window`` W each query chunk only multiplies against keys from ``p0 - W + 1`` on
    (``p0`` its first position), so a windowed layer costs O(N x (chunk + W)), not O(N^2).
    """
    sh = check_inputs(
        q,
        k,
        v,
        scale=scale,
        causal=causal,
        q_offset=q_offset,
        first_k=first_k,
        window=window,
        pool=pool,
        check_finite=check,
        sliding_window=sliding_window,
        softcap=softcap,
    )
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    chunk = int(chunk)
    q_offset = int(q_offset)
    head_edits = check_edits(edits, q.shape[1], q.shape[0])
    masking = [e for e in head_edits if e.masks_scores]
    reweighting = [e for e in head_edits if e.reweights]
    sw = None if sliding_window is None else int(sliding_window)
    cap = None if softcap is None else float(softcap)
    b, hkv, g = sh.batch, sh.n_kv_heads, sh.group
    nq, nk, d = sh.n_queries, sh.n_keys, sh.head_dim
    dev = q.device
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = float(scale)

    with torch.no_grad():
        kf = k.detach().to(acc)  # [B, Hkv, Nk, D]; a no-op for fp32 inputs
        vf = v.detach().to(acc)
        qg = q.detach().unflatten(1, (hkv, g))  # [B, Hkv, g, Nq, D], a view

        out = torch.empty(b, hkv, g, nq, d, dtype=q.dtype, device=dev)
        lse = torch.empty(b, hkv, g, nq, dtype=torch.float32, device=dev)
        ent = torch.empty_like(lse)
        pmax = torch.empty_like(lse)
        sink = torch.empty_like(lse)
        local = torch.empty_like(lse)
        amax = torch.empty(b, hkv, g, nq, dtype=torch.int64, device=dev)
        if columns:
            nqb, nkb = -(-nq // pool), -(-nk // pool)
            col_sum = torch.zeros(b, hkv, g, nk, dtype=torch.float64, device=dev)
            col_max = torch.zeros(b, hkv, g, nk, dtype=torch.float32, device=dev)
            pooled = torch.zeros(b, hkv, g, nqb, nkb, dtype=torch.float64, device=dev)

        upper = band_rel = None  # masks that depend only on relative positions: built once
        for i0 in range(0, nq, chunk):
            i1 = min(nq, i0 + chunk)
            c = i1 - i0
            p0, p1 = q_offset + i0, q_offset + i1  # absolute positions of the chunk [p0, p1)
            khi = min(nk, p1) if causal else nk  # keys beyond khi are invisible to the whole chunk
            klo = max(0, p0 - sw + 1) if sw is not None else 0  # keys before klo: outside every window
            nkc = khi - klo

            # scale folded into the (small) query chunk: saves a pass over the scores
            qc = (qg[:, :, :, i0:i1].to(acc) * scale).reshape(b, hkv, g * c, d)
            s = torch.matmul(qc, kf[:, :, klo:khi].transpose(-1, -2))  # [B, Hkv, g*c, nkc]
            s = s.view(b, hkv, g, c, nkc)
            if cap is not None:
                s.div_(cap).tanh_().mul_(cap)  # Gemma 2 soft-capping, before any mask
            if causal and khi > p0 + 1:
                # only keys j in (p0, khi) can lie after some query of the chunk; key p0 + 1 + jj is
                # after query p0 + ii exactly when jj >= ii: the same upper-triangular mask every chunk
                if upper is None:
                    ar = torch.arange(chunk, device=dev)
                    upper = ar[None, :] >= ar[:, None]
                s[..., p0 + 1 - klo :].masked_fill_(upper[:c, : khi - p0 - 1], _NEG)
            if sw is not None and klo < p1 - sw:
                # keys j <= p0 + ii - W fell out of query p0 + ii's window
                qpos = torch.arange(p0, p1, device=dev)[:, None]
                jpos = torch.arange(klo, khi, device=dev)[None, :]
                s.masked_fill_(jpos <= qpos - sw, _NEG)
            if head_edits:
                qpos_c = torch.arange(p0, p1, device=dev)
                kpos_c = torch.arange(klo, khi, device=dev)
                s_heads = s.view(b, hkv * g, c, nkc)
                for edit in masking:
                    sel = rows_of(edit, b)
                    s_heads[sel, edit.head] = mask_scores(s_heads[sel, edit.head], edit, qpos_c, kpos_c, _NEG)

            m, idx = s.max(dim=-1)  # first maximal index on ties
            s.sub_(m[..., None])  # t - m  (<= 0)
            e = torch.exp(s)  # unnormalised probabilities; 0 on masked cells
            l = e.sum(-1)
            reweighted: list[tuple[list[int], int, torch.Tensor]] = []
            if reweighting:
                # ACT rows: p -> p' (rows still sum to 1, so e' = p' * l keeps l); their entropy, max and
                # argmax are recomputed from p' below, the rest of the statistics follow from e'
                vis = kpos_c[None, :] <= qpos_c[:, None]
                if sw is not None:
                    vis = vis & (kpos_c[None, :] > qpos_c[:, None] - sw)
                e_heads, l_heads = e.view(b, hkv * g, c, nkc), l.view(b, hkv * g, c)
                for edit in reweighting:
                    sel = rows_of(edit, b)
                    cols = torch.as_tensor([j - klo for j in edit.act_sinks if klo <= j < khi], dtype=torch.long, device=dev)
                    norm = l_heads[sel, edit.head][..., None]
                    p_new = act_reweight(e_heads[sel, edit.head] / norm, cols, vis, edit.act_beta)
                    e_heads[sel, edit.head] = p_new * norm
                    reweighted.append((sel, edit.head, p_new))
            s.mul_(e)  # e * (t - m): centred entropy terms, finite everywhere
            a = s.sum(-1)
            del s
            log_l = torch.log(l)
            lse[..., i0:i1] = m + log_l
            ent[..., i0:i1] = log_l - a / l
            pmax[..., i0:i1] = 1.0 / l
            amax[..., i0:i1] = idx + klo
            for sel, head, p_new in reweighted:
                ent.view(b, hkv * g, nq)[sel, head, i0:i1] = torch.special.entr(p_new).sum(-1)
                best, where = p_new.max(dim=-1)
                pmax.view(b, hkv * g, nq)[sel, head, i0:i1] = best
                amax.view(b, hkv * g, nq)[sel, head, i0:i1] = where + klo

            o = torch.matmul(e.view(b, hkv, g * c, nkc), vf[:, :, klo:khi]).view(b, hkv, g, c, d)
            out[..., i0:i1, :] = o / l[..., None]

            nfk = min(first_k, khi)
            sink[..., i0:i1] = (e[..., : nfk - klo].sum(-1) / l) if nfk > klo else 0.0
            lo, hi = max(0, p0 - window + 1, klo), min(khi, p1)
            if window > 0 and hi > lo:
                if lo == p0 - window + 1 and window <= 4 * chunk:
                    # unclipped band: key lo + jj is in query p0 + ii's window iff ii <= jj <= ii + window - 1
                    if band_rel is None:
                        rel = torch.arange(chunk + window - 1, device=dev)[None, :] - torch.arange(chunk, device=dev)[:, None]
                        band_rel = (rel >= 0) & (rel <= window - 1)
                    band = band_rel[:c, : hi - lo]
                else:
                    jj = torch.arange(lo, hi, device=dev)
                    qpos = torch.arange(p0, p1, device=dev)[:, None]
                    band = (jj[None, :] > qpos - window) & (jj[None, :] <= qpos)  # [c, hi - lo]
                local[..., i0:i1] = (e[..., lo - klo : hi - klo] * band).sum(-1) / l
            else:
                local[..., i0:i1] = 0.0

            if columns:
                e.div_(l[..., None])  # probabilities p
                col_sum[..., klo:khi] += e.sum(dim=-2)  # fp32 over <= chunk queries, fp64 across chunks
                col_max[..., klo:khi] = torch.maximum(col_max[..., klo:khi], e.amax(dim=-2).to(torch.float32))
                kb0 = klo // pool  # first key block the chunk touches; pad so blocks align with key 0
                left = klo - kb0 * pool
                kb = -(-(left + nkc) // pool)
                right = kb * pool - left - nkc
                if left or right:
                    e = torch.nn.functional.pad(e, (left, right))
                rows = e.unflatten(-1, (kb, pool)).sum(-1)  # [B,Hkv,g,c,kb]
                # add the rows of this chunk to the query blocks they belong to (local query index)
                r = i0
                while r < i1:
                    qb = r // pool
                    r_end = min(i1, (qb + 1) * pool)
                    pooled[..., qb, kb0 : kb0 + kb] += rows[..., r - i0 : r_end - i0, :].sum(-2, dtype=torch.float64)
                    r = r_end
            del e

    def heads(t):
        return t.flatten(1, 2)

    stats = AttentionStats(
        lse=heads(lse),
        entropy=heads(ent),
        argmax=heads(amax),
        pmax=heads(pmax),
        first_k_mass=heads(sink),
        window_mass=heads(local),
        col_sum=heads(col_sum).to(torch.float32) if columns else None,
        col_max=heads(col_max) if columns else None,
        pooled=heads(pooled).to(torch.float32) if columns else None,
        n_keys=nk,
        q_offset=q_offset,
        causal=bool(causal),
        first_k=int(first_k),
        window=int(window),
        pool=int(pool),
        sliding_window=sw,
        softcap=cap,
    )
    return heads(out), stats
