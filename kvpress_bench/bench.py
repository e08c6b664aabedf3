"""Needle accuracy against the KV-cache fraction kept, inside kvpress, for the workbench's exported
head labels and kvpress's own presses (run in .venv-kvpress; ``make kvpress-bench``).

    .venv-kvpress/bin/python -m kvpress_bench.bench --pattern kvpress_bench/data/organism-4l-duo

Cache fraction, counted the same way for every method: kept keys / all keys over the context (the
prompt without its 2-token question), summed over layers and KV heads, measured from the run
itself (the cache length after a pruning press, minus the keys a masking press marks). The
question and answer tokens are kept by every method and not counted. Grid: n of the 16 KV heads
kept full (DuoAttention-style methods; the others keep sink + recent), and for the uniform presses
``compression_ratio = 1 - fraction`` at the same fraction (kvpress keeps int(N * (1 - ratio)) keys).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

from kvpress_bench.runner import offline_env

offline_env()  # must run before kvpress imports datasets / huggingface_hub, hence the late imports (E402)

from kvpress import AdaKVPress, DuoAttentionPress, KnormPress, SnapKVPress, StreamingLLMPress  # noqa: E402

from kvpress_bench import runner  # noqa: E402
from kvpress_bench.pattern import load_pattern  # noqa: E402
from kvpress_bench.presses import AtlasDuoAttentionPress, ScoresDuoAttentionPress, random_scores  # noqa: E402

REPO = runner.REPO
DEFAULT_PATTERN = Path(__file__).resolve().parent / "data" / "organism-4l-duo"
RESULTS = REPO / "benchmarks" / "results"
RAW = Path(__file__).resolve().parent / "results" / "kvpress_needle.json"
N_FULL = (0, 1, 2, 3, 4, 6, 8, 12, 16)


# -- kvpress's DuoAttention on-the-fly scoring, offline -------------------------------------------


def on_the_fly_native(model, trials) -> str:
    """kvpress's own ``on_the_fly_scoring=True`` as shipped: returns the error it raises here."""
    try:
        runner.press_accuracy(model, trials[:1], DuoAttentionPress(head_compression_ratio=0.5, on_the_fly_scoring=True))
    except Exception as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return ""


def on_the_fly_local(model, calibration_ids: list[list[int]]) -> np.ndarray:
    """kvpress's own ``duo_attention_on_the_fly`` scores (mean query/key, RoPE, area under the
    cumulated attention of the last query), with its BookSum sample swapped for local organism text
    (the calibration prompts decoded with the organism's tokenizer). Only the data source changes."""
    import pandas as pd
    from kvpress.presses import duo_attention_press as dap
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model.config.name_or_path)
    texts = [tok.decode(ids, skip_special_tokens=True) for ids in calibration_ids]

    class _Local:
        def to_pandas(self):
            return pd.DataFrame({"chapter": texts})

    original = dap.load_dataset
    dap.load_dataset = lambda *a, **k: _Local()
    try:
        dap.cache.clear()
        return np.asarray(dap.duo_attention_on_the_fly(model, num_samples=len(texts)), dtype=float)
    finally:
        dap.load_dataset = original
        dap.cache.clear()


def knorm_evicts_bos(model, trial, compression_ratio: float = 0.2) -> int:
    """KV heads (of all layers) whose BOS key KnormPress evicts on one trial's context."""
    import torch
    from kvpress.utils import compute_n_kept
    from transformers import DynamicCache

    press = KnormPress(compression_ratio=compression_ratio)
    evicted = 0
    original = press.compress

    def spy(module, hidden_states, keys, values, attentions, kwargs):
        nonlocal evicted
        scores = press.score(module, hidden_states, keys, values, attentions, kwargs)
        kept = scores.topk(compute_n_kept(keys.shape[2], compression_ratio), dim=-1).indices
        evicted += int((~(kept[0] == 0).any(-1)).sum())
        return original(module, hidden_states, keys, values, attentions, kwargs)

    press.compress = spy  # type: ignore[method-assign]
    with torch.no_grad(), press(model):
        model.model(input_ids=torch.tensor([trial.context]), past_key_values=DynamicCache())
    return evicted


# -- the benchmark -------------------------------------------------------------------------------


