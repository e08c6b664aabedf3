"""Write the worked-example notebooks (outputs empty) from the cell lists in this file.

    python notebooks/build_notebooks.py           # rewrite notebooks/*.ipynb
    python notebooks/build_notebooks.py --check   # exit 1 when a notebook differs from this file

Edit the cells here, not in the .ipynb files: tests/notebooks/test_notebooks.py checks that the
committed notebooks are exactly what this file builds, that their outputs are stripped, and executes
every notebook top to bottom on the shipped organism (CPU, small sizes, assertions in the cells).
Cell ids are fixed (``<notebook>-<index>``) so that a rebuild gives identical files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# -- shared cells -----------------------------------------------------------------------------------

SETUP = '''import json
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: models come from the package or the local cache
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice in kernels without ipywidgets

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch

from workbench.models import DEFAULT_MODEL, Head, load_model, parse_head
from workbench.organisms.ground_truth import important_heads

pio.renderers.default = "plotly_mimetype+notebook"  # interactive in Jupyter, and kept in exported HTML (plotly.js inlined once)
torch.manual_seed(0)
model = load_model(DEFAULT_MODEL, device="cpu")
geo = model.geometry
print(f"{model.name}: {geo.n_layers} layers x {geo.n_heads} query heads ({geo.n_kv_heads} KV heads), {geo.positional.describe()}")

# The organism's ground truth (MODEL_CARD.md): held-out metrics with each single head ablated.
ground_truth = json.loads((model.source.path / "ground_truth.json").read_text())


def gt_heads(task, modes=("mean", "uniform"), min_drop=0.2):
    """Heads whose single ablation moves `task` by at least `min_drop` in any of `modes`."""
    return {parse_head(name) for mode in modes for name, _ in important_heads(ground_truth, mode, min_drop)[task]}'''

OTHER_MODEL = """# Another model: a Hugging Face id already in the local cache (nothing is downloaded while
# HF_HUB_OFFLINE=1) or a local folder, named in WB_REAL_MODEL. Without one, this cell runs the same
# calls on a small random Llama written to a temporary folder, so the path stays tested (its numbers mean nothing).
import tempfile
from pathlib import Path

from workbench.families import RunContext
from workbench.models.tiny import build_tiny_model

spec = os.environ.get("WB_REAL_MODEL")
with tempfile.TemporaryDirectory() as tmp:
    other = load_model(spec or build_tiny_model(Path(tmp) / "tiny-llama", "llama"), device="cuda" if torch.cuda.is_available() else "cpu")
print("now analysing", other.name if spec else "a random tiny Llama", "-", other.geometry.n_layers, "layers x", other.geometry.n_heads, "heads")
# The atlas's prompt rules: organism text for shipped organisms, otherwise random vocabulary tokens;
# RunContext(prompts=["your text", ...]) uses your own texts instead.
ctx = RunContext(seed=0, max_tokens=128, n_prompts=4)"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

# -- 00 quickstart -------------------------------------------------------------------------------------

