"""The supported-architectures table: what was measured on each tiny random model of the matrix.

    python benchmarks/architectures.py [--out benchmarks/results/architectures.md]

For every architecture of `workbench.models.tiny.TINY_ARCHS` (2 layers, hidden 64, 48 tokens, batch 2,
float32, CPU) it measures, against an independently loaded Hugging Face model with eager attention:
load parity and recorder (torch backend) parity of the logits, the largest error of the recorder's
statistics (entropy, first-token mass, column sums) against ``output_attentions``, the self-check's
worst per-layer relative error, uniform ablation of L0H1 (distance from uniform over the visible keys,
and the largest change of any other head of the layer) on the bridge and on the fast HF path, and zero
and mean ablation of L1H2 against the same edit made with a plain hook on the HF model's output
projection. The assertions of tests/models/test_architectures.py bound the same quantities.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Set before transformers is imported, which reads it at import time (ruff allows os.environ edits above imports).

import torch
from transformers import AutoModelForCausalLM

from workbench.errors import WorkbenchError
from workbench.interventions import ablate_heads, ablate_heads_hf, ablated_logits, head_means
from workbench.interventions.ablation import _hf_attention_modules, _out_proj
from workbench.models import load_model
from workbench.models.attention_spec import layer_attention
from workbench.models.tiny import TINY_ARCHS, build_tiny_model
from workbench.record import record_attention

N = 48


def _tokens(vocab: int, bos: int, seed: int) -> torch.Tensor:
    ids = torch.randint(4, vocab, (2, N), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = bos
    return ids


def _layer0_pattern(model, tokens) -> torch.Tensor:
    box = {}

    def grab(t, hook):
        box["p"] = t.detach().double()

    with model.bridge.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", grab)]), torch.no_grad():
        model.logits(tokens)
    return box["p"]


def _uniform_errors(base: torch.Tensor, ablated: torch.Tensor, window: int | None) -> tuple[float, float]:
    i, j = torch.arange(N)[:, None], torch.arange(N)[None, :]
    vis = (j <= i) & ((j > i - window) if window else True)
    uniform = vis.double() / vis.sum(-1, keepdim=True)
    others = [h for h in range(base.shape[1]) if h != 1]
    return float((ablated[:, 1] - uniform).abs().max()), float((ablated[:, others] - base[:, others]).abs().max())


def _direct_edit_logits(hf, tokens, fill: torch.Tensor | None, d_head: int) -> torch.Tensor:
    proj = _out_proj(_hf_attention_modules(hf)[1])

    def edit(mod, args):
        x = args[0].clone()
        x[..., 2 * d_head : 3 * d_head] = 0 if fill is None else fill.to(x.dtype)
        return (x, *args[1:])

    handle = proj.register_forward_pre_hook(edit)
    try:
        with torch.no_grad():
            return hf(tokens).logits
    finally:
        handle.remove()


def measure(arch: str, folder: Path) -> dict:
    model = load_model(folder, device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    geo = model.geometry
    tokens = _tokens(geo.vocab_size, geo.bos.token_id, 0)
    with torch.no_grad():
        out = hf(tokens, output_attentions=True)
        load = float((model.logits(tokens) - out.logits).abs().max())
    logits, rec = record_attention(model, tokens, backend="torch", chunk=16, pool=16)
    stat_err = 0.0
    for layer, p in enumerate(out.attentions):
        p = p.double()
        st = rec.layers[layer]
        for mine, ref in ((st.entropy, torch.special.entr(p).sum(-1)), (st.first_k_mass, p[..., 0]), (st.col_sum, p.sum(-2))):
            stat_err = max(stat_err, float((mine.double() - ref).abs().max()))
    check = next(iter(model.core_checks.values()))
    specs = layer_attention(hf.config, geo.n_layers)
    base = _layer0_pattern(model, tokens)
    with ablate_heads(model, "L0H1", "uniform"):
        abl = _layer0_pattern(model, tokens)
    uni, other = _uniform_errors(base, abl, specs[0].sliding_window)
    try:
        with torch.no_grad():
            hf_base = hf(tokens, output_attentions=True).attentions[0].double()
            with ablate_heads_hf(hf, "L0H1", "uniform"):
                hf_abl = hf(tokens, output_attentions=True).attentions[0].double()
        hf_uni, hf_other = _uniform_errors(hf_base, hf_abl, specs[0].sliding_window)
        hf_path = f"{hf_uni:.1e} / {hf_other:.1e}"
    except WorkbenchError:
        hf_path = "refused (HF module bypasses the attention interface)"
    reference = _tokens(geo.vocab_size, geo.bos.token_id, 4)
    zero = float((ablated_logits(model, tokens, "L1H2", "zero") - _direct_edit_logits(hf, tokens, None, geo.d_head)).abs().max())
    means = head_means(model, reference)
    mean = float(
        (ablated_logits(model, tokens, "L1H2", "mean", means=means) - _direct_edit_logits(hf, tokens, means[1][2], geo.d_head))
        .abs()
        .max()
    )
    pos = geo.positional
    features = [f"{type(model.bridge.blocks[0].attn).__name__}"]
    if any(s.describe() != "full causal" for s in specs):
        features.append(", ".join(f"L{i}: {s.describe()}" for i, s in enumerate(specs)))
    if pos.kind == "rope":
        longest = sorted({round(max(pos.layer_periods(i))) for i in range(geo.n_layers)})
        features.append(f"RoPE {pos.rope_dims}/{geo.d_head} dims, {pos.pair_layout}, longest period {longest}")
    else:
        features.append(pos.describe())
    features.append(f"{geo.n_heads}q/{geo.n_kv_heads}kv heads")
    return dict(
        arch=arch,
        hf=type(hf).__name__,
        features="; ".join(features),
        load=load,
        rec=float((logits - out.logits).abs().max()),
        stats=stat_err,
        check=check.worst[1],
        uniform=f"{uni:.1e} / {other:.1e}",
        hf_path=hf_path,
        zero=zero,
        mean=mean,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in TINY_ARCHS:
            rows.append(measure(arch, build_tiny_model(Path(tmp) / arch, arch, peaked=True)))
            print(f"measured {arch}", file=sys.stderr, flush=True)
    lines = [
        "| model (tiny, random) | HF class | what the recorder has to get right | load: max abs d logits | recorder (torch): max abs d logits | statistics vs output_attentions: max abs err | self-check: worst relative err | uniform L0H1, bridge: max dist from uniform / max change of other heads | same, fast HF path | zero L1H2 vs direct HF edit | mean L1H2 vs direct HF edit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['hf']} | {r['features']} | {r['load']:.1e} | {r['rec']:.1e} | {r['stats']:.1e} | "
            f"{r['check']:.1e} | {r['uniform']} | {r['hf_path']} | {r['zero']:.1e} | {r['mean']:.1e} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(
            "# Supported architectures: measured on tiny random models\n\n"
            "`python benchmarks/architectures.py --out benchmarks/results/architectures.md` "
            "(float32, CPU, 2 layers, 48 tokens, batch 2).\n\n" + table + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