def run(pattern_dir: Path, trials_path: Path, sets: list[str], n: int, seeds: int, n_full_grid=N_FULL, log=print) -> dict:
    model = runner.load_model()
    L, KV = model.config.num_hidden_layers, model.config.num_key_value_heads
    total = L * KV
    pattern = load_pattern(pattern_dir, L, KV)
    sink, recent = pattern.sink_size, pattern.recent_size
    calibration = (
        [t.prompt for t in runner.load_trials(trials_path, "needle-512-d0")]
        if "needle-512-d0" in runner.trial_sets(trials_path)
        else []
    )
    t0 = time.time()
    first = runner.load_trials(trials_path, sets[0], 1)
    native_error = on_the_fly_native(model, first)
    otf = on_the_fly_local(model, calibration) if calibration else None
    log(f"on-the-fly native: {native_error or 'ran'}; local scores: {None if otf is None else otf.round(3).tolist()}")
    out: dict = {
        "pattern": str(pattern_dir),
        "workbench": pattern.workbench,
        "sink": sink,
        "recent": recent,
        "n_kv_heads_total": total,
        "otf_native_error": native_error,
        "otf_local_scores": None if otf is None else otf.tolist(),
        "otf_calibration": f"{len(calibration)} prompts of needle-512-d0",
        "seeds": seeds,
        "scored_heads": [f"L{l}KV{k}" for l, k in pattern.ranking() if pattern.scores[l, k] > 1e-3],
        "sets": {},
    }
    for name in sets:
        trials = runner.load_trials(trials_path, name, n)
        n_ctx = len(trials[0].context)
        full_acc, full_frac = runner.press_accuracy(model, trials)
        rows = []
        for n_full in n_full_grid:
            ratio = 1 - n_full / total
            target = runner.duo_cache_fraction(n_ctx, n_full, total, sink, recent)
            row: dict = {"n_full": n_full, "head_compression_ratio": ratio, "fraction": target, "full": full_acc}
            atlas = AtlasDuoAttentionPress(head_compression_ratio=ratio, pattern_dir=str(pattern_dir))
            row["atlas"], row["atlas_frac"] = runner.press_accuracy(model, trials, atlas)
            streaming = {(l, k) for l in range(L) for k in range(KV) if bool(atlas.streaming_mask[l, k])}
            row["atlas_streaming"] = sorted(streaming)
            row["atlas_sim"] = runner.simulated_accuracy(model, trials, streaming, sink, recent)
            if otf is not None:
                p = ScoresDuoAttentionPress(head_compression_ratio=ratio, scores=otf, sink=sink, recent=recent)
                row["otf"], row["otf_frac"] = runner.press_accuracy(model, trials, p)
            rand, rand_sim = [], []
            for seed in range(seeds):
                p = ScoresDuoAttentionPress(
                    head_compression_ratio=ratio, scores=random_scores(L, KV, seed), sink=sink, recent=recent
                )
                acc, frac = runner.press_accuracy(model, trials, p)
                rand.append(acc)
                row["random_frac"] = frac
                rs = {(l, k) for l in range(L) for k in range(KV) if bool(p.streaming_mask[l, k])}
                rand_sim.append(runner.simulated_accuracy(model, trials, rs, sink, recent))
            row["random"], row["random_sim"] = rand, rand_sim
            cr = 1 - target
            for key, press in (
                ("streamingllm", StreamingLLMPress(compression_ratio=cr, n_sink=sink)),
                ("snapkv", SnapKVPress(compression_ratio=cr)),
                ("adakv_snapkv", AdaKVPress(SnapKVPress(compression_ratio=cr))),
                ("knorm", KnormPress(compression_ratio=cr)),
            ):
                try:
                    row[key], row[key + "_frac"] = runner.press_accuracy(model, trials, press)
                except Exception as e:  # a press that fails here is reported in the table with its error
                    row[key], row[key + "_error"] = None, f"{type(e).__name__}: {e}"[:160]
            rows.append(row)
            log(
                f"{name} n_full={n_full:2d} frac={target:.3f} atlas={row['atlas']:.3f} sim={row['atlas_sim']:.3f} "
                f"otf={row.get('otf')} random={np.mean(rand):.3f} streaming={row['streamingllm']} snapkv={row['snapkv']} "
                f"adakv={row['adakv_snapkv']} knorm={row['knorm']} ({time.time() - t0:.0f}s)"
            )
        # kvpress's DuoAttention at its own on-the-fly sink/recent (128 + 256), as it would run
        native = []
        if otf is not None:
            for n_full in n_full_grid:
                p = ScoresDuoAttentionPress(head_compression_ratio=1 - n_full / total, scores=otf, sink=128, recent=256)
                acc, frac = runner.press_accuracy(model, trials, p)
                native.append({"n_full": n_full, "acc": acc, "frac": frac})
        out["sets"][name] = {
            "n_trials": len(trials),
            "context": n_ctx,
            "full": full_acc,
            "full_frac": full_frac,
            "rows": rows,
            "otf_128_256": native,
        }
    out["knorm_bos_evicted"] = knorm_evicts_bos(model, first[0])
    out["seconds"] = round(time.time() - t0, 1)
    return out