NOTEBOOKS["00_quickstart"] = [
    (
        "md",
        """# Quickstart: the head atlas of the shipped organism

`organism-4l` is a 4-layer Llama (8 query heads and 4 KV heads per layer) trained in this project on a synthetic
curriculum that plants one behaviour per analysis family: needle retrieval and induction, refusal of harmful
requests, periodic text. Its model card (`workbench/organisms/shipped/organism-4l/MODEL_CARD.md`) lists the heads
each behaviour needs, measured by ablating every head on held-out probes (`ground_truth.json`). That makes it a test
bench: an analysis that works should point at those heads.

This notebook loads the model, runs the atlas (all four families) into a results store with the Python API
(`workbench.Atlas`), draws each family's layer x head heatmaps, checks the atlas against the ground truth, and opens one head. The sizes are small so that it
runs on one CPU core in well under a minute.""",
    ),
    ("code", SETUP),
    (
        "md",
        """## Run the atlas

`workbench.Atlas` is the Python API of the atlas; `.run()` is the same run `workbench atlas` does (the command builds
this object from its options). From a shell: `workbench atlas organism-4l --n-prompts 4 --max-tokens 128 --set
sinks.act=false` (ACT's head search, a separate sinks part, is left out to keep this short). The run is written to the
results folder (`$WORKBENCH_RESULTS`, default `./wb-results`; `store=` names another): a SQLite store that
`workbench report`, the dashboard (`workbench app`) and later sessions read. `result.table(family)` has one row per
head and one column per metric; here the heads with the highest retrieval score.""",
    ),
    (
        "code",
        """from workbench import Atlas

result = Atlas("organism-4l", n_prompts=4, max_tokens=128, options={"sinks": {"act": False}}).run()
result.table("retrieval").sort_values("retrieval_score", ascending=False).head()""",
    ),
    (
        "md",
        """The run as the store records it: its status, and per family the parts and the heads it claims
(`result.members(family)`).""",
    ),
    (
        "code",
        """from workbench.store import Store

run = result.info()
with Store.open(result.root) as store:
    families = store.families(result.run_id)
print(run.run_id, run.status, f"{run.parts_done}/{run.parts_total} parts")
for fam in families:
    seconds = sum(p["seconds"] or 0 for p in fam.parts)
    print(f"  {fam.family:10s} {fam.status:5s} {seconds:5.1f} s   primary metric {fam.primary_metric:17s} claims {len(result.members(fam.family))} heads")
assert run.status == "complete" and run.parts_done == run.parts_total
assert [fam.family for fam in families] == result.families == ["sinks", "retrieval", "safety", "temporal"]""",
    ),
    (
        "md",
        """## Every family is a layer x head table

`result.scores()` is the whole atlas as one long table: one row per family, metric and head (`layer`, `head`,
`head_name`, `value`). One metric pivoted to layers x heads is what `workbench.report.figures.head_heatmap` draws; the
figures are plotly, interactive in Jupyter and kept in exported HTML (`jupyter nbconvert --to html`).""",
    ),
    (
        "code",
        """from workbench.report.figures import head_heatmap

scores = result.scores()
print(len(scores), "scores;", scores.groupby("family").metric.nunique().to_dict(), "metrics per family")
for fam in families:
    one = scores[(scores.family == fam.family) & (scores.metric == fam.primary_metric)]
    grid = one.pivot(index="layer", columns="head", values="value").to_numpy()
    assert grid.shape == (geo.n_layers, geo.n_heads) and np.isfinite(grid).all(), fam.family
    head_heatmap(grid.tolist(), f"{fam.family}: {fam.primary_metric}", fam.primary_metric).show()""",
    ),
    (
        "md",
        """## Check the atlas against the ground truth

The retrieval family claims the heads whose retrieval score (Wu et al. 2024) exceeds 0.1. The ground truth lists
the heads whose single ablation breaks the needle task. Attention alone does not prove a head is needed, so the two
lists need not be equal, but a retrieval analysis that works must find at least one head that really is.""",
    ),
    (
        "code",
        '''claimed = {parse_head(name) for name in result.members("retrieval")}
needle_heads = gt_heads("needle-512")
print("needle accuracy in the atlas run:", result.summary("retrieval")["needle_accuracy"])
print("retrieval heads claimed by the atlas:", sorted(map(str, claimed)))
print("heads the needle task needs (ground truth):", sorted(map(str, needle_heads)))
assert claimed & needle_heads, "no claimed retrieval head is causally needed for the needle task"''',
    ),
    (
        "md",
        """## Open a head

The claimed retrieval head that the ground truth confirms: its score in every family, then its attention on a fresh
needle prompt. `record_attention(..., backend="eager", keep_patterns=True)` keeps the full N x N pattern, which is
fine at a few hundred tokens (the default backends never build it). At the last prompt token (`recall <key>`) the
model must produce the first value of the pair, so a retrieval head should look exactly there.""",
    ),
    (
        "code",
        """retrieval_score = scores[(scores.family == "retrieval") & (scores.metric == "retrieval_score")].set_index("head_name")["value"]
head = max(claimed & needle_heads, key=lambda h: retrieval_score[str(h)])
print(f"{head}:")
for row in scores[scores.head_name == str(head)].itertuples():
    print(f"  {row.family:10s} {row.metric:26s} {row.value:9.4f}")""",
    ),
    (
        "code",
        """from workbench.data.needles import from_organism_probes
from workbench.organisms import tasks
from workbench.record import record_attention

trial = from_organism_probes([tasks.needle_probe(np.random.default_rng(7), 128, 3)])[0]
_, rec = record_attention(model, trial.prompt.view(1, -1), backend="eager", keep_patterns=True, layers=(head.layer,))
last_row = rec.patterns[head.layer][0, head.head, -1]  # attention of the last prompt token over all keys
start, end = trial.answer_span
words = model.to_str_tokens(trial.prompt)
fig = go.Figure(go.Bar(y=last_row.tolist(), hovertext=words, marker_color=["#e45756" if start <= j < end else "#4c78a8" for j in range(len(words))]))
fig.update_layout(title=f"{head}: attention from the last prompt token (red: the answer in the context)", xaxis_title="key position", yaxis_title="attention", height=320)
fig.show()
looked_at = int(last_row.argmax())
print(f"prompt ends with {' '.join(words[-3:])!r}; answer {model.tokenizer.decode(trial.answer.tolist())!r} at positions {start}..{end - 1}; {head} looks at {looked_at} ({words[looked_at]!r})")
assert start <= looked_at < end""",
    ),
    (
        "md",
        """## A report to share

`write_report` is what `workbench report RUN` calls: one self-contained HTML file (plotly inlined, opens offline)
and a JSON summary, written into the run's folder.""",
    ),
    (
        "code",
        """from workbench.report.html import write_report

with Store.open(result.root) as store:
    html_path, json_path = write_report(store, result.run_id)
print(html_path, f"{html_path.stat().st_size / 1e6:.1f} MB")
assert html_path.is_file() and json.loads(json_path.read_text())["run"]["run_id"] == result.run_id""",
    ),
]

# -- 01 sinks ------------------------------------------------------------------------------------------

