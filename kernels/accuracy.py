"""Accuracy of the backends against the float64 reference: test inputs, error measures and a report.

``python -m workbench.kernels.accuracy [--backends torch triton] [--json PATH]`` prints a markdown table of
the maximum absolute error of every statistic, per backend and input dtype, over a grid of small cases
(causal and not, N not a multiple of the block, GQA, a sink key, peaked and flat rows, q_offset).
On a machine without CUDA the Triton backend runs in the interpreter (``TRITON_INTERPRET=1`` is set here
before triton is imported), which is slow: the default grid takes about a minute per backend there.

The tests in ``tests/kernels`` use :func:`make_case` and :func:`max_errors` from this module.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

__all__ = ["make_case", "max_errors", "STAT_NAMES", "COLUMN_NAMES", "run_grid"]

STAT_NAMES = ("lse", "entropy", "pmax", "first_k_mass", "window_mass")
COLUMN_NAMES = ("col_sum", "col_max", "pooled")


def make_case(
    b: int,
    hq: int,
    hkv: int,
    nq: int,
    nk: int,
    d: int,
    *,
    dtype=torch.float32,
    seed: int = 0,
    special: bool = True,
):
    """Random q, k, v (``[B, Hq, Nq, D]``, ``[B, Hkv, Nk, D]``) rounded to ``dtype``.

    With ``special=True`` the inputs include the hard cases, for ``scale = D ** -0.5``:
    query head 0 has a sink-like key 0 (score about +25 above the rest for every query), query rows
    5-9 are all zero (flat rows: uniform attention, every key tied for the argmax), and rows 10-14 are
    multiplied by 30 (very peaked rows, scores spread of order +-200).
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, nq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hkv, nk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hkv, nk, d, generator=g, dtype=torch.float64)
    if special:
        # sink: a shared direction e_0; key 0 of kv head 0 is large along it, query head 0 leans on it
        k[:, 0, 0, 0] = 5.0 * d**0.5
        q[:, 0, :, 0] = 5.0
        if nq > 5:
            q[:, :, 5:10] = 0.0
        if nq > 10:
            q[:, :, 10:15] *= 30.0
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def max_errors(out, stats, ref_out, ref_stats, ref_probs, *, tie_tol: float = 1e-6) -> dict:
    """Max abs error per statistic (and ``out``) of a backend result against the float64 reference.

    ``ref_stats`` should be the reference computed with ``stats_dtype=torch.float64`` from the *same*
    (rounded) inputs upcast to float64. ``argmax`` is reported as the number of rows where the chosen key
    differs from the reference's *and* is not a near-tie (reference probability lower by more than
    ``tie_tol``); ``argmax_exact`` counts every difference.
    """
    err = {"out": _abs_err(out, ref_out)}
    for name in STAT_NAMES:
        err[name] = _abs_err(getattr(stats, name), getattr(ref_stats, name))
    ref_lse = ref_stats.lse.double().cpu()
    err["lse_rel"] = float(((stats.lse.double().cpu() - ref_lse).abs() / ref_lse.abs().clamp(min=1.0)).max())
    for name in COLUMN_NAMES:
        mine, ref = getattr(stats, name), getattr(ref_stats, name)
        if mine is not None and ref is not None:
            err[name] = _abs_err(mine, ref)
    diff = stats.argmax.cpu() != ref_stats.argmax.cpu()
    err["argmax_exact"] = int(diff.sum())
    p_at_mine = torch.gather(ref_probs.cpu(), -1, stats.argmax.cpu()[..., None])[..., 0]
    p_at_ref = torch.gather(ref_probs.cpu(), -1, ref_stats.argmax.cpu()[..., None])[..., 0]
    err["argmax"] = int((diff & (p_at_mine < p_at_ref - tie_tol)).sum())
    return err


def _grid(quick: bool):
    # (causal, nq, nk, q_offset, d, hq, hkv)
    cases = [
        (True, 200, 200, 0, 64, 4, 2),
        (False, 200, 200, 0, 64, 4, 2),
        (True, 333, 333, 0, 16, 4, 2),
        (False, 333, 333, 0, 16, 4, 2),
        (True, 100, 333, 233, 64, 4, 2),
        (False, 150, 300, 7, 40, 2, 1),
        (True, 96, 96, 0, 128, 2, 1),
    ]
    return cases[:3] if quick else cases


def run_grid(backends=("torch", "triton"), dtypes=("float32", "float16", "bfloat16"), quick=False, special=True):
    """Run every (backend, dtype, case); return a list of result rows (dicts)."""
    from . import attention_with_stats
    from .reference import reference_attention_with_stats

    rows = []
    for backend in backends:
        for dt_name in dtypes:
            dt = getattr(torch, dt_name)
            for i, (causal, nq, nk, qo, d, hq, hkv) in enumerate(_grid(quick)):
                q, k, v = make_case(1, hq, hkv, nq, nk, d, dtype=dt, seed=i, special=special)
                kw = dict(scale=d**-0.5, causal=causal, q_offset=qo, first_k=3, window=8, pool=32)
                t0 = time.perf_counter()
                out, st = attention_with_stats(q, k, v, backend=backend, chunk=64, **kw)
                dt_s = time.perf_counter() - t0
                ref_out, ref_st, ref_p = reference_attention_with_stats(
                    q.double(), k.double(), v.double(), return_probs=True, stats_dtype=torch.float64, **kw
                )
                err = max_errors(out, st, ref_out, ref_st, ref_p)
                rows.append(
                    dict(
                        backend=backend,
                        dtype=dt_name,
                        causal=causal,
                        nq=nq,
                        nk=nk,
                        q_offset=qo,
                        d=d,
                        hq=hq,
                        hkv=hkv,
                        seconds=round(dt_s, 3),
                        **err,
                    )
                )
    return rows


def _table(rows) -> str:
    cols = ["out", "lse", "lse_rel", *STAT_NAMES[1:], *COLUMN_NAMES]
    lines = ["| backend | dtype | " + " | ".join(cols) + " | argmax mismatches (non-tie / all) |", "|---" * (len(cols) + 3) + "|"]
    keys = sorted({(r["backend"], r["dtype"]) for r in rows}, key=lambda x: (x[0], x[1]))
    for be, dt in keys:
        sel = [r for r in rows if r["backend"] == be and r["dtype"] == dt]
        vals = [f"{max(r[c] for r in sel):.1e}" for c in cols]
        am = f"{sum(r['argmax'] for r in sel)} / {sum(r['argmax_exact'] for r in sel)}"
        lines.append(f"| {be} | {dt} | " + " | ".join(vals) + f" | {am} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=["torch", "triton"], choices=["torch", "triton"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"])
    ap.add_argument("--quick", action="store_true", help="only the first three cases")
    ap.add_argument("--json", help="also write the per-case rows here")
    ap.add_argument("--plain", action="store_true", help="plain random inputs (no sink/flat/peaked rows)")
    args = ap.parse_args(argv)
    if "triton" in args.backends and not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    rows = run_grid(args.backends, args.dtypes, args.quick, special=not args.plain)
    print(
        "max abs error against the float64 reference (same rounded inputs), over",
        len(_grid(args.quick)),
        "cases per row",
        "(plain random inputs)" if args.plain else "(with sink key, flat and x30-peaked rows)",
        "; out is compared with the float64 output, so it includes the final rounding to the input dtype;",
        "lse_rel = max |err| / max(1, |lse|)",
    )
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