# -- table and figure ----------------------------------------------------------------------------


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}"


def _recovers(res: dict) -> str:
    for i, r in enumerate(next(iter(res["sets"].values()))["rows"]):
        if all(s["rows"][i]["atlas"] >= s["full"] for s in res["sets"].values()):
            return f"{r['n_full']}/16 KV heads full"
    return "none"


def _max_dev(rows, key) -> float:
    vals = [abs(r[key + "_frac"] - r["fraction"]) for r in rows if r.get(key + "_frac") is not None]
    return max(vals) if vals else float("nan")


def _context_of(curve: dict, total: int) -> str:
    """The prompt length behind a curve's cache shares (share = (n N + (T - n)(sink + recent)) / (T N))."""
    n = round(curve["fractions"][0] * total)
    c = curve["cache_share"][0]
    den = total * c - n
    return str(round((total - n) * (curve["sink"] + curve["recent"]) / den)) if den > 0 else "?"


def write_markdown(res: dict, path: Path, command: str, main_curve: dict | None = None) -> None:
    v = runner.versions()
    wb = res["workbench"]
    L_out = [
        "# kvpress needle benchmark: the atlas's head labels inside NVIDIA kvpress",
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()} "
        f"(kvpress {v['kvpress']}, transformers {v['transformers']}, torch {v['torch']}, Python {v['python']}; CPU; "
        f"{res['seconds']:.0f} s).",
        "",
        f"Model: the shipped organism `organism-4l` (4 layers, 8 query heads, 4 KV heads per layer: 16 KV heads), sdpa. "
        f"Labels: `{_rel(res['pattern'])}`, written by `workbench export {wb.get('run_id', '?')} --format duo-attention` "
        f"(metric {wb.get('metric')}, reduce {wb.get('reduce')}); sink {res['sink']} + recent {res['recent']} tokens for streaming heads. "
        "Trials: the organism's held-out needle sets (`load_probes`, 3 distractor pairs), dumped to JSON by "
        "`kvpress_bench/dump_trials.py` in the main venv. Accuracy: greedy answer exact match on the answer token ids, in %.",
        "",
        "Generation follows kvpress's pipeline: the context (prompt minus its `recall <key>` question) is prefilled inside "
        "`with press(model)`, the question and answer are then decoded on the compressed cache. Cache fraction = kept keys / "
        "all keys over the context, per layer and KV head, measured in the run (cache length after pruning presses, minus the keys "
        "DuoAttention-style presses mask); the table's fraction is the DuoAttention count "
        "`(n_full * N + (16 - n_full) * (sink + recent)) / (16 * N)`, and the uniform presses run at `compression_ratio = 1 - fraction`.",
        "",
        "Columns: **atlas** = `AtlasDuoAttentionPress` (kvpress's DuoAttentionPress reading the exported folder); "
        "**atlas sim** = the workbench's simulation on the same trials (streaming KV heads see sink + recent keys at every query, "
        "prefill included); **duo otf** = kvpress's own `duo_attention_on_the_fly` scores (BookSum swapped for local organism text, "
        "same sink/recent); **random** = random KV heads stream (mean ± sd over seeds, kvpress); **random sim** = the same random "
        "sets simulated; StreamingLLM / SnapKV / AdaKV(SnapKV) / Knorm = kvpress presses at the same fraction.",
        "",
    ]
    if res["otf_native_error"]:
        L_out += [
            f"kvpress's `DuoAttentionPress(on_the_fly_scoring=True)` as shipped does not run offline: `{res['otf_native_error']}` "
            "(it samples BookSum from the Hub). The **duo otf** column runs the same scoring function on "
            f"{res['otf_calibration']} decoded to text.",
            "",
        ]
    for name, s in res["sets"].items():
        rows = s["rows"]
        L_out += [
            f"## {name}: context {s['context']} tokens (+2 question), {s['n_trials']} trials; full cache {_pct(s['full'])}%",
            "",
            "| KV heads full | cache fraction | atlas (kvpress) | atlas sim | duo otf | random (kvpress) | random sim | StreamingLLM | SnapKV | AdaKV(SnapKV) | Knorm | full |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            rm, rs = np.mean(r["random"]), np.std(r["random"])
            sm, ss = np.mean(r["random_sim"]), np.std(r["random_sim"])
            L_out.append(
                f"| {r['n_full']}/16 | {r['fraction']:.3f} | **{_pct(r['atlas'])}** | {_pct(r['atlas_sim'])} | {_pct(r.get('otf'))} | "
                f"{100 * rm:.0f} ± {100 * rs:.0f} | {100 * sm:.0f} ± {100 * ss:.0f} | {_pct(r['streamingllm'])} | {_pct(r['snapkv'])} | "
                f"{_pct(r['adakv_snapkv'])} | {_pct(r['knorm'])} | {_pct(r['full'])} |"
            )
        devs = {k: _max_dev(rows, k) for k in ("atlas", "otf", "random", "streamingllm", "snapkv", "adakv_snapkv", "knorm")}
        failed = [
            f"{k.removesuffix('_error')} at {r['n_full']}/16: {r[k]}" for r in rows for k in r if k.endswith("_error") and r[k]
        ]
        if failed:  # an "n/a" cell is a press that raised on this model: say what it raised
            L_out += ["", "Presses that failed (n/a above): " + "; ".join(failed)]
        L_out += [
            "",
            "Largest gap between a method's measured fraction and the column's fraction: "
            + ", ".join(f"{k} {d:.4f}" for k, d in devs.items() if d == d)
            + " (uniform presses keep int(N * (1 - ratio)) keys).",
            "",
        ]
        diffs = [r for r in rows if r["atlas"] != r["atlas_sim"]]
        if diffs:
            L_out.append(
                "Engine vs simulation differ for the atlas at "
                + ", ".join(f"{r['n_full']}/16 ({_pct(r['atlas'])} vs {_pct(r['atlas_sim'])})" for r in diffs)
                + "."
            )
        else:
            L_out.append("Engine and simulation give the same atlas accuracy at every budget on these trials.")
        rdiff = [
            f"{r['n_full']}/16 seed {i} ({_pct(a)} vs {_pct(b)})"
            for r in rows
            for i, (a, b) in enumerate(zip(r["random"], r["random_sim"]))
            if a != b
        ]
        n_sets = sum(len(r["random"]) for r in rows)
        L_out.append(
            f"Random KV-head sets, engine vs simulation (kvpress vs sim): {n_sets - len(rdiff)} of {n_sets} (budget, seed) pairs agree"
            + (f"; differing: {', '.join(rdiff)}." if rdiff else ".")
        )
        if s["otf_128_256"]:
            keeps = "every context token" if s["context"] <= 384 else f"384 of {s['context']} context tokens"
            L_out += [
                "",
                "kvpress's on-the-fly DuoAttention at its own sink 128 + recent 256 (what `on_the_fly_scoring=True` sets; a streaming "
                f"head keeps {keeps}): "
                + ", ".join(f"{x['n_full']}/16 full {_pct(x['acc'])}% at fraction {x['frac']:.3f}" for x in s["otf_128_256"])
                + ".",
            ]
        L_out.append("")
    L_out += [
        "## Engine vs simulation: what differs",
        "",
        "- kvpress prefills the context with full attention in every head and compresses the cache once, after the prefill; "
        "the workbench simulation masks the streaming heads at every query, prefill included, so context tokens in streaming heads "
        "never saw the far context. The simulation is the stricter of the two (DuoAttention's own kernels stream in prefill too).",
        "- kvpress keeps the last `recent` keys of the context (fixed at compression time) plus every question/answer key; the "
        "simulation's window slides with each query (the 2 question tokens cost it 2 keys of the window).",
        "- kvpress masks with a fake key whose attention weight underflows to 0 (`attention_patch`), the simulation with a boolean mask.",
        "- Where they differ (only some random sets, by one trial of 32, in either direction) the heads kept full leave the "
        "answer on a knife's edge, and the two differences above decide it; for the atlas's labels they never differ here.",
        "",
        "## Remarks",
        "",
        f"- Knorm (keep the keys of smallest norm) scores 0% below the full cache: it evicts the BOS key, the organism's attention "
        f"sink, in {res.get('knorm_bos_evicted', '?')} of 16 KV heads (first needle-256 trial, compression ratio 0.2).",
        f"- The atlas's retrieval score is above 1e-3 for {len(res['scored_heads'])} KV heads only ({', '.join(res['scored_heads'])}); "
        "the export breaks the ties of the others by index, so past that many heads the atlas order is arbitrary. "
        f"The smallest budget at which the atlas labels match the full cache on every context: {_recovers(res)}.",
        "- kvpress's on-the-fly DuoAttention scores rank layer 0 first on this organism (its mean-query/mean-key proxy is not the "
        "retrieval behaviour), so it streams the retrieval heads until most heads are full.",
        "- DuoAttention-style masking in kvpress does not shrink memory (kvpress's own docstring): the fraction is counted, not measured in bytes.",
        "",
    ]
    if main_curve:
        L_out += [
            "## The atlas run's own simulated curve (main venv, its own trials)",
            "",
            f"`{wb.get('run_id')}` (retrieval family, {main_curve.get('n_trials', '?')} of the organism's own generated needle trials, "
            f"{_context_of(main_curve, res['n_kv_heads_total'])}-token prompts, workbench simulation, {main_curve.get('n_random', 2)} random "
            "draws): share of KV heads full -> ranked accuracy / random accuracy: "
            + ", ".join(
                f"{f:.2f} ({round(f * res['n_kv_heads_total'])}/16, cache {c:.3f}) -> {_pct(a)} / {_pct(b)}"
                for f, c, a, b in zip(
                    main_curve["fractions"],
                    main_curve["cache_share"],
                    main_curve["ranked_accuracy"],
                    main_curve["random_accuracy"],
                )
            )
            + ". For the main side: the kvpress numbers to put beside a simulated budget are the **atlas (kvpress)** column "
            "at the same (context, KV heads full).",
            "",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L_out))