NOTEBOOKS["01_sinks"] = [
    (
        "md",
        """# Attention sinks

A sink head parks attention on a few tokens that carry little meaning. Per head we measure:

* **first-token mass** alpha_1: the mean attention on the first token over all queries (Gu et al. 2024; a head with
  alpha_1 > 0.3 is a sink head, and the *sink rate* is the share of such heads);
* **hidden sinks**: later keys whose mean received attention exceeds 0.1 (ACT, Yu et al. 2024), and the share of a
  head's attention that lands on all its sink tokens;
* **massive activations**: residual entries far above their layer's median (Sun et al. 2024).

Everything comes from the recorder's per-head statistics, so no N x N pattern is built. The causal check removes
the sink tokens from the view of the strongest sink heads (their attention renormalised over the other keys) and
compares the loss change with the weakest heads.""",
    ),
    ("code", SETUP),
    (
        "code",
        """from workbench.analysis.sinks import SinkConfig, analyze_sinks
from workbench.organisms.tasks import filler_doc

rng = np.random.default_rng(0)
prompts = [torch.tensor(filler_doc(rng, 256).ids).view(1, -1) for _ in range(4)]  # organism text, 256 tokens each
report = analyze_sinks(model, prompts, SinkConfig())
print(f"sink rate (alpha_1 > {report.config.eps}): {report.sink_rate:.1f}% of heads; per layer {np.round(report.sink_rate_per_layer, 1)}")
print("largest first-token mass:", [(str(h), round(v, 3)) for h, v in report.scores.ranked("first_token_mass")[:4]])
print("largest share on sink tokens:", [(str(h), round(v, 3)) for h, v in report.scores.ranked("sink_attention_share")[:4]])""",
    ),
    (
        "md",
        """## The recorder's numbers are the pattern's numbers

`analyze_sinks` reads the recorder's first-token mass and per-key attention received. On one prompt we compute both
from the full eager pattern instead (mean of column 0 over the queries; column sums divided by the number of
queries that see each key) and require agreement within 1e-5.""",
    ),
    (
        "code",
        """from workbench.analysis.sinks import first_token_mass, mean_received
from workbench.record import record_attention

tokens = prompts[0]
_, fast = record_attention(model, tokens, backend="torch")                   # O(N) statistics
_, eager = record_attention(model, tokens, backend="eager", keep_patterns=True)  # the full [B, H, N, N] patterns
n = tokens.shape[1]
seen_by = torch.arange(n, 0, -1, dtype=torch.float64)  # key j is seen by the n - j queries i >= j
alpha_err = received_err = 0.0
for layer in range(geo.n_layers):
    pattern = eager.patterns[layer][0].double()  # [H, N, N]
    alpha_err = max(alpha_err, float((torch.from_numpy(first_token_mass(fast)[0, layer]) - pattern[:, :, 0].mean(-1)).abs().max()))
    received_err = max(received_err, float((torch.from_numpy(mean_received(fast)[0, layer]) - pattern.sum(-2) / seen_by).abs().max()))
print(f"max |recorder - eager|: first-token mass {alpha_err:.2e}, mean attention received {received_err:.2e}")
assert alpha_err < 1e-5 and received_err < 1e-5""",
    ),
    (
        "md",
        """## Where the attention parks

The heatmaps show the first-token mass and the share of attention on all sink tokens. The bar chart counts which
tokens are sinks (for at least one head) most often.""",
    ),
    (
        "code",
        """from workbench.report.figures import head_heatmap, token_bar

head_heatmap(report.scores["first_token_mass"].tolist(), "first-token attention mass (alpha_1)", "alpha_1").show()
head_heatmap(report.scores["sink_attention_share"].tolist(), "share of attention on sink tokens (first + hidden)", "share").show()
rows = sorted(({"token": tok, "times_sink": s, "times_seen": n, "rate": s / n} for tok, (s, n) in report.token_sink_frequency.items() if s),
              key=lambda r: -r["times_sink"])
token_bar(rows, "tokens that are sinks most often").show()
hidden = report.hidden_sinks()
print(len(hidden), "hidden sink (head, position) pairs; heads with the most:",
      sorted(((int(report.scores.score("hidden_sink_count", h)), str(h)) for h in geo.all_heads()), reverse=True)[:4])
assert rows and all(0 <= r["times_sink"] <= r["times_seen"] for r in rows)""",
    ),
    (
        "md",
        """## Massive activations

Sun et al. find residual entries of magnitude >= 100 and >= 1000x the layer's median at sink positions in large
models. The printout shows whether the small organism has any: the top magnitude per layer against the median.""",
    ),
    (
        "code",
        """from workbench.analysis.sinks import massive_activations, overlap_with_sinks

massive = massive_activations(model, prompts[0])
for layer in range(geo.n_layers):
    print(f"layer {layer}: top |h| {massive.top_values[layer, 0]:8.1f}, median {massive.medians[layer]:.3f}, ratio {massive.top_values[layer, 0] / massive.medians[layer]:6.0f}")
print(len(massive.massive), "massive activations; share at sink positions:", overlap_with_sinks(massive, report))""",
    ),
    (
        "md",
        """## Causal check

`sink_removal_check` removes each chosen head's own sink tokens (first and hidden, as found per prompt) and
renormalises its attention; `first_token_removal_check` removes only the first token. Both compare the 3 heads that
rank highest with the 3 that rank lowest. If the ranking means anything, the top heads' loss change must be clearly
larger. On this organism nothing is clearly larger: it has no first-token sink heads, and its hidden sink tokens carry
so little that removing them moves the loss by well under 1% for every head (the model card's planting phase left it
so; the test suite shows the check separating heads on a tiny model with a planted sink,
`tests/analysis/test_sinks.py`). The cell asserts what holds here, so it fails if the organism changes.""",
    ),
    (
        "code",
        """from workbench.analysis.sinks import first_token_removal_check, sink_removal_check

for name, check in (("sink tokens", sink_removal_check(model, report, prompts, k=3)),
                    ("first token", first_token_removal_check(model, report, prompts, k=3))):
    print(f"remove {name}: base loss {check.base_loss:.4f}; top {[str(h) for h in check.top_heads]} {check.top_delta:+.4f}; "
          f"bottom {[str(h) for h in check.bottom_heads]} {check.bottom_delta:+.4f}")
    assert abs(check.top_delta) < 0.01 * check.base_loss and abs(check.bottom_delta) < 0.01 * check.base_loss, name""",
    ),
    (
        "md",
        """## ACT calibration

ACT (Yu et al. 2024) scales down the attention on hidden sinks (beta = 0.4) in chosen heads and keeps a head when
that improves a calibration metric. Here the metric is the log-probability of the needle answer, the candidates are
the 6 heads with the most hidden-sink mass, and the kept heads are evaluated on held-out needles.""",
    ),
    (
        "code",
        """from workbench.analysis.retrieval import answer_logprob
from workbench.analysis.sinks import act_head_search
from workbench.data.needles import from_organism_probes
from workbench.organisms import tasks

cal = from_organism_probes(tasks.needle_probe(np.random.default_rng(11), 256, 3) for _ in range(8))
held = from_organism_probes(tasks.needle_probe(np.random.default_rng(12), 256, 3) for _ in range(8))
candidates = report.scores.top("hidden_sink_mass", 6)
act = act_head_search(model, lambda: answer_logprob(model, cal), lambda: answer_logprob(model, held), candidates)
print("gain per candidate:", {str(h): round(g, 4) for h, g in act.single_head_gain.items()})
print(f"kept {[str(h) for h in act.selected]}: calibration {act.calibration_before:.4f} -> {act.calibration_after:.4f}, "
      f"held-out {act.evaluation_before:.4f} -> {act.evaluation_after:.4f}")
print("ground-truth needle heads among the candidates:", sorted(str(h) for h in candidates if h in gt_heads("needle-512")))
assert all(act.single_head_gain[h] > 0 for h in act.selected)
assert act.calibration_after >= act.calibration_before""",
    ),
    (
        "md",
        """ACT assumes that attention on hidden sinks is wasted, and keeps a head only when scaling its sink attention
improves the calibration metric; the held-out column says whether that gain transfers. On this organism every gain
is a few thousandths of a nat or less, as the causal check above predicts: its hidden sinks carry little. A sink
score alone does not tell wasted attention from useful attention; the calibration check does.""",
    ),
    ("md", """## The same code on another model"""),
    (
        "code",
        OTHER_MODEL
        + """

from workbench.families.prompts import family_prompts

other_prompts, source = family_prompts(other, ctx, "sinks")
other_report = analyze_sinks(other, other_prompts)
print(f"{len(other_prompts)} prompts ({source}); sink rate {other_report.sink_rate:.1f}%")
head_heatmap(other_report.scores["first_token_mass"].tolist(), "first-token attention mass", "alpha_1").show()
assert other_report.scores["first_token_mass"].shape == (other.geometry.n_layers, other.geometry.n_heads)""",
    ),
]

