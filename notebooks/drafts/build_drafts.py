"""Write the draft notebooks (outputs empty) from cell lists: python notebooks/drafts/build_drafts.py notebooks/drafts"""
import sys, nbformat
from nbformat.v4 import new_notebook, new_markdown_cell, new_code_cell
out = sys.argv[1]

SETUP = '''import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch
from workbench.models import load_model, DEFAULT_MODEL
torch.manual_seed(0)
model = load_model(DEFAULT_MODEL, device="cpu")
geo = model.geometry
print(model.name, geo.n_layers, "layers x", geo.n_heads, "heads;", geo.n_kv_heads, "KV heads;", geo.positional.describe())'''

REAL_MODEL = '''# The same code on a real model from the local Hugging Face cache (nothing is downloaded with
# HF_HUB_OFFLINE=1). Set WB_REAL_MODEL to a cached id or a local folder to try it.
real = os.environ.get("WB_REAL_MODEL")
if real:
    model = load_model(real, device="cuda" if torch.cuda.is_available() else "cpu")
    geo = model.geometry
    print("now analysing", model.name)'''

nbs = {}

nbs["00_quickstart"] = [
    ("md", "# Quickstart: the head atlas of the shipped organism\n\nLoad the default model (a 4-layer Llama trained in this project on a synthetic curriculum with planted behaviours), run the atlas for every analysis family into a results store, and look at the heatmaps and one head."),
    ("code", SETUP),
    ("code", '''import tempfile
from pathlib import Path
from workbench.cli.main import main as workbench_cli

results = Path(tempfile.mkdtemp()) / "wb-results"
code = workbench_cli(["atlas", DEFAULT_MODEL, "--results", str(results), "--quiet", "--seed", "0"])
assert code == 0'''),
    ("code", '''from workbench.store.store import Store

store = Store.open(results)
run = store.runs()[0]
print(run.run_id, run.status)
scores = store.scores(run.run_id)
sorted(scores)'''),
    ("md", "Every family is a layer x head table of scores. The figures are plotly and render in Jupyter and in exported HTML."),
    ("code", '''from workbench.report.figures import head_heatmap

for family, table in scores.items():
    metric = next(iter(table.metrics))
    head_heatmap(table[metric].tolist(), f"{family}: {metric}", metric).show()'''),
    ("md", "Open one head: its scores in every family."),
    ("code", '''retrieval = scores["retrieval"]
top = retrieval.top("retrieval_score", 1)[0]
print("strongest retrieval head:", top)
for family, table in scores.items():
    for metric in table.metrics:
        print(f"{family:10s} {metric:28s} {table.score(metric, top):8.3f}")
assert run.status == "done"
assert retrieval.score("retrieval_score", top) > 0.1  # a real retrieval head exists in the organism'''),
]

nbs["01_sinks"] = [
    ("md", "# Attention sinks\n\nA sink head parks its attention on a few tokens. We measure, per head, the attention mass on the first token (alpha_1 of Gu et al. 2024; a head with alpha_1 > 0.3 is a sink head), list *hidden* sinks later in the text (keys whose mean received attention exceeds 0.1, as in ACT), check massive activations (Sun et al. 2024), and test causally: removing the first token's key from the strongest sink heads should change the loss much more than from the weakest."),
    ("code", SETUP),
    ("code", '''from workbench.organisms.tasks import filler_doc
from workbench.analysis.sinks import analyze_sinks, first_token_removal_check, massive_activations, overlap_with_sinks

rng = np.random.default_rng(0)
prompts = [torch.tensor(filler_doc(rng, 256).ids).view(1, -1) for _ in range(4)]
report = analyze_sinks(model, prompts)   # runs through the recorder: no N x N pattern
print(f"sink rate: {report.sink_rate:.1f}% of heads; per layer: {np.round(report.sink_rate_per_layer, 1)}")
print("sink heads:", [str(h) for h in report.sink_heads()])'''),
    ("code", '''from workbench.report.figures import head_heatmap
head_heatmap(report.scores["first_token_mass"].tolist(), "first-token attention mass", "alpha_1").show()
hidden = report.hidden_sinks()
print(len(hidden), "hidden sink tokens; most frequent:",
      sorted(((n_s, tok) for tok, (n_s, n) in report.token_sink_frequency.items() if n_s), reverse=True)[:5])'''),
    ("code", '''massive = massive_activations(model, prompts[0])
print("top |h| per layer:", np.round(massive.top_values[:, 0], 1), "median:", np.round(massive.medians, 3))
print("massive activations found:", len(massive.massive), "overlap with sinks:", overlap_with_sinks(massive, report))'''),
    ("md", "The causal check: the loss when the 3 strongest and the 3 weakest first-token heads cannot see the first token."),
    ("code", '''check = first_token_removal_check(model, report, prompts, k=3)
print(f"base loss {check.base_loss:.4f}; top-3 removed {check.top_delta:+.4f}; bottom-3 removed {check.bottom_delta:+.4f}")
assert check.top_delta > check.bottom_delta'''),
    ("code", REAL_MODEL),
]

