"""Every figure function (report and dashboard) drawn on the numbers of a real organism run:
one colour per category in every panel, constant maps with a colour bar that makes sense, the
causal results drawn with their random control and heads named "L2H7", titles clear of the
modebar, whole RoPE tick labels, and the playground's default ablation is the atlas's (uniform)."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from workbench.report import figures as F

HEAD = re.compile(r"\bL\d+H\d+\b")

# Small but real: every family of the shipped organism, with the slow parts trimmed.
OPTIONS = {
    "safety": {"heads_per_part": 32, "n_prompts": 2, "max_group": 1, "max_new_tokens": 4},
    "sinks": {"act_trials": 2, "evidence_heads": 1},
    "retrieval": {"n_random": 2, "evidence_heads": 2, "budget_fractions": [0.1, 0.4]},
    "temporal": {"n_trials": 2, "n_periodic": 2, "n_repeated": 2, "periodic_tokens": 64, "budget_averages": [8, 32]},
}


@pytest.fixture(scope="module")
def organism_run(tmp_path_factory):
    """(store folder, run id, artefacts per family, metrics per family as [layer][head] grids, run info)."""
    from workbench import Atlas
    from workbench.app.data import grid
    from workbench.store import Store

    folder = tmp_path_factory.mktemp("figures-run")
    result = Atlas("organism-4l", store=folder, n_prompts=2, max_tokens=64, options=OPTIONS).run()
    with Store.open(folder) as store:
        info = store.run(result.run_id)
        families = [f.family for f in store.families(info.run_id)]
        artefacts = {f: store.artefacts(info.run_id, f) for f in families}
        scores = store.scores(info.run_id)
        metrics = {f: {m: grid(v) for m, v in scores[f].metrics.items()} for f in families}
    return folder, info.run_id, artefacts, metrics, info


def spec(fig: Any) -> dict[str, Any]:
    return json.loads(fig.to_json())


def class_colours(fig: Any) -> dict[str, str]:
    """category -> colour drawn, read back from a categorical heatmap (its stepped colour scale)."""
    trace = spec(fig)["data"][0]
    bar = trace["colorbar"]
    scale = trace["colorscale"]
    n = len(bar["ticktext"])
    out = {}
    for code, name in zip(bar["tickvals"], bar["ticktext"]):
        where = (code - trace["zmin"]) / (trace["zmax"] - trace["zmin"])
        assert abs(where - (code + 0.5) / n) < 1e-9
        out[name] = next(colour for stop, colour in scale if stop >= where)
    return out


def categorical_figures(run: Any) -> list[Any]:
    """Every categorical figure of the report and the dashboard drawn from the run."""
    from workbench.app.views.atlas import class_blocks, metric_heatmap

    _, _, artefacts, metrics, info = run
    rows = artefacts["temporal"]["temporal_classes"]
    views = sorted({r["input"] for r in rows})
    assert len(views) >= 2, "the organism's temporal family labels more than one input"
    figs = [F.class_heatmap([r for r in rows if r["input"] == v], info.n_layers, info.n_heads, v, "label") for v in views]
    figs.append(F.head_heatmap(metrics["temporal"]["label_code"], "codes", "label_code"))
    figs.append(metric_heatmap("temporal", "label_code", np.array(metrics["temporal"]["label_code"], dtype=float)))
    dash = class_blocks("temporal", rows, info.n_layers, info.n_heads)
    figs += [b.fig for grid_block in dash if hasattr(grid_block, "blocks") for b in grid_block.blocks]
    return figs


def test_every_category_has_one_colour_in_every_panel(organism_run):
    figs = categorical_figures(organism_run)
    seen: dict[str, set[str]] = {}
    for fig in figs:
        for name, colour in class_colours(fig).items():
            seen.setdefault(name, set()).add(colour)
    assert seen, "no categories drawn"
    assert {name: len(c) for name, c in seen.items()} == dict.fromkeys(seen, 1), seen
    assert all(c == {F.category_colour(name)} for name, c in seen.items())
    # "unpredictable" is not orange in one panel and green in the next: the fixed map decides
    assert F.category_colour("unpredictable") == F.CATEGORY_COLOURS["unpredictable"]
    # the legends (report swatches, dashboard text) carry the same colours
    legend = F.category_legend(sorted(seen))
    assert {e["category"]: e["colour"] for e in legend} == {n: next(iter(c)) for n, c in seen.items()}


def test_constant_maps_have_a_sensible_colour_bar(organism_run):
    _, _, _, metrics, _ = organism_run
    constant = {
        (fam, m): g
        for fam, ms in metrics.items()
        for m, g in ms.items()
        if len({v for row in g for v in row if v is not None}) == 1 and m not in F.CATEGORICAL_METRICS
    }
    some = next(iter(metrics["sinks"].values()))
    constant.setdefault(("sinks", "zeros"), [[0.0 for _ in row] for row in some])  # always one
    for (fam, metric), g in constant.items():
        value = next(v for row in g for v in row if v is not None)
        plain = spec(F.head_heatmap(g, f"{fam}: {metric}", metric))["data"][0]
        assert (plain["zmin"], plain["zmax"]) != (-0.5, 0.5)  # not plotly's default around a constant
        for fig in (F.head_heatmap(g, f"{fam}: {metric}", metric), F.metric_heatmap(fam, metric, g)):
            trace = spec(fig)["data"][0]
            assert trace["zmin"] < trace["zmax"] and trace["zmin"] <= value <= trace["zmax"]
            assert trace["colorbar"]["tickvals"] == [value]
            assert trace["colorbar"]["ticktext"] == [f"constant = {value:.4g}"]
            assert "constant" in spec(fig)["layout"]["title"]["text"]
        signed = F.head_heatmap(g, "t", metric, "RdBu_r", zmid=0.0)
        trace = spec(signed)["data"][0]
        assert trace["zmin"] < trace["zmax"] and trace["zmin"] <= value <= trace["zmax"]


def test_shared_scale_puts_a_familys_unit_metrics_on_one_range(organism_run):
    _, _, _, metrics, _ = organism_run
    ret = metrics["retrieval"]
    scale = F.shared_scale(ret)
    assert scale["retrieval_score"] == scale["echo_score"] == (0.0, 1.0)
    assert "ablation_accuracy_drop" not in scale  # signed: its own diverging scale
    echo = spec(F.metric_heatmap("retrieval", "echo_score", ret["echo_score"], shared=True))["data"][0]
    assert (echo["zmin"], echo["zmax"]) == (0.0, 1.0)
    own = spec(F.metric_heatmap("retrieval", "echo_score", ret["echo_score"]))["data"][0]
    assert own.get("zmin") is None  # optional: off unless asked
    # the dashboard's maps use it
    from workbench.app.views.atlas import metric_heatmap

    dash = spec(metric_heatmap("retrieval", "echo_score", np.array(ret["echo_score"], dtype=float)))["data"][0]
    assert (dash["zmin"], dash["zmax"]) == (0.0, 1.0)


def _text(fig: Any) -> str:
    return json.dumps(spec(fig), ensure_ascii=False)


def test_causal_results_are_figures_with_their_controls(organism_run):
    _, _, artefacts, metrics, _ = organism_run
    ret, sinks = artefacts["retrieval"], artefacts["sinks"]
    safety = artefacts["safety"]
    kv = F.kv_budget_figure(ret["kv_budget_curve"], "kv")
    names = [t["name"] for t in spec(kv)["data"]]
    assert any("random" in n and "control" in n for n in names) and any("full cache" in n for n in names)
    random_trace = next(t for t in spec(kv)["data"] if "control" in t["name"])
    assert random_trace["y"] == ret["kv_budget_curve"]["random_accuracy"]

    abl = F.ablation_figure(ret["ablation_comparison"], "ablation")
    control = next(t for t in spec(abl)["data"] if "control" in t["name"])
    assert control["y"] == ret["ablation_comparison"]["random_accuracies"]
    assert set(HEAD.findall(_text(abl))) >= set(ret["ablation_comparison"]["top_heads"])

    act = sinks["act_calibration"]
    fig = F.act_figure(act, "act")
    assert [t["y"] for t in spec(fig)["data"]] == [
        [act["calibration_before"], act["evaluation_before"]],
        [act["calibration_after"], act["evaluation_after"]],
    ]
    assert set(HEAD.findall(_text(fig))) >= set(act["selected"])
    worse = {**act, "evaluation_after": act["evaluation_before"] - 1.0}
    flagged = _text(F.act_figure(worse, "act"))
    assert F.act_worse(worse) and "got worse" in flagged and F.ROLE_COLOURS["worse"] in flagged

    asr = F.find_artefact(safety, "asr")
    fig = F.asr_figure(asr, "asr")
    data = spec(fig)["data"]
    assert [t["y"][0] for t in data] == [
        asr["base"],
        asr["top_ships_per_query"],
        asr["random_head_per_query"],
        asr["sahara_group"],
    ]
    assert any("control" in t["name"] for t in data)
    assert set(HEAD.findall(_text(fig))) >= set(asr["sahara_heads"])

    drops = F.head_value_bars(metrics["retrieval"]["ablation_accuracy_drop"], "drop", "ablation_accuracy_drop")
    measured = [v for row in metrics["retrieval"]["ablation_accuracy_drop"] for v in row if v is not None]
    assert len(spec(drops)["data"][0]["x"]) == len(measured) and all(HEAD.fullmatch(x) for x in spec(drops)["data"][0]["x"])

    for fam, arts in artefacts.items():
        for key, fig, _ in F.causal_figures(fam, arts, metrics[fam]):
            s = spec(fig)
            shown = [s["layout"]["title"]["text"]] + [
                json.dumps(
                    [t.get(f) for f in ("name", "text", "customdata")] + [x for x in t.get("x") or [] if isinstance(x, str)]
                )
                for t in s["data"]
            ]
            assert not any("[[" in t or re.search(r"\[\d+, \d+\]", t) for t in shown), key  # heads as L2H3
    drawn = {k.rsplit("/", 1)[-1] for fam, arts in artefacts.items() for k, _, _ in F.causal_figures(fam, arts, metrics[fam])}
    assert {"kv_budget_curve", "ablation_comparison", "act_calibration", "asr", "ablation_accuracy_drop"} <= drawn


def test_layout_keeps_titles_clear_of_the_modebar_and_ticks_whole(organism_run):
    from workbench.analysis.temporal import transfer_function
    from workbench.app import figures as AF

    _, _, artefacts, metrics, info = organism_run
    temporal = artefacts["temporal"]
    profile = temporal["offset_profiles"][1, 0]
    omega, mag, phase = transfer_function(profile)
    periods = temporal["rope_periods"]
    rope = AF.rope_share_figure(temporal["rope_channel_shares"][1, 0], periods[1] if periods.ndim == 2 else periods, "rope")
    figs = [
        F.head_heatmap(metrics["sinks"]["first_token_mass"], "a long title " * 8, "first_token_mass"),
        F.token_bar(artefacts["sinks"]["token_sink_frequency"], "tokens"),
        F.layer_bar(list(artefacts["sinks"]["sink_rate_per_layer"]), "rate", "%"),
        F.count_heatmap([[1] * info.n_heads] * info.n_layers, "counts"),
        F.scatter_compare([0.1, 0.2], [0.3, 0.4], ["L0H0", "L0H1"], "scatter", "A", "B"),
        F.profile_lines({"run": [0.1, 0.2, 0.3]}, "profile", "score"),
        F.removal_figure(artefacts["sinks"]["removal_check"], "removal"),
        F.budget_decision_figure(temporal["budget_decision"], "budget"),
        AF.offset_profile_figure(profile, "offsets"),
        AF.spectrum_figure(omega, mag, phase, "spectrum"),
        rope,
    ]
    for fig in figs:
        layout = spec(fig)["layout"]
        assert layout["margin"]["t"] >= F.TOP_MARGIN
        assert layout["title"]["yref"] == "container" and layout["title"]["pad"]["t"] >= 28
        assert layout["xaxis"]["automargin"] is True
    axis = spec(rope)["layout"]["xaxis"]
    assert axis["automargin"] is True and axis["type"] == "category"
    assert all("T≈" in t for t in spec(rope)["data"][0]["x"])


def test_playground_defaults_to_uniform_and_draws_every_token(organism_run):
    from workbench.app import layout as L
    from workbench.app.callbacks import _walk
    from workbench.app.figures import next_token_figure, pattern_figure
    from workbench.app.live import PLAYGROUND_MODE, record_layer, run_ablation
    from workbench.app.patterns import axis_labels
    from workbench.models import load_model
    from workbench.store import Store

    folder, run_id, *_ = organism_run
    assert PLAYGROUND_MODE == "uniform"
    with Store.open(folder) as store:
        run = store.run(run_id)
    page = L.playground_page(L.parse_route(f"/run/{run_id}/playground", ""), run, [])
    (radio,) = [c for c in _walk(page) if getattr(c, "id", None) == "play-mode"]
    assert radio.value == "uniform" and radio.options[0]["value"] == "uniform"

    model = load_model("organism-4l", device="cpu")
    ids = model.to_tokens("the cat sat on the mat and the dog")
    result = run_ablation(model, ids, ["L2H3"], PLAYGROUND_MODE, 8, 0)
    assert result["mode"] == "uniform"
    fig = spec(next_token_figure(result["rows"], "next token"))
    assert fig["layout"]["xaxis"]["type"] == "log"
    smallest = min(min(r["p_without"], r["p_with"]) for r in result["rows"])
    assert fig["layout"]["xaxis"]["range"][0] <= np.log10(smallest)  # every bar is visible, not only the top one
    entry = record_layer(model, ids, 2)
    grid = entry.grid(3)
    pat = spec(pattern_figure(grid, axis_labels(entry.tokens, grid.block), "pattern"))
    assert pat["layout"]["margin"]["t"] >= F.TOP_MARGIN


def _figures(blocks: list[Any]) -> list[Any]:
    from workbench.app import blocks as B

    out = []
    for b in blocks:
        if isinstance(b, B.Figure):
            out.append(b)
        elif isinstance(b, (B.Section, B.Grid)):
            out += _figures(b.blocks)
    return out


def test_report_and_dashboard_draw_the_causal_figures(organism_run, tmp_path):
    from workbench.app.views.head import head_blocks
    from workbench.report.html import write_report
    from workbench.store import Store

    folder, run_id, artefacts, _, _ = organism_run
    with Store.open(folder) as store:
        html_path, _ = write_report(store, run_id, out=tmp_path)
        top = artefacts["retrieval"]["ablation_comparison"]["top_heads"][0]
        act = artefacts["sinks"]["act_calibration"]["selected"]
        group = F.find_artefact(artefacts["safety"], "asr")["sahara_heads"][0]
        pages = {h: head_blocks(store, run_id, *(int(x) for x in h[1:].split("H"))) for h in {top, group, *act[:1]}}
    text = html_path.read_text()
    for name in ("retrieval-kv_budget_curve", "retrieval-ablation_comparison", "sinks-act_calibration", "safety-group-asr"):
        assert f'id="fig-{name}"' in text, name
    assert "<h3>razor_selection</h3>" in text and "[[" not in text.split("<h3>razor_selection</h3>")[1][:400]
    assert 'class="muted wb-legend"' in text

    # the dashboard's run page draws every family's causal checks under its map
    with Store.open(folder) as store:
        from workbench.app.views.atlas import atlas_blocks

        run_page = {f.name for f in _figures(atlas_blocks(store, run_id))}
    for name in ("causal-retrieval-kv_budget_curve", "causal-retrieval-ablation_comparison", "causal-safety-group-asr"):
        assert name in run_page, (name, sorted(run_page))
    # the dashboard's head page draws the causal checks that name the head (not their raw lists)
    names = {h: {f.name for f in _figures(blocks)} for h, blocks in pages.items()}
    assert "evidence-retrieval-ablation_comparison" in names[top]
    assert "evidence-safety-group-asr" in names[group]
    if act:
        assert "evidence-sinks-act_calibration" in names[act[0]]
    assert any(n.startswith("temporal-classes-") for n in names[top])  # the class maps, this head outlined