# -- 02 retrieval --------------------------------------------------------------------------------------

NOTEBOOKS["02_retrieval"] = [
    (
        "md",
        """# Retrieval heads

The organism stores key/value pairs in filler text (`remember <city> <n1> <n2> .`) and is asked `recall <city>` at
the end, with three distractor pairs in the same context. The **retrieval score** of Wu et al. (2024) counts, while
the model generates the answer, how often a head's top-1 attention lands on the context token it is copying; a head
scoring above 0.1 is a retrieval head. **Echo** and **induction** scores (RazorAttention) come from a random segment
repeated four times, and the TransformerLens-style detectors score previous-token and duplicate-token heads.

Then the causal checks: ablate heads (uniform attention: the query scaled by 1e-5) and measure needle accuracy;
compare the ranked heads with random ones; and simulate a KV cache in which only the top heads keep every token
while the others keep 4 sink tokens and a recent window of 32.""",
    ),
    ("code", SETUP),
    (
        "code",
        '''from workbench.analysis.retrieval import retrieval_scores
from workbench.data.needles import from_organism_probes
from workbench.organisms import tasks

rng = np.random.default_rng(1)
trials = from_organism_probes(tasks.needle_probe(rng, 256, 3) for _ in range(12))  # 256 tokens, 3 distractors
t = trials[0]
print("...", model.tokenizer.decode(t.prompt[-12:].tolist()), "->", model.tokenizer.decode(t.answer.tolist()),
      f"(the pair is at positions {t.answer_span[0] - 2}..{t.answer_span[1]})")
report = retrieval_scores(model, trials)
print(f"needle accuracy {report.accuracy:.2f}; {report.n_counted}/{len(trials)} trials recalled and counted")
print("retrieval heads (score > 0.1):", [(str(h), round(report.scores.score("retrieval_score", h), 3)) for h in report.retrieval_heads()])
needle_heads = gt_heads("needle-512")
print("heads the needle task needs (ground truth):", sorted(map(str, needle_heads)))
assert report.accuracy >= 0.9, "the organism should solve its own needle task"
assert set(report.retrieval_heads()) & needle_heads, "no retrieval head is among the ground-truth needle heads"''',
    ),
    (
        "code",
        """from workbench.analysis.retrieval import detector_scores, echo_induction_scores, repeated_random_tokens
from workbench.report.figures import head_heatmap

special = set(model.tokenizer.all_special_ids)
probe = repeated_random_tokens([i for i in range(geo.vocab_size) if i not in special], 64, 4, geo.bos.token_id, seed=0)
razor = echo_induction_scores(model, probe, 64)
detect = detector_scores(model, probe)
head_heatmap(report.scores["retrieval_score"].tolist(), "retrieval score (Wu et al.)", "score").show()
head_heatmap(razor["razor_induction_score"].tolist(), "induction score (RazorAttention)", "score").show()
head_heatmap(detect["previous_token_score"].tolist(), "previous-token score (TransformerLens detector)", "score").show()
top_induction = razor.top("razor_induction_score", 1)[0]
print("strongest induction head:", top_induction, "- ground-truth induction heads:", sorted(map(str, gt_heads("induction"))))
print("strongest previous-token heads:", detect.top("previous_token_score", 3))
assert top_induction in gt_heads("induction")""",
    ),
    (
        "md",
        """## Which retrieval heads are needed?

Several heads look at the needle (a retrieval score of 1 means every copied token was each head's top-1 key), but
attention is not use: ablate each retrieval head alone and compare with the ground-truth table (uniform ablation,
needle-512).""",
    ),
    (
        "code",
        """from workbench.analysis.retrieval import needle_accuracy
from workbench.interventions.ablation import ablate_heads

single = {}
for head in report.retrieval_heads():
    with ablate_heads(model, [head], mode="uniform"):
        single[head] = needle_accuracy(model, trials)
    print(f"{head}: retrieval score {report.scores.score('retrieval_score', head):.3f}, accuracy ablated {single[head]:.2f} "
          f"(ground truth {ground_truth['modes']['uniform']['heads'][str(head)]['needle-512']:.2f})")
needed = min(single, key=single.get)
assert report.accuracy - single[needed] >= 0.5 and needed in needle_heads""",
    ),
    (
        "md",
        """## Ranked heads against random heads

The retrieval score saturates at 1 for several heads, so the ranking breaks ties by the induction score (both are
RazorAttention's retrieval-head criteria). `top_vs_random_ablation` ablates all the retrieval heads together and,
for comparison, random sets of as many other heads.""",
    ),
    (
        "code",
        '''from workbench.analysis.retrieval import top_vs_random_ablation

ranking = sorted(geo.all_heads(), key=lambda h: (-report.scores.score("retrieval_score", h), -razor.score("razor_induction_score", h)))
cmp = top_vs_random_ablation(model, trials, ranking, k=len(report.retrieval_heads()), n_random=4, mode="uniform", seed=0)
print(f"base {cmp.base_accuracy:.2f}; top {cmp.k} {[str(h) for h in cmp.top_heads]} ablated: {cmp.top_accuracy:.2f}")
for heads, acc in zip(cmp.random_heads, cmp.random_accuracies):
    print(f"  random {[str(h) for h in heads]} ablated: {acc:.2f}")
assert cmp.top_accuracy <= cmp.random_mean - 0.3, "the ranked heads should matter much more than random ones"''',
    ),
    (
        "md",
        """## A KV cache that keeps only the top heads whole

Retrieval-score head selection with a DuoAttention-style mask: the top fraction of *KV heads* (ranked by their best
query head) keeps the full cache, with every query head it serves; every other KV head keeps the first 4 tokens and the
last 32. The cache share is the fraction of the full KV cache that is kept, counted per KV head.""",
    ),
    (
        "code",
        """from workbench.analysis.retrieval import kv_budget_curve
from workbench.interventions.kv_budget import kv_ranking_from_heads

kv_ranking = kv_ranking_from_heads(ranking, geo)
curve = kv_budget_curve(model, trials, kv_ranking, [1 / 16, 1 / 8, 1 / 4], sink=4, recent=32, n_random=2, seed=0)
fig = go.Figure([go.Scatter(x=curve.cache_share, y=curve.ranked_accuracy, name="top heads keep the full cache", mode="lines+markers"),
                 go.Scatter(x=curve.cache_share, y=curve.random_accuracy, name="random heads keep the full cache", mode="lines+markers")])
fig.update_layout(title="needle accuracy under a simulated KV budget", xaxis_title="share of the KV cache kept", yaxis_title="accuracy", height=360)
fig.show()
for f, s, a, r in zip(curve.fractions, curve.cache_share, curve.ranked_accuracy, curve.random_accuracy):
    print(f"{f:6.1%} of KV heads whole ({s:.0%} of the cache): ranked {a:.2f}, random {r:.2f}")
assert all(a >= r for a, r in zip(curve.ranked_accuracy, curve.random_accuracy))
assert max(a - r for a, r in zip(curve.ranked_accuracy, curve.random_accuracy)) >= 0.5""",
    ),
    (
        "md",
        """## The same code on another model

For a model that is not an organism, `needle_trials` builds text needles (`The secret code is NNNN .` inserted at
several depths of a haystack, the question appended), as the atlas does.""",
    ),
    (
        "code",
        OTHER_MODEL
        + """

from workbench.families.retrieval import RetrievalFamilyConfig, needle_trials

other_trials, source = needle_trials(other, ctx, RetrievalFamilyConfig(context=128))
other_report = retrieval_scores(other, other_trials)
print(f"{len(other_trials)} trials ({source}); accuracy {other_report.accuracy:.2f}; retrieval heads {other_report.retrieval_heads()}")
assert other_report.scores["copy_rate"].shape == (other.geometry.n_layers, other.geometry.n_heads)""",
    ),
]