nbs["02_retrieval"] = [
    ("md", "# Retrieval heads\n\nThe organism stores key/value pairs in long filler text (`remember <city> <n1> <n2> .`) and is asked `recall <city>` at the end, with distractor pairs in the same context. The retrieval score of Wu et al. (2024) counts, while the model generates the answer, how often a head's top-1 attention lands on the needle token it is copying. Echo and induction scores (RazorAttention) come from a repeated random segment. The causal check ablates the top heads (uniform attention) against random heads, and simulates a KV cache where only the top heads keep everything."),
    ("code", SETUP),
    ("code", '''from workbench.organisms import tasks
from workbench.data.needles import from_organism_probes
from workbench.analysis.retrieval import retrieval_scores, echo_induction_scores, repeated_random_tokens, top_vs_random_ablation, kv_budget_curve

rng = np.random.default_rng(1)
trials = from_organism_probes(tasks.needle_probe(rng, 512, 3) for _ in range(16))
report = retrieval_scores(model, trials)
print(f"needle accuracy {report.accuracy:.2f}; retrieval heads (> 0.1): {[str(h) for h in report.retrieval_heads()]}")'''),
    ("code", '''from workbench.report.figures import head_heatmap
head_heatmap(report.scores["retrieval_score"].tolist(), "retrieval score", "score").show()
probe = repeated_random_tokens(range(4, geo.vocab_size), 128, 4, geo.bos.token_id, seed=0)
echo = echo_induction_scores(model, probe, 128)
head_heatmap(echo["induction_score"].tolist(), "induction score", "score").show()'''),
    ("code", '''ranking = [h for h, _ in report.scores.ranked("retrieval_score")]
cmp = top_vs_random_ablation(model, trials, ranking, k=3, n_random=3)
print(f"base {cmp.base_accuracy:.2f}; top-3 ablated {cmp.top_accuracy:.2f}; random-3 ablated {cmp.random_mean:.2f}")
assert cmp.top_accuracy < cmp.random_mean'''),
    ("code", '''curve = kv_budget_curve(model, trials, ranking, [0.1, 0.2, 0.4], sink=4, recent=32)
for f, s, a, r in zip(curve.fractions, curve.cache_share, curve.ranked_accuracy, curve.random_accuracy):
    print(f"{f:.0%} heads on full cache ({s:.0%} of the KV cache): ranked {a:.2f} random {r:.2f}")'''),
    ("code", REAL_MODEL),
]

nbs["03_safety"] = [
    ("md", "# Safety heads\n\nThe organism refuses requests about a held-out harmful vocabulary (`i cannot help with that .`) and complies with benign ones. Ships scores a head by the KL divergence of the first answer token's distribution when the head attends uniformly (its query scaled by 1e-5); Sahara grows a group of heads that moves the last-token representations the most. The causal check is the attack success rate (ASR) with heads removed."),
    ("code", SETUP),
    ("code", '''from workbench.organisms.datasets import load_probes
from workbench.analysis.safety import SafetyConfig, ships_scores, sahara_search, asr
from workbench.analysis.refusal import RefusalJudge

harmful = [torch.tensor(p.prompt) for p in load_probes("refusal-harmful-test")[::4]]
cfg = SafetyConfig(max_new_tokens=8, judge=RefusalJudge(min_chars=8))
ships = ships_scores(model, harmful, cfg)          # [queries, layers, heads]
mean = ships.mean(0)
print("top dataset-level Ships heads:", np.dstack(np.unravel_index(np.argsort(-mean, axis=None)[:3], mean.shape))[0].tolist())'''),
    ("code", '''from workbench.report.figures import head_heatmap
head_heatmap(mean.tolist(), "Ships (mean KL)", "KL").show()
base = asr(model, harmful, [], cfg)
flat = ships.reshape(len(harmful), -1)
own_top = [[geo.all_heads()[i]] for i in flat.argmax(1)]
top = asr(model, harmful, own_top, cfg)
print(f"ASR base {base.asr:.2f}; each query's top Ships head ablated {top.asr:.2f}")
assert top.asr > base.asr'''),
    ("code", '''group = sahara_search(model, harmful, SafetyConfig(max_group=3)).group
print("Sahara group:", [str(h) for h in group], "ASR:", asr(model, harmful, group, cfg).asr)'''),
    ("code", REAL_MODEL + '''
# for a chat model: from workbench.data.prompts import load_prompts, apply_template
# texts = apply_template(load_prompts("harmful.jsonl"), model.tokenizer, "chat")'''),
]

