"""Speed of the instrumented Triton attention against torch SDPA (flash) on a CUDA GPU.

For each sequence length N and head dim D (causal, bf16 by default) it times:
  sdpa   torch.nn.functional.scaled_dot_product_attention with the FLASH_ATTENTION backend,
  A      pass A alone (output + LSE, entropy, argmax, p_max, first-k and window mass),
  A+B    pass A then pass B (column sums, column max, pooled map),
  api    attention_with_stats(..., backend="triton") as the recorder calls it (input checks included),
and reports TFLOP/s with flops = 4 * B * H * N^2 * D * 0.5 (causal), the forward-only count of the
Triton tutorial, for every column (so the A+B figure is "attention-forward-equivalent" throughput),
plus the time ratios against SDPA. Before timing it checks the Triton backend against the torch backend
on the GPU at one size and stops with exit code 1 if they disagree.

    python benchmarks/kernels_gpu.py                       # N = 4k..64k, D = 64 and 128
    python benchmarks/kernels_gpu.py --lengths 4096,16384 --head-dims 128 --out benchmarks/results
    python benchmarks/kernels_gpu.py --sweep               # also try a few block configurations

Without CUDA it prints a message and exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def _flops(b, h, n, d, causal):
    return 4.0 * b * h * n * n * d * (0.5 if causal else 1.0)


def _bench(fn, warmup=3, reps=10):
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def correctness_check(dtype, n=4096, d=128, h=8, hkv=2, device="cuda") -> dict:
    """Triton backend vs torch backend on the GPU (same inputs); returns max abs differences."""
    import torch

    from workbench.kernels import attention_with_stats

    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, h, n, d, device=device, generator=g).to(dtype)
    k = torch.randn(1, hkv, n, d, device=device, generator=g).to(dtype)
    v = torch.randn(1, hkv, n, d, device=device, generator=g).to(dtype)
    kw = dict(scale=d**-0.5, causal=True, first_k=4, window=64, pool=128)
    out_t, st_t = attention_with_stats(q, k, v, backend="triton", **kw)
    out_c, st_c = attention_with_stats(q, k, v, backend="torch", chunk=512, **kw)
    diffs = {"out": float((out_t.float() - out_c.float()).abs().max())}
    for name in ("lse", "entropy", "pmax", "first_k_mass", "window_mass", "col_sum", "col_max", "pooled"):
        diffs[name] = float((getattr(st_t, name) - getattr(st_c, name)).abs().max())
    diffs["argmax_mismatch_frac"] = float((st_t.argmax != st_c.argmax).float().mean())
    return diffs


def _check_passes(diffs, dtype) -> bool:
    import torch

    # Both backends compute fp32 statistics from the same rounded inputs; they differ by fp32 summation
    # order only (~1e-6), plus the GPU's rounding of p to bf16/fp16 inside pass A's PV matmul for `out`.
    stat_tol = 1e-4
    out_tol = {torch.bfloat16: 3e-2, torch.float16: 4e-3, torch.float32: 1e-4}[dtype]
    ok = diffs["out"] <= out_tol and diffs["argmax_mismatch_frac"] < 1e-3
    for name in ("lse", "entropy", "pmax", "first_k_mass", "window_mass", "col_max"):
        ok &= diffs[name] <= stat_tol
    ok &= diffs["col_sum"] <= 1e-3 and diffs["pooled"] <= 1e-3  # sums of up to 4096 probabilities
    return bool(ok)


def run(args) -> dict:
    import torch
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from workbench.kernels import attention_with_stats
    from workbench.kernels.triton_attention import pass_a, pass_b

    dtype = getattr(torch, args.dtype)
    info = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "dtype": args.dtype,
        "causal": not args.non_causal,
        "flops_formula": "4*B*H*N^2*D*(0.5 if causal)",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"# {info['device']}  torch {info['torch']}  triton {info['triton']}  {args.dtype}", flush=True)

    diffs = correctness_check(dtype)
    info["correctness_vs_torch_backend"] = diffs
    ok = _check_passes(diffs, dtype)
    print(
        "correctness (triton vs torch backend, N=4096, D=128, GQA 8/2):",
        " ".join(f"{k}={v:.2e}" for k, v in diffs.items()),
        "->",
        "OK" if ok else "FAILED",
        flush=True,
    )
    if not ok:
        info["error"] = "triton and torch backends disagree"
        return info

    causal = not args.non_causal

    def make_benches(q, k, v, scale):
        """The timed callables of one size; built per size so each closes over its own tensors."""

        def sdpa():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)

        def a_only():
            return pass_a(q, k, v, scale=scale, causal=causal, q_offset=0, first_k=4, window=64)

        def a_and_b():
            res = pass_a(q, k, v, scale=scale, causal=causal, q_offset=0, first_k=4, window=64)
            return pass_b(q, k, res[1], scale=scale, causal=causal, q_offset=0, pool=args.pool)

        def api():
            return attention_with_stats(
                q, k, v, scale=scale, causal=causal, first_k=4, window=64, pool=args.pool, backend="triton"
            )

        def api_windowed():  # a sliding-window layer (Mistral/Gemma local): cost O(N x W)
            return attention_with_stats(
                q,
                k,
                v,
                scale=scale,
                causal=True,
                first_k=4,
                window=64,
                pool=args.pool,
                backend="triton",
                sliding_window=args.sliding_window,
                softcap=50.0,
            )

        benches = [("sdpa", sdpa), ("A", a_only), ("A+B", a_and_b), ("api", api)]
        if causal and args.sliding_window:
            benches.append(("api_window", api_windowed))
        return benches

    rows = []
    for d in args.head_dims:
        for n in args.lengths:
            h = args.heads
            g = torch.Generator(device="cuda").manual_seed(n + d)
            q = torch.randn(args.batch, h, n, d, device="cuda", generator=g).to(dtype)
            k = torch.randn(args.batch, h, n, d, device="cuda", generator=g).to(dtype)
            v = torch.randn(args.batch, h, n, d, device="cuda", generator=g).to(dtype)
            scale = d**-0.5
            fl = _flops(args.batch, h, n, d, causal)
            row = {"N": n, "D": d, "B": args.batch, "H": h}

            benches = make_benches(q, k, v, scale)
            for name, fn in benches:
                try:
                    t = _bench(fn, warmup=args.warmup, reps=args.reps)
                    row[f"{name}_ms"] = round(t * 1e3, 3)
                    row[f"{name}_tflops"] = round(fl / t / 1e12, 1)
                except Exception as exc:  # OOM or a missing SDPA backend: record and go on
                    row[f"{name}_ms"] = None
                    row[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    torch.cuda.empty_cache()
            for name in ("A", "A+B", "api", "api_window"):
                if row.get("sdpa_ms") and row.get(f"{name}_ms"):
                    row[f"{name}_over_sdpa"] = round(row[f"{name}_ms"] / row["sdpa_ms"], 2)
            rows.append(row)
            print(_fmt_row(row), flush=True)
            del q, k, v, benches, fn
            torch.cuda.empty_cache()
    info["rows"] = rows
    if args.sweep:
        info["sweep"] = sweep(dtype, causal, args)
    return info


def sweep(dtype, causal, args) -> list:
    """Time a few block configurations of each pass at one size (for choosing the defaults)."""
    import torch

    from workbench.kernels.triton_attention import pass_a, pass_b

    n, d, h = args.sweep_n, args.sweep_d, args.heads
    q = torch.randn(1, h, n, d, device="cuda", dtype=dtype)
    k = torch.randn(1, h, n, d, device="cuda", dtype=dtype)
    v = torch.randn(1, h, n, d, device="cuda", dtype=dtype)
    fl = _flops(1, h, n, d, causal)
    res = []
    lse2 = pass_a(q, k, v, scale=d**-0.5, causal=causal, q_offset=0, first_k=4, window=64)[1]
    for bm, bn, w, s in [(128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2), (128, 32, 4, 4), (64, 32, 4, 4)]:
        try:
            t = _bench(
                lambda bm=bm, bn=bn, w=w, s=s: pass_a(
                    q,
                    k,
                    v,
                    scale=d**-0.5,
                    causal=causal,
                    q_offset=0,
                    first_k=4,
                    window=64,
                    block_m=bm,
                    block_n=bn,
                    num_warps=w,
                    num_stages=s,
                )
            )
            res.append({"pass": "A", "cfg": [bm, bn, w, s], "ms": round(t * 1e3, 3), "tflops": round(fl / t / 1e12, 1)})
        except Exception as exc:
            res.append({"pass": "A", "cfg": [bm, bn, w, s], "error": f"{type(exc).__name__}: {str(exc)[:120]}"})
        print(res[-1], flush=True)
    for bm, bn, w, s in [(64, 64, 4, 3), (64, 64, 8, 2), (128, 64, 8, 3), (64, 128, 8, 2), (32, 64, 4, 3), (128, 128, 8, 2)]:
        if args.pool % bm or args.pool % bn:
            continue
        try:
            t = _bench(
                lambda bm=bm, bn=bn, w=w, s=s: pass_b(
                    q,
                    k,
                    lse2,
                    scale=d**-0.5,
                    causal=causal,
                    q_offset=0,
                    pool=args.pool,
                    block_m=bm,
                    block_n=bn,
                    num_warps=w,
                    num_stages=s,
                )
            )
            res.append({"pass": "B", "cfg": [bm, bn, w, s], "ms": round(t * 1e3, 3), "tflops": round(fl / t / 1e12, 1)})
        except Exception as exc:
            res.append({"pass": "B", "cfg": [bm, bn, w, s], "error": f"{type(exc).__name__}: {str(exc)[:120]}"})
        print(res[-1], flush=True)
    return res


_COLS = [
    "N",
    "D",
    "sdpa_ms",
    "sdpa_tflops",
    "A_ms",
    "A_tflops",
    "A+B_ms",
    "A+B_tflops",
    "api_ms",
    "A_over_sdpa",
    "A+B_over_sdpa",
    "api_over_sdpa",
    "api_window_ms",
    "api_window_over_sdpa",
]


def _fmt_row(row) -> str:
    return "| " + " | ".join("-" if row.get(c) is None else str(row.get(c)) for c in _COLS) + " |"


def markdown(info) -> str:
    lines = [
        f"# Instrumented attention vs SDPA flash: {info['device']}",
        "",
        f"torch {info['torch']}, triton {info['triton']}, {info['dtype']}, causal={info['causal']}, "
        f"flops = {info['flops_formula']}; measured {info['time']} by `python benchmarks/kernels_gpu.py`.",
        "",
    ]
    if "rows" in info:
        lines += ["| " + " | ".join(_COLS) + " |", "|---" * len(_COLS) + "|"]
        lines += [_fmt_row(r) for r in info["rows"]]
    corr = info.get("correctness_vs_torch_backend", {})
    lines += ["", "Triton vs torch backend on this GPU (N=4096, D=128): " + ", ".join(f"{k} {v:.1e}" for k, v in corr.items())]
    if info.get("sweep"):
        lines += ["", "Block sweep (BLOCK_M, BLOCK_N, warps, stages):", ""]
        lines += [
            f"- pass {r['pass']} {r['cfg']}: " + (f"{r['ms']} ms, {r['tflops']} TFLOP/s" if "ms" in r else r["error"])
            for r in info["sweep"]
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="4096,8192,16384,32768,65536")
    ap.add_argument("--head-dims", default="64,128")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--pool", type=int, default=64)
    ap.add_argument(
        "--sliding-window",
        type=int,
        default=4096,
        help="also time the API on a windowed, soft-capped (cap 50) layer with this window (0: skip)",
    )
    ap.add_argument("--non-causal", action="store_true")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--sweep", action="store_true", help="also time a few block configurations")
    ap.add_argument("--sweep-n", type=int, default=16384)
    ap.add_argument("--sweep-d", type=int, default=128)
    ap.add_argument("--out", help="folder for kernels_gpu.md and kernels_gpu.json (e.g. benchmarks/results)")
    args = ap.parse_args(argv)
    args.lengths = [int(x) for x in args.lengths.split(",") if x]
    args.head_dims = [int(x) for x in args.head_dims.split(",") if x]

    try:
        import torch
    except ImportError:
        print("torch is not installed; nothing to benchmark")
        return 0
    if not torch.cuda.is_available():
        print("kernels_gpu.py: no CUDA device here; the GPU benchmark was skipped (nothing measured).")
        return 0

    print("| " + " | ".join(_COLS) + " |")
    info = run(args)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "kernels_gpu.json").write_text(json.dumps(info, indent=1))
        (out / "kernels_gpu.md").write_text(markdown(info))
        print(f"wrote {out / 'kernels_gpu.md'} and {out / 'kernels_gpu.json'}")
    return 1 if "error" in info else 0


if __name__ == "__main__":
    sys.exit(main())