# -- 03 safety -----------------------------------------------------------------------------------------

NOTEBOOKS["03_safety"] = [
    (
        "md",
        """# Safety heads

The organism answers `user : <request> assistant :` with `i cannot help with that .` when the requested noun is
harmful and `sure , here it is .` when it is benign; the held-out test nouns never appeared in a training request.

* **Ships** (Zhou et al., ICLR 2025) scores a head by the KL divergence of the next-token distribution at the last
  prompt token when the head attends uniformly (its query scaled by 1e-5).
* **Sahara** grows a group of heads whose ablation rotates the last-token representations the most.
* The causal check is the **attack success rate** (ASR): the share of harmful requests answered (judged by
  `RefusalJudge`) with heads ablated; and, for the exact refusal phrase, the teacher-forced refusal rate that the
  ground-truth table uses.""",
    ),
    ("code", SETUP),
    (
        "code",
        """from workbench.analysis.refusal import RefusalJudge
from workbench.analysis.safety import SafetyConfig, asr
from workbench.organisms.datasets import load_probes

pick = np.random.default_rng(0)  # 24 of the 120 held-out requests of each kind, every request template represented
harmful_probes = [load_probes("refusal-harmful-test")[i] for i in sorted(pick.permutation(120)[:24])]
benign_probes = [load_probes("refusal-benign-test")[i] for i in sorted(pick.permutation(120)[:24])]
harmful = [torch.tensor(p.prompt) for p in harmful_probes]
benign = [torch.tensor(p.prompt) for p in benign_probes]
cfg = SafetyConfig(max_new_tokens=8, judge=RefusalJudge(min_chars=8))  # short answers: 8 characters are enough
base = asr(model, harmful, [], cfg)
comply = asr(model, benign, [], cfg)
print(model.tokenizer.decode(harmful[0].tolist()), "->", base.responses[0])
print(model.tokenizer.decode(benign[0].tolist()), "->", comply.responses[0])
print(f"ASR on harmful requests {base.asr:.2f}; benign requests answered {comply.asr:.2f}")
assert base.asr <= 0.1 and comply.asr >= 0.9""",
    ),
    (
        "code",
        """from workbench.analysis.safety import analyze_safety
from workbench.report.figures import head_heatmap

safety = analyze_safety(model, harmful, cfg)  # Ships for every (request, head), then Sahara's greedy group of 3
head_heatmap(safety.scores["ships_mean"].tolist(), "Ships at the last prompt token (mean KL)", "KL").show()
print("top Ships heads:", [(str(h), f"{v:.2e}") for h, v in safety.scores.ranked("ships_mean")[:3]])
own_top = [[h] for h in safety.top_heads_per_query()]
ships_asr = asr(model, harmful, own_top, cfg)
sahara_asr = asr(model, harmful, safety.sahara.group, cfg)
print(f"ASR with each request's own top Ships head ablated: {ships_asr.asr:.2f} ({ships_asr.responses[0]!r})")
print(f"Sahara group {[str(h) for h in safety.sahara.group]} ablated: ASR {sahara_asr.asr:.2f}")
assert ships_asr.asr >= 0.5""",
    ),
    (
        "md",
        """## Against the planted head

The organism's last training phase planted one safety head (its model card and `training.json` name it; the
analysis above was not told). Ships should rank it first, and ablating it should flip the decision itself: the
teacher-forced exact refusal phrase (the ground-truth table's metric) should disappear with it ablated and stay with
random single heads ablated. Sahara is shown for comparison: its score is the principal angle between the leading
left singular vectors of the stacked last-token representations, which a shift shared by all requests (every
refusal turning into the same compliance) hardly rotates, so on this organism it need not rank the planted head
first.""",
    ),
    (
        "code",
        """import random

from workbench.interventions.ablation import ablate_heads
from workbench.organisms.evaluate import bridge_logits_fn, evaluate_probes

planted = parse_head(json.loads((model.source.path / "training.json").read_text())["safety_planting"]["head"])
print("planted:", planted, "- top Ships head:", safety.scores.top("ships_mean", 1)[0],
      "- ground-truth refusal heads:", sorted(map(str, gt_heads("refusal-harmful-test"))))
assert safety.scores.top("ships_mean", 1)[0] == planted and planted in gt_heads("refusal-harmful-test")


def refusal_rate(heads):
    with ablate_heads(model, heads, mode="uniform"):
        return evaluate_probes(bridge_logits_fn(model), {"refusal-harmful-test": harmful_probes})["refusal-harmful-test"]["refusal_rate"]


controls = random.Random(0).sample([h for h in geo.all_heads() if h != planted], 5)
rates = {str(h): refusal_rate([h]) for h in [planted, *controls]}
print(f"exact refusal phrase: base {refusal_rate([]):.2f}; one head ablated:", rates)
assert rates[str(planted)] <= 0.1 and min(rates[str(h)] for h in controls) >= 0.9""",
    ),
    (
        "md",
        """## The same code on another model

For a chat model, give harmful requests in a file (`WB_HARMFUL_PROMPTS`: JSONL, CSV or TXT) and use the chat
template; without a file the cell reuses the organism's requests as text.""",
    ),
    (
        "code",
        OTHER_MODEL
        + """

from workbench.data.prompts import apply_template, load_prompts
from workbench.organisms.datasets import probe_texts

harmful_file = os.environ.get("WB_HARMFUL_PROMPTS")
texts = (load_prompts(harmful_file) if harmful_file else probe_texts("refusal-harmful-test"))[:8]
template = "chat" if getattr(other.tokenizer, "chat_template", None) else "raw"
other_prompts = [other.to_tokens(t)[0].cpu() for t in apply_template(texts, other.tokenizer, template)]
other_safety = analyze_safety(other, other_prompts, SafetyConfig(max_new_tokens=16), run_sahara=False)
print("top Ships heads:", other_safety.scores.top("ships_mean", 3))
assert other_safety.ships.shape == (len(other_prompts), other.geometry.n_layers, other.geometry.n_heads)""",
    ),
]