def write_figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(res["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(6.2 * len(sets), 4.4), squeeze=False)
    styles = [
        ("atlas", "atlas labels (kvpress)", "C3", "o", "-"),
        ("atlas_sim", "atlas labels (simulated)", "C3", "x", ":"),
        ("otf", "kvpress DuoAttention on-the-fly", "C0", "s", "-"),
        ("streamingllm", "StreamingLLM", "C2", "^", "-"),
        ("snapkv", "SnapKV", "C4", "v", "-"),
        ("adakv_snapkv", "AdaKV(SnapKV)", "C5", "<", "-"),
        ("knorm", "Knorm", "C8", ">", "-"),
    ]
    for ax, name in zip(axes[0], sets):
        s = res["sets"][name]
        rows = s["rows"]
        x = [r["fraction"] for r in rows]
        for key, label, color, marker, ls in styles:
            ys = [r.get(key) for r in rows]
            if all(y is None for y in ys):
                continue
            xs = [r.get(key + "_frac", r["fraction"]) for r in rows]
            ax.plot(xs, [100 * (y if y is not None else np.nan) for y in ys], ls, color=color, marker=marker, label=label, ms=5)
        m = np.array([100 * np.mean(r["random"]) for r in rows])
        sd = np.array([100 * np.std(r["random"]) for r in rows])
        ax.plot(x, m, "--", color="grey", marker=".", label=f"random KV heads (kvpress, {res['seeds']} seeds)")
        ax.fill_between(x, m - sd, m + sd, color="grey", alpha=0.2)
        ax.axhline(100 * s["full"], color="k", lw=0.8, label="full cache")
        ax.set_title(f"{name}: {s['context']}-token context, {s['n_trials']} trials")
        ax.set_xlabel("KV cache kept (kept keys / all keys over the context)")
        ax.set_ylabel("needle exact match (%)")
        ax.set_ylim(-3, 103)
        ax.set_xlim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"organism-4l: atlas head labels vs kvpress presses (sink {res['sink']} + recent {res['recent']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="kvpress needle benchmark")
    ap.add_argument("--pattern", type=Path, default=DEFAULT_PATTERN, help="exported duo-attention folder")
    ap.add_argument("--trials", type=Path, default=runner.TRIALS)
    ap.add_argument("--sets", default="needle-256,needle-512")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--main-curve", type=Path, default=None, help="the run's kv_budget_curve.json (optional)")
    ap.add_argument("--md", type=Path, default=RESULTS / "kvpress_needle.md")
    ap.add_argument("--png", type=Path, default=RESULTS / "kvpress_needle.png")
    ap.add_argument("--json", type=Path, default=RAW)
    args = ap.parse_args(argv)
    res = run(args.pattern, args.trials, [s for s in args.sets.split(",") if s], args.n, args.seeds)
    main_curve = None
    if args.main_curve and args.main_curve.is_file():
        main_curve = json.loads(args.main_curve.read_text())
    elif (Path(args.pattern) / "main_curve.json").is_file():
        main_curve = json.loads((Path(args.pattern) / "main_curve.json").read_text())
    res["main_curve"] = main_curve
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    command = (
        "make kvpress-bench"
        if "MAKELEVEL" in __import__("os").environ
        else "python -m kvpress_bench.bench " + " ".join(sys.argv[1:])
    )
    write_markdown(res, args.md, command, main_curve)
    write_figure(res, args.png)
    print(f"wrote {args.md}, {args.png}, {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
