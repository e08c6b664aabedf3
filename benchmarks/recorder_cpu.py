"""Peak memory and wall time of attention recording on CPU, as ratios measured in one run.

For each sequence length N it runs, each in a fresh subprocess (so peak RSS is per run):
  (a) TransformerLens run_with_cache keeping every layer's hook_pattern,
  (b) a plain forward with no recording,
  (c) the AttentionRecorder (torch backend: per-head statistics, column sums, pooled map).
Peak memory is the child's max RSS minus the max RSS of the same child that only loaded
the model and built the prompt. A child that runs out of memory (address-space limit,
default 20 GiB) is reported as "OOM" for that length.

    python benchmarks/recorder_cpu.py --lengths 1024,2048,4096,8192,16384,32768 [--model SPEC] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("run_with_cache", "plain", "recorder")


def child(method: str, model_spec: str, n: int, chunk: int) -> None:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from workbench.models import load_model
    from workbench.record import AttentionRecorder

    model = load_model(model_spec, device="cpu")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, model.geometry.vocab_size, (1, n), generator=g)
    tokens[0, 0] = model.geometry.bos.token_id or 1
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.no_grad():
        if method == "run_with_cache":
            _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
            assert len(cache) == model.geometry.n_layers
        elif method == "plain":
            model.logits(tokens)
        elif method == "recorder":
            with AttentionRecorder(model, backend="torch", chunk=chunk) as rec:
                model.logits(tokens)
            assert rec.last.recorded_layers
        elif method == "load":
            pass
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_kib": peak, "base_kib": base}))


def measure(method: str, model_spec: str, n: int, chunk: int, limit_gib: float) -> dict:
    def limit() -> None:
        cap = int(limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    cmd = [sys.executable, __file__, "--child", method, "--model", model_spec, "--n", str(n), "--chunk", str(chunk)]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit)
    if proc.returncode != 0:
        oom = "MemoryError" in proc.stderr or "DefaultCPUAllocator" in proc.stderr or proc.returncode < 0
        return {"status": "OOM" if oom else f"error: {proc.stderr.strip().splitlines()[-1][:120]}"}
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"status": "ok", "seconds": data["seconds"], "peak_mib": (data["peak_kib"] - data["base_kib"]) / 1024}


def default_model() -> str:
    from workbench.models.registry import DEFAULT_MODEL, shipped_models

    if DEFAULT_MODEL in shipped_models():
        return DEFAULT_MODEL
    raise SystemExit("no shipped organism yet: pass --model FOLDER")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=(*METHODS, "load"))
    ap.add_argument("--model")
    ap.add_argument("--n", type=int)
    ap.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--limit-gib", type=float, default=20.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.model, args.n, args.chunk)
        return
    model_spec = args.model or default_model()
    rows = []
    header = f"{'N':>6} | {'run_with_cache MiB':>18} {'s':>7} | {'plain MiB':>10} {'s':>7} | {'recorder MiB':>12} {'s':>7} | {'rec/rwc mem':>11} {'rec/plain time':>14}"
    print(f"model: {model_spec}   threads: {os.cpu_count()}   memory cap per run: {args.limit_gib} GiB")
    print(header)
    print("-" * len(header))
    for n in [int(x) for x in args.lengths.split(",")]:
        row = {"n": n}
        for method in METHODS:
            row[method] = measure(method, model_spec, n, args.chunk, args.limit_gib)
        rows.append(row)

        def cell(r: dict) -> str:
            if r["status"] != "ok":
                return f"{r['status']:>18} {'':>7}"
            return f"{r['peak_mib']:>18.1f} {r['seconds']:>7.2f}"

        rwc, plain, rec = row["run_with_cache"], row["plain"], row["recorder"]
        mem_ratio = f"{rec['peak_mib'] / rwc['peak_mib']:.3f}" if rwc["status"] == rec["status"] == "ok" else "-"
        time_ratio = f"{rec['seconds'] / plain['seconds']:.2f}" if plain["status"] == rec["status"] == "ok" else "-"
        print(f"{n:>6} | {cell(rwc)} | {cell(plain)[8:]} | {cell(rec)[6:]} | {mem_ratio:>11} {time_ratio:>14}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": model_spec, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