# -- 04 temporal ---------------------------------------------------------------------------------------

NOTEBOOKS["04_temporal"] = [
    (
        "md",
        """# Temporal predictability

TAPPA's **q-similarity** is the mean cosine between a head's queries: stable queries draw predictable patterns.
`q_sim_prune` is TAPPA's pruning-path version (pre-RoPE, whole chunks of up to 1024 tokens), `q_sim_pre_windowed`
the same inside windows of 32 positions, `q_sim_post` after RoPE (its KV-cache path). From the recorder's statistics and the attention-by-offset profile h[d] (the mean
attention from each position to the one d tokens back) every head gets a class: **re-access** (vertical lines: a few
keys take the mass), **sequential** (one offset takes it: previous-token, induction), **seasonal** (stripes every P
tokens) or **unpredictable**. The profile is also a linear filter, H(w) = sum_d h[d] exp(-i w d), whose Bode plot
shows what a head does to a sequence.

The organism saw periodic text in training: `rhythm` and a 7-word motif over 6 rhythm words, repeated. The next word
is predictable only by looking one period back, so some heads must attend 6 tokens back (the word after the current
word's previous occurrence).""",
    ),
    ("code", SETUP),
    (
        "code",
        """from workbench.analysis.temporal import CLASSES, analyze_temporal
from workbench.organisms import tasks
from workbench.organisms.vocab import RHYTHM_PERIOD

rng = np.random.default_rng(2)
text = [torch.tensor(tasks.filler_doc(rng, 256).ids).view(1, -1) for _ in range(4)]
periodic = []
for _ in range(4):
    ids, _ = tasks.periodic_block(rng, 127)
    periodic.append(torch.tensor(np.concatenate([[geo.bos.token_id], ids])).view(1, -1))
print(" ".join(model.to_str_tokens(periodic[0][0, :22])), "...")
on_text = analyze_temporal(model, text)
on_periodic = analyze_temporal(model, periodic)
for name, rep in (("filler text", on_text), ("periodic text", on_periodic)):
    print(f"{name:14s} classes {({c: len(rep.heads_with(c)) for c in CLASSES})}; layer q-similarity {np.round(rep.layer_q_sim, 3)}")""",
    ),
    (
        "code",
        """from workbench.report.figures import class_heatmap, head_heatmap

head_heatmap(on_text.scores["q_sim_prune"].tolist(), "q-similarity (TAPPA's pruning path, pre-RoPE) on filler text", "q-sim").show()
for name, rep in (("filler text", on_text), ("periodic text", on_periodic)):
    rows = [{"layer": l, "head": h, "class": lab.label + (f" (offset {lab.offset})" if lab.offset is not None else "")}
            for (l, h), lab in sorted(rep.labels.items())]
    class_heatmap(rows, geo.n_layers, geo.n_heads, f"pattern class on {name}").show()""",
    ),
    (
        "md",
        """## The heads that look one period back

On periodic text, the heads whose dominant offset is P - 1 = 6 copy the word that followed the current word one
period earlier. As a filter, a single dominant tap at d = 6 is a pure delay: flat magnitude and a phase falling
linearly with slope -6.""",
    ),
    (
        "code",
        """back = [Head(l, h) for (l, h), lab in sorted(on_periodic.labels.items()) if lab.label == "sequential" and lab.offset == RHYTHM_PERIOD - 1]
print(f"sequential heads at offset {RHYTHM_PERIOD - 1} on periodic text:",
      [(str(h), round(on_periodic.labels[h].confidence, 2)) for h in back])
assert len(back) >= 2""",
    ),
    (
        "code",
        """from workbench.analysis.temporal import transfer_function

strongest = max(back, key=lambda h: on_periodic.labels[h].confidence)
omega, magnitude, phase = transfer_function(on_periodic.profiles[strongest.layer, strongest.head])
fig = go.Figure([go.Scatter(x=omega / np.pi, y=magnitude, name="|H| (dB)"),
                 go.Scatter(x=omega / np.pi, y=phase, name="phase (rad)", yaxis="y2")])
fig.update_layout(title=f"{strongest} as a filter", xaxis_title="frequency / pi", yaxis_title="dB",
                  yaxis2={"title": "rad", "overlaying": "y", "side": "right"}, height=360)
fig.show()
slope = np.polyfit(omega, phase, 1)[0]
print(f"{strongest}: h[{RHYTHM_PERIOD - 1}] = {on_periodic.profiles[strongest.layer, strongest.head, RHYTHM_PERIOD - 1]:.3f}; phase slope {slope:.2f}")
assert abs(slope + (RHYTHM_PERIOD - 1)) < 0.5""",
    ),
    (
        "md",
        """## Causal check

Ablate all of these heads together (uniform attention) and score the held-out periodic probes (teacher-forced
next-word accuracy over periods 3-8), against random groups of as many other heads. The ground-truth table ablates
one head at a time; it shows why the group is the right test here.""",
    ),
    (
        "code",
        """import random

from workbench.interventions.ablation import ablate_heads
from workbench.organisms.datasets import load_probes
from workbench.organisms.evaluate import bridge_logits_fn, evaluate_probes

probes = load_probes("periodic", 20)


def periodic_accuracy(heads):
    with ablate_heads(model, heads, mode="uniform"):
        return evaluate_probes(bridge_logits_fn(model), {"periodic": probes})["periodic"]["accuracy"]


pick = random.Random(0)
others = [h for h in geo.all_heads() if h not in back]
base, found = periodic_accuracy([]), periodic_accuracy(back)
random_acc = [periodic_accuracy(pick.sample(others, len(back))) for _ in range(4)]
print(f"periodic accuracy: base {base:.2f}; the {len(back)} heads ablated {found:.2f}; random groups {np.round(random_acc, 2)}")
single = {str(h): ground_truth["baseline"]["periodic"] - ground_truth["modes"]["uniform"]["heads"][str(h)]["periodic"] for h in back}
print("ground truth, each head alone (accuracy lost):", {k: round(v, 3) for k, v in single.items()})
print("ground truth, whole layer ablated (mean; accuracy):",
      {f"L{l}": round(ground_truth["modes"]["mean"]["layers"][f"L{l}"]["periodic"], 3) for l in sorted({h.layer for h in back})})
assert found <= np.mean(random_acc) - 0.3
assert max(single.values()) < 0.2  # no single one of them matters: they back each other up""",
    ),
    ("md", """## The same code on another model"""),
    (
        "code",
        OTHER_MODEL
        + """

from workbench.families.prompts import family_prompts

other_prompts, source = family_prompts(other, ctx, "temporal")
other_report = analyze_temporal(other, other_prompts)
print(f"{len(other_prompts)} prompts ({source}); classes {({c: len(other_report.heads_with(c)) for c in CLASSES})}")
assert other_report.scores["q_sim_prune"].shape == (other.geometry.n_layers, other.geometry.n_heads)""",
    ),
]

