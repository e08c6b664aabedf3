"""The atlas per family on random-weight models of real shapes: passes, tokens, time, memory, and the
ratio to plain SDPA forwards over the same prompts, measured in one run.

Two shapes (random weights, written once to a cache folder; a word tokenizer whose vocabulary holds
every word of the shipped text sets, so the text families read known tokens):

- ``qwen2-0.5b``: the Qwen2-0.5B geometry (24 layers, 14 query / 2 KV heads, d 64, hidden 896).
  Each family runs through `Atlas` in its own subprocess (so peak RSS is per family) with
  ``--n-prompts`` and ``--max-tokens``; a counter on the bridge's forward splits prefills from cached
  decode steps. The baseline is the same model loaded as a plain Hugging Face model with SDPA
  attention, one forward per prompt over the same number of prompts and tokens.
- ``llama-8b-layer``: one layer of the Llama-3-8B geometry (hidden 4096, 32 / 8 heads, d 128,
  vocabulary 128256). At each ``--lengths`` N it runs the steps a family makes at that length: a
  recorded pass (the sinks and retrieval statistics), the chunked LM loss, a kernel-side sink-removal
  pass, a 16-token cached recorded decode, and the temporal q/k capture; peak RSS per step (each in
  its own subprocess), against an SDPA forward of the same length.

    python benchmarks/atlas_scale.py qwen2-0.5b --n-prompts 2 --max-tokens 512 --out benchmarks/results/atlas_scale_qwen2_05b.md
    python benchmarks/atlas_scale.py llama-8b-layer --lengths 16384,32768 --out benchmarks/results/atlas_scale_8b_layer.md

``--device cuda`` runs the same on a GPU (peak memory is then the device's peak allocation).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

FAMILIES = ("sinks", "retrieval", "safety", "temporal")
LAYER_STEPS = ("sdpa", "record", "lm_loss", "sink_removal", "decode", "temporal_qk")
CACHE = Path(os.environ.get("WB_SHAPE_CACHE", Path.home() / ".cache" / "workbench-shapes"))


# -- the shaped models ---------------------------------------------------------------------------------


def _shipped_words() -> list[str]:
    """Every whitespace-separated word of the shipped text sets (prose, harmful, harmless requests)."""
    from workbench.data.registry import SHIPPED

    words: dict[str, None] = {}
    for name in ("prose.txt", "harmful.jsonl", "harmless.jsonl"):
        text = (SHIPPED / name).read_text(encoding="utf-8")
        if name.endswith(".jsonl"):
            text = " ".join(str(v) for line in text.splitlines() if line.strip() for v in json.loads(line).values())
        for w in text.split():
            words.setdefault(w, None)
    return list(words)


def _config(shape: str):
    from transformers import LlamaConfig, Qwen2Config

    if shape == "qwen2-0.5b":
        return Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_theta=1_000_000.0,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
        )
    if shape == "llama-8b-layer":
        return LlamaConfig(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=1,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=131072,
            rope_theta=500_000.0,
            tie_word_embeddings=True,  # halves host memory; the layer's attention is the 8B's
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
        )
    raise SystemExit(f"unknown shape {shape!r}: use qwen2-0.5b or llama-8b-layer")


def shaped_model(shape: str) -> Path:
    """Write (once) a random model of ``shape`` and its word tokenizer; return the folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.models.word_tokenizer import SPECIAL_TOKENS, build_word_tokenizer

    folder = CACHE / shape
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    config = _config(shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    words = _shipped_words()
    filler = [f"w{i}" for i in range(config.vocab_size - len(SPECIAL_TOKENS) - len(words))]
    build_word_tokenizer([*words, *filler]).save_pretrained(str(folder))
    return folder


# -- children --------------------------------------------------------------------------------------------


def _peak(device: str) -> float:
    """Peak memory in GiB: the device's peak allocation on CUDA, else the process's max RSS."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class StepTimer:
    """Atlas progress hooks that add the wall time between two progress calls to the step reported
    by the second (a step reports when it has done its work), so the table says where time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def _add(self, label: str) -> None:
        now = time.perf_counter()
        self.seconds[label] = self.seconds.get(label, 0.0) + now - self.last
        self.last = now

    def started(self, run_id: str, message: str) -> None:
        self.last = time.perf_counter()

    def on_part(self, family: str, part: str, done: int, total: int) -> None:
        self._add(f"{family} part {part} (between steps)")

    def step(self, label: str, done: int, total: int) -> None:
        self._add(label)

    def finished(self, result) -> None:
        self._add("finish (merge, store)")


def child_family(folder: str, family: str, n_prompts: int, max_tokens: int, device: str, store: str) -> dict:
    import torch

    from workbench import Atlas
    from workbench.models import load_model
    from workbench.record import record_attention

    model = load_model(folder, device=device)
    record_attention(model, torch.randint(4, 64, (1, 8), device=model.device))  # self-check outside the timing
    loaded = _peak(device)
    counts = {"prefill": 0, "step": 0, "tokens": 0}

    def pre(module, args, kwargs):
        cache = kwargs.get("past_key_values")
        ids = args[0] if args else kwargs.get("input")
        n = int(ids.numel()) if isinstance(ids, torch.Tensor) else 0
        counts["step" if cache is not None and cache.get_seq_length() > 0 else "prefill"] += 1
        counts["tokens"] += n

    handle = model.bridge.register_forward_pre_hook(pre, with_kwargs=True)
    timer = StepTimer()
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        atlas = Atlas(model, families=[family], store=store, n_prompts=n_prompts, max_tokens=max_tokens, progress=timer)
        result = atlas.run()
    finally:
        handle.remove()
    _sync(device)
    return {
        "family": family,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "prefills": counts["prefill"],
        "decode_steps": counts["step"],
        "tokens": counts["tokens"],
        "peak_gib": _peak(device),
        "loaded_gib": loaded,
        "status": result.status,
        "steps": timer.seconds,
    }


def child_sdpa(folder: str, n_prompts: int, n_tokens: int, device: str) -> dict:
    """Plain Hugging Face forwards with SDPA attention: ``n_prompts`` prompts of ``n_tokens``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32).to(device).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 1000, (1, n_tokens), generator=g).to(device) for _ in range(n_prompts)]
    with torch.no_grad():
        model(prompts[0][:, :16])  # warm-up
        _sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        for p in prompts:
            model(p, logits_to_keep=1)
        _sync(device)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "tokens": n_prompts * n_tokens,
        "peak_gib": _peak(device),
    }


def child_layer_step(folder: str, step: str, n: int, device: str) -> dict:
    """One step a family makes at length ``n`` on the single 8B-shaped layer."""
    import torch

    if step == "sdpa":
        return child_sdpa(folder, 1, n, device)
    from workbench.models import load_model
    from workbench.record import AttentionRecorder, record_attention

    model = load_model(folder, device=device)
    record_attention(model, torch.randint(4, 64, (1, 8), device=model.device))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, model.geometry.vocab_size, (1, n), generator=g).to(model.device)
    tokens[0, 0] = 1
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        if step == "record":
            with AttentionRecorder(model, backend="auto") as rec:
                model.bridge(tokens, **_last_only(model))
            assert rec.last.recorded_layers
        elif step == "lm_loss":
            from workbench.analysis.metrics import lm_loss

            lm_loss(model, [tokens[0]])
        elif step == "sink_removal":
            from workbench.analysis.metrics import lm_loss
            from workbench.interventions.kernel_edits import kernel_edits
            from workbench.kernels import HeadEdit

            edits = {0: [HeadEdit(h, removed=(0,)) for h in range(model.geometry.n_heads)]}
            with AttentionRecorder(model, columns=False, layers=()), kernel_edits(model, edits):
                lm_loss(model, [tokens[0]])
        elif step == "decode":
            from workbench.record.config import RecorderConfig
            from workbench.record.decode import generate

            generate(model, tokens, 16, (), record=RecorderConfig())
        elif step == "temporal_qk":
            from workbench.analysis.temporal import analyze_temporal

            analyze_temporal(model, [tokens[0]])
        else:
            raise SystemExit(f"unknown step {step}")
    _sync(device)
    return {"step": step, "n": n, "seconds": time.perf_counter() - start, "peak_gib": _peak(device)}


def _last_only(model) -> dict:
    from workbench.models.generate import last_logits_kwargs

    return last_logits_kwargs(model, 1)


# -- the parent ------------------------------------------------------------------------------------------


def _run_child(args: list[str], limit_gib: float) -> dict:
    def limit() -> None:
        cap = int(limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, preexec_fn=limit, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        oom = any(re.search(r"MemoryError|Cannot allocate|out of memory|DefaultCPUAllocator", t) for t in tail)
        return {"error": "OOM" if oom else " / ".join(tail)[-300:]}
    return json.loads(lines[-1])


def run_families(args) -> str:
    import tempfile

    folder = str(shaped_model(args.shape))
    base = _run_child(["sdpa", folder, str(args.n_prompts), str(args.max_tokens), args.device], args.limit_gib)
    rows = [
        f"atlas per family: {args.shape} shape (random weights), --n-prompts {args.n_prompts} --max-tokens {args.max_tokens}, "
        f"{args.device}, {os.cpu_count()} cores",
        "",
        f"baseline: plain Hugging Face SDPA forwards over {args.n_prompts} prompts x {args.max_tokens} tokens: "
        f"{base.get('seconds', float('nan')):.2f} s ({base.get('cpu_seconds', float('nan')):.2f} CPU s), "
        f"peak {base.get('peak_gib', float('nan')):.2f} GiB",
        "",
        "| family | status | prefills | decode steps | tokens | wall s | CPU s | x SDPA (wall) | peak GiB (model loaded) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total = total_cpu = 0.0
    where: dict[str, dict[str, float]] = {}
    for family in args.families.split(","):
        with tempfile.TemporaryDirectory() as store:
            r = _run_child(
                ["family", folder, family, str(args.n_prompts), str(args.max_tokens), args.device, store], args.limit_gib
            )
        if "error" in r:
            rows.append(f"| {family} | {r['error']} | | | | | | | |")
            print(rows[-1], flush=True)
            continue
        cut = 0.01 * r["seconds"]
        where[family] = {label: sec for label, sec in r.get("steps", {}).items() if sec >= cut}
        total += r["seconds"]
        total_cpu += r["cpu_seconds"]
        rows.append(
            f"| {family} | {r['status']} | {r['prefills']} | {r['decode_steps']} | {r['tokens']} | {r['seconds']:.1f} | "
            f"{r['cpu_seconds']:.1f} | {r['seconds'] / base['seconds']:.1f} | {r['peak_gib']:.2f} ({r['loaded_gib']:.2f}) |"
        )
        print(rows[-1], flush=True)
    rows.append(f"| **all** | | | | | {total:.1f} | {total_cpu:.1f} | **{total / base['seconds']:.1f}** | |")
    rows += ["", "where the time goes (wall s per progress step, steps over 1% of the family's time):", ""]
    for family, steps in where.items():
        parts = ", ".join(f"{label} {sec:.1f}" for label, sec in sorted(steps.items(), key=lambda kv: -kv[1]))
        rows.append(f"- {family}: {parts}")
    rows += ["", f"`python benchmarks/atlas_scale.py {args.shape} --n-prompts {args.n_prompts} --max-tokens {args.max_tokens}`"]
    return "\n".join(rows)


def run_layer(args) -> str:
    folder = str(shaped_model(args.shape))
    rows = [
        f"single Llama-3-8B-shaped layer (random weights, vocabulary 128256), {args.device}, {os.cpu_count()} cores; "
        "peak is the child's max RSS (model load included)",
        "",
        "| N | step | wall s | x SDPA | peak GiB |",
        "|---:|---|---:|---:|---:|",
    ]
    load = _run_child(["layer", folder, "load", "1", args.device], args.limit_gib)
    for n in (int(x) for x in args.lengths.split(",")):
        sdpa = None
        for step in args.steps.split(","):
            r = _run_child(["layer", folder, step, str(n), args.device], args.limit_gib)
            if "error" in r:
                rows.append(f"| {n} | {step} | {r['error']} | | |")
            else:
                sdpa = r["seconds"] if step == "sdpa" else sdpa
                ratio = f"{r['seconds'] / sdpa:.1f}" if sdpa else ""
                rows.append(f"| {n} | {step} | {r['seconds']:.1f} | {ratio} | {r['peak_gib']:.2f} |")
            print(rows[-1], flush=True)
    if "error" not in load:
        rows.append(f"\nmodel loaded, nothing run: {load.get('peak_gib', float('nan')):.2f} GiB")
    rows += ["", f"`python benchmarks/atlas_scale.py {args.shape} --lengths {args.lengths}`"]
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "family":
            out = child_family(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4], rest[5])
        elif kind == "sdpa":
            out = child_sdpa(rest[0], int(rest[1]), int(rest[2]), rest[3])
        elif rest[1] == "load":
            from workbench.models import load_model

            load_model(rest[0], device=rest[3])
            out = {"peak_gib": _peak(rest[3])}
        else:
            out = child_layer_step(rest[0], rest[1], int(rest[2]), rest[3])
        print(json.dumps(out), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", choices=["qwen2-0.5b", "llama-8b-layer"])
    parser.add_argument("--n-prompts", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--lengths", default="16384,32768")
    parser.add_argument("--steps", default=",".join(LAYER_STEPS), help="llama-8b-layer: the steps to run at each length")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit-gib", type=float, default=22.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    table = run_families(args) if args.shape == "qwen2-0.5b" else run_layer(args)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