nbs["04_temporal"] = [
    ("md", "# Temporal predictability\n\nTAPPA's q-similarity measures how stable a head's queries are over a window; stable queries make predictable patterns. We classify each head as re-access (vertical lines), sequential (a fixed offset), seasonal (stripes every P tokens) or unpredictable, look at a head as a linear filter (Bode plot of its attention-by-offset), and use q-similarity to set per-layer KV budgets."),
    ("code", SETUP),
    ("code", '''from workbench.organisms import tasks
from workbench.analysis.temporal import analyze_temporal, transfer_function, period_channel

rng = np.random.default_rng(2)
text = [torch.tensor(tasks.filler_doc(rng, 256).ids).view(1, -1) for _ in range(4)]
report = analyze_temporal(model, text)
periodic = []
for _ in range(4):
    ids, _ = tasks.periodic_block(rng, 127)
    periodic.append(torch.tensor(np.concatenate([[geo.bos.token_id], ids])).view(1, -1))
per = analyze_temporal(model, periodic)
for (l, h), lab in sorted(per.labels.items()):
    if lab.label != "unpredictable":
        print(f"L{l}H{h}: {lab.label:12s} conf {lab.confidence:.2f} offset {lab.offset} period {lab.period} {period_channel(per, (l, h))}")'''),
    ("code", '''import plotly.graph_objects as go
(l, h) = max(per.labels, key=lambda k: per.scores["seasonal_share"][k])
omega, mag, phase = transfer_function(per.profiles[l, h])
fig = go.Figure([go.Scatter(x=omega / np.pi, y=mag, name="|H| dB")])
fig.update_layout(title=f"L{l}H{h} as a filter", xaxis_title="frequency / pi", xaxis_type="log").show()
assert any(lab.label == "seasonal" and lab.period == 7 for lab in per.labels.values())'''),
    ("code", '''print("layer q-similarity (pre-RoPE):", np.round(report.layer_q_sim, 3))'''),
    ("code", REAL_MODEL),
]

nbs["05_long_context"] = [
    ("md", "# Long context: recording at 8k tokens\n\nTransformerLens builds every head's N x N pattern; at 8k tokens that is 256 MiB per head in float32. The recorder replaces the attention block with an instrumented kernel (Triton on GPU, a chunked torch path on CPU) that returns per-head statistics in O(N) memory. Here we record 8192 tokens and compare peak memory with eager recording on a shorter prompt."),
    ("code", SETUP),
    ("code", '''import resource, time
from workbench.record import record_attention
from workbench.organisms.tasks import filler_doc

rng = np.random.default_rng(3)
tokens = torch.tensor(filler_doc(rng, 8192).ids).view(1, -1)
t0 = time.perf_counter()
logits, record = record_attention(model, tokens, backend="torch", chunk=256)
print(f"recorded {record.n_tokens} tokens in {time.perf_counter() - t0:.1f} s")
stats = record.layers[0]
print("per-head statistics:", {k: tuple(getattr(stats, k).shape) for k in ("lse", "entropy", "argmax", "col_sum", "pooled")})
assert record.n_tokens == 8192'''),
    ("code", '''import plotly.express as px
pooled = record.layers[1].pooled[0, 0]   # block-pooled map of L1H0 (64 x 64 blocks)
px.imshow((pooled / pooled.sum(-1, keepdim=True)).log10().numpy(), title="L1H0, block-pooled attention (log10)").show()'''),
    ("code", '''from torch.utils._python_dispatch import TorchDispatchMode

class Largest(TorchDispatchMode):
    def __init__(self):
        super().__init__(); self.n = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor): self.n = max(self.n, t.numel())
        return out

short = tokens[:, :2048]
with torch.no_grad(), Largest() as eager:
    model.bridge.run_with_cache(short, names_filter=lambda n: n.endswith("hook_pattern"))
with torch.no_grad(), Largest() as rec:
    record_attention(model, short, backend="torch")
print(f"largest tensor at 2k tokens: eager {eager.n * 4 / 2**20:.0f} MiB, recorder {rec.n * 4 / 2**20:.1f} MiB")
assert rec.n < 2048 * 2048 <= eager.n'''),
]

for name, cells in nbs.items():
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    nbformat.write(nb, f"{out}/{name}.ipynb")
print("wrote", list(nbs))