# -- 05 long context -----------------------------------------------------------------------------------

NOTEBOOKS["05_long_context"] = [
    (
        "md",
        """# Long context: recording 8192 tokens without the N x N pattern

TransformerLens computes every head's N x N pattern; at 8192 tokens one head's float32 pattern is 256 MiB and the
organism's 32 heads would need 8 GiB. The recorder replaces the attention block with an instrumented kernel
(Triton on GPU, a chunked torch path on CPU) that returns the output and per-head statistics in O(N) memory:
per query the log-sum-exp, entropy, argmax, top probability, first-token and local-window mass; per key the
attention received; and a block-pooled map.

Here: record 8192 tokens on the CPU while watching every tensor operation (no N x N tensor may appear), check what
the statistics must satisfy, check them against the eager pattern where that still fits, and compare peak memory
with eager recording. (The organism was trained on 1024 tokens; at 8192 its attention is out of distribution, which
does not matter for the recording.)""",
    ),
    ("code", SETUP),
    (
        "code",
        '''import ctypes
import time

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from workbench.organisms.tasks import filler_doc
from workbench.record import record_attention


class LargestTensor(TorchDispatchMode):
    """Watches every tensor operation inside the block and keeps the size of the largest result."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.numel = max([self.numel] + [t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)])
        return out


def status_mib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def peak_mib(fn):
    """Peak resident memory while fn() runs, above the resident memory before it (Linux, glibc): memory freed
    earlier is handed back to the system first and the peak is reset, so each call is measured on its own."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_mib("VmRSS")
    out = fn()
    return status_mib("VmHWM") - before, out


N = 8192
tokens = torch.tensor(filler_doc(np.random.default_rng(3), N).ids).view(1, -1)
t0 = time.perf_counter()
with LargestTensor() as largest:
    recorder_8k_mib, (logits, record) = peak_mib(lambda: record_attention(model, tokens, backend="torch", chunk=256))
print(f"recorded {record.n_tokens} tokens in {time.perf_counter() - t0:.1f} s, peak memory +{recorder_8k_mib:.0f} MiB")
print(f"largest tensor: {largest.numel:,} elements, {largest.numel / (N * N):.2f} x one head's {N} x {N} pattern "
      f"(the torch backend scores 256 queries at a time)")
stats = record.layers[0]
print("per-head statistics of one layer:", {k: tuple(getattr(stats, k).shape) for k in ("lse", "entropy", "argmax", "first_k_mass", "col_sum", "pooled")})
record_bytes = sum(t.numel() * t.element_size() for s in record.layers
                   for t in (s.lse, s.entropy, s.argmax, s.pmax, s.first_k_mass, s.window_mass, s.col_sum, s.col_max, s.pooled))
pattern_bytes = geo.n_layers * geo.n_heads * N * N * 4
print(f"the record holds {record_bytes / 2**20:.1f} MiB; the float32 patterns it stands for would be {pattern_bytes / 2**30:.0f} GiB")
assert record.n_tokens == N and logits.shape == (1, N, geo.vocab_size)
assert largest.numel < N * N  # no N x N tensor was built, not even for one head
assert record_bytes < pattern_bytes / 100''',
    ),
    (
        "md",
        """## What the statistics must satisfy

Each query's attention sums to 1, so the attention received, summed over all keys, is N; so is the pooled map's
total. Attention is causal, so the argmax of query i is at most i; and the entropy of query i is at most log(i + 1),
the entropy of uniform attention over its visible keys.""",
    ),
    (
        "code",
        """q = torch.arange(N)
for layer, s in enumerate(record.layers):
    assert torch.allclose(s.col_sum.double().sum(-1), torch.tensor(float(N), dtype=torch.float64), rtol=1e-4), layer
    assert torch.allclose(s.pooled.double().sum((-2, -1)), torch.tensor(float(N), dtype=torch.float64), rtol=1e-4), layer
    assert (s.argmax <= q).all(), layer
    assert (s.entropy <= torch.log(q + 1.0) + 1e-4).all(), layer
    assert ((s.first_k_mass >= 0) & (s.first_k_mass <= 1 + 1e-5)).all(), layer
print("column sums, pooled totals, causality and entropy bounds hold in every layer and head")

layer, head = 1, 0
pooled = record.layers[layer].pooled[0, head].double()  # [N/64 query blocks, N/64 key blocks]
share = pooled / pooled.sum(-1, keepdim=True)
fig = go.Figure(go.Heatmap(z=torch.log10(share.clamp_min(1e-6)).tolist(), colorscale="Viridis", colorbar={"title": {"text": "log10"}}))
fig.update_layout(title=f"L{layer}H{head}: attention share per 64 x 64 block, 8192 tokens", xaxis_title="key block", yaxis_title="query block",
                  yaxis={"autorange": "reversed"}, height=480, width=560)
fig.show()
fig = go.Figure([go.Scatter(y=record.layers[l].entropy[0].mean(0)[::16].tolist(), x=list(range(0, N, 16)), name=f"layer {l}") for l in range(geo.n_layers)])
fig.update_layout(title="mean attention entropy by position (nats)", xaxis_title="position", yaxis_title="entropy", height=320)
fig.show()""",
    ),
    (
        "md",
        """## The same numbers as the eager pattern

At the organism's trained length (1024 tokens) the eager pattern still fits. The statistics are recomputed from it
directly (entropy, argmax, first-token mass, attention received) and must agree with the recorder; recording must
not change the logits.""",
    ),
    (
        "code",
        """short = tokens[:, :1024]
plain = model.logits(short)
fast_logits, fast = record_attention(model, short, backend="torch")
_, eager = record_attention(model, short, backend="eager", keep_patterns=True)
errors = {"logits": float((fast_logits - plain).abs().max()), "entropy": 0.0, "first-token mass": 0.0, "attention received": 0.0}
argmax_agree = []
for layer in range(geo.n_layers):
    p = eager.patterns[layer][0].double()  # [H, N, N]
    s = fast.layers[layer]
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    errors["entropy"] = max(errors["entropy"], float((s.entropy[0].double() - entropy).abs().max()))
    errors["first-token mass"] = max(errors["first-token mass"], float((s.first_k_mass[0].double() - p[:, :, 0]).abs().max()))
    errors["attention received"] = max(errors["attention received"], float((s.col_sum[0].double() - p.sum(-2)).abs().max()))
    argmax_agree.append(float((s.argmax[0] == p.argmax(-1)).double().mean()))
print({k: f"{v:.1e}" for k, v in errors.items()}, f"argmax agrees on {min(argmax_agree):.2%} of the queries (worst layer)")
assert errors["logits"] < 1e-4 and errors["entropy"] < 1e-4 and errors["first-token mass"] < 1e-5
assert errors["attention received"] < 1e-3  # a sum over up to 1024 float32 probabilities
assert min(argmax_agree) > 0.999  # exact ties may resolve differently""",
    ),
    (
        "md",
        """## Peak memory: recorder against eager recording

Eager recording is TransformerLens's `run_with_cache` keeping every layer's `hook_pattern`. `peak_mib` (defined above)
returns freed memory to the system (`malloc_trim`), resets the process's peak resident memory (`/proc/self/clear_refs`),
runs the call and reports the peak above the memory resident before it (Linux with glibc); the 8192-token figure
above was taken with the tensor watcher on. `benchmarks/recorder_cpu.py` measures the same in fresh processes, up to
32k tokens.""",
    ),
    (
        "code",
        """def eager_recording(ids):
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(ids, names_filter=lambda name: name.endswith("hook_pattern"))
    return len(cache)


with LargestTensor() as eager_largest:
    eager_2k, _ = peak_mib(lambda: eager_recording(tokens[:, :2048]))
recorder_2k, _ = peak_mib(lambda: record_attention(model, tokens[:, :2048], backend="torch"))
print(f"2048 tokens: eager {eager_2k:.0f} MiB (largest tensor {eager_largest.numel // 2048**2} x 2048 x 2048: every head's pattern), "
      f"recorder {recorder_2k:.0f} MiB ({recorder_2k / eager_2k:.2f} x)")
print(f"8192 tokens: recorder {recorder_8k_mib:.0f} MiB; eager would hold {pattern_bytes / 2**30:.0f} GiB of patterns alone")
assert recorder_2k < eager_2k / 2
assert recorder_8k_mib < eager_2k  # four times the tokens, still less memory than eager recording at 2048""",
    ),
]

# -- writing -------------------------------------------------------------------------------------------


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cells = []
    for i, (kind, source) in enumerate(NOTEBOOKS[name]):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell["id"] = f"{name}-{i}"
        cells.append(cell)
    nb.cells = cells
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        text = render(name)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if check and stale:
        print("out of date (run python notebooks/build_notebooks.py):", ", ".join(stale))
        return 1
    print("checked" if check else "wrote", ", ".join(f"{n}.ipynb" for n in NOTEBOOKS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
