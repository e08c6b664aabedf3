"""Every architecture of the tiny-model matrix: loaded exactly, recorded exactly, ablated exactly.

17 tiny random Hugging Face models (workbench.models.tiny: GPT-2, GPT-NeoX, Llama, Llama 3.1 rope
scaling, Mistral with and without a 16-token window, Qwen2, Qwen3, Gemma, Gemma 2 (window + soft-cap 5),
Gemma 3 (window, local/global bases), OLMo 2, Phi-3 (fused QKV, partial rotary, window), GPT-J, Falcon,
StableLM, Cohere), 2 layers, 48-token sequences. Everything is compared with an independently loaded
Hugging Face model running its own eager attention.

Tolerances (float32 on CPU): logits 1e-4 (observed <= 3e-6: the same arithmetic in another order);
statistics 1e-4 (entropy, first-token mass, column sums of up to 48 probabilities; observed ~1e-6);
uniform ablation 1e-4 of exact uniform (epsilon 1e-5 times scores of order 10 leaves ~1e-4 relative
tilt on 1/N-sized probabilities, i.e. <= 1e-5 absolute); other heads of the ablated layer 1e-5 (they
must not move at all: any change is a leak through a shared norm).

The weights are drawn with initializer_range 0.2 (q/k norm gains 3) so rows are peaked (median max-probability is checked
below); tests/record/test_self_check.py shows that on these weights a dropped RoPE, a dropped window or
a wrong scale moves the attention output by 10-60%, far above these tolerances.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench.errors import UnsupportedModelError
from workbench.interventions import ablate_heads, ablate_heads_hf, ablated_logits, head_means
from workbench.models import load_model
from workbench.models.attention_spec import layer_windows
from workbench.models.tiny import TINY_ARCHS, TINY_WINDOW
from workbench.record import record_attention

N = 48
TOL = 1e-4
#: Hugging Face attention modules that do not call the attention interface: the fast HF path refuses
#: uniform ablation on them (the bridge path works)
HF_OWN_ATTENTION = {"falcon"}


@pytest.fixture(scope="module")
def arch_models(tiny_model_dir):
    cache: dict[str, tuple] = {}

    def get(arch: str):
        if arch not in cache:
            folder = tiny_model_dir(arch, peaked=True)
            model = load_model(folder, device="cpu")
            hf = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
            cache[arch] = (model, hf)
        return cache[arch]

    return get


def _tokens(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, model.geometry.vocab_size, (2, N), generator=g)
    ids[:, 0] = model.geometry.bos.token_id
    return ids


def _visible(model, layer: int, n: int = N) -> torch.Tensor:
    """[n, n] keys each query can see in ``layer``: causal, and inside the window on windowed layers."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    vis = j <= i
    window = layer_windows(model.hf_model.config, model.geometry.n_layers)[layer]
    if window is not None:
        vis &= j > i - window
    return vis


def _hf_attentions(hf, tokens):
    with torch.no_grad():
        out = hf(tokens, output_attentions=True)
    return out.logits, [a.double() for a in out.attentions]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_load_and_record_match_the_model(arch, arch_models):
    model, hf = arch_models(arch)
    tokens = _tokens(model)
    ref_logits, attns = _hf_attentions(hf, tokens)
    with torch.no_grad():
        assert (model.logits(tokens) - ref_logits).abs().max() < TOL  # load parity
    logits, record = record_attention(model, tokens, backend="torch", chunk=16, pool=16, first_k=1)
    assert (logits - ref_logits).abs().max() < TOL
    for layer, p in enumerate(attns):
        st = record.layers[layer]
        torch.testing.assert_close(st.entropy.double(), torch.special.entr(p).sum(-1), atol=TOL, rtol=0)
        torch.testing.assert_close(st.first_k_mass.double(), p[..., 0], atol=TOL, rtol=0)
        torch.testing.assert_close(st.col_sum.double(), p.sum(-2), atol=TOL, rtol=0)
        top2 = p.topk(2, dim=-1).values
        decided = (top2[..., 0] - top2[..., 1]) > 1e-5  # near-ties may flip in the last ulp
        assert torch.equal(st.argmax[decided], p.argmax(-1)[decided])
        assert torch.equal(st.col_count, _visible(model, layer).sum(0))
        # peaked rows: a uniform row over ~24 keys would have max-probability ~0.04; observed 0.3-0.96
        assert float(p.amax(-1).median()) > 0.25, f"layer {layer} attention is too flat to test anything"


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_eager_backend_works_and_agrees(arch, arch_models):
    model, _ = arch_models(arch)
    tokens = _tokens(model, seed=1)
    _, fast = record_attention(model, tokens, backend="torch", pool=16)
    _, eager = record_attention(model, tokens, backend="eager", pool=16)
    for a, b in zip(fast.layers, eager.layers):
        torch.testing.assert_close(b.entropy, a.entropy, atol=TOL, rtol=0)
        torch.testing.assert_close(b.col_sum, a.col_sum, atol=TOL, rtol=0)
        if not torch.isnan(b.lse).all():  # bridges that delegate to HF expose no pre-softmax scores
            torch.testing.assert_close(b.lse, a.lse, atol=TOL, rtol=0)


def _layer0_patterns(model, tokens):
    box = {}

    def grab(t, hook):
        box["p"] = t.detach().double()  # returns None: the pattern itself is left alone

    with model.bridge.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", grab)]):
        with torch.no_grad():
            logits = model.logits(tokens)
    return logits, box["p"]


def _check_uniform(p_base, p_abl, visible, head: int):
    uniform = visible.double() / visible.sum(-1, keepdim=True)
    assert (p_abl[:, head] - uniform).abs().max() < TOL
    others = [h for h in range(p_base.shape[1]) if h != head]
    assert (p_abl[:, others] - p_base[:, others]).abs().max() < 1e-5


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_uniform_ablation_is_uniform_and_touches_no_other_head(arch, arch_models):
    model, hf = arch_models(arch)
    tokens = _tokens(model, seed=2)
    visible = _visible(model, 0)
    base_logits, p_base = _layer0_patterns(model, tokens)
    with ablate_heads(model, "L0H1", "uniform"):
        bridge_logits, p_abl = _layer0_patterns(model, tokens)
    _check_uniform(p_base, p_abl, visible, 1)
    assert (bridge_logits - base_logits).abs().max() > 1e-3  # the ablation did something
    # the fast path on a plain Hugging Face model: same pattern, same logits
    _, hf_base = _hf_attentions(hf, tokens)
    if arch in HF_OWN_ATTENTION:
        with pytest.raises(UnsupportedModelError, match="attention interface"):
            with ablate_heads_hf(hf, "L0H1", "uniform"):
                _hf_attentions(hf, tokens)
        return
    with ablate_heads_hf(hf, "L0H1", "uniform"):
        hf_logits, hf_abl = _hf_attentions(hf, tokens)
    _check_uniform(hf_base[0], hf_abl[0], visible, 1)
    assert (hf_logits - bridge_logits).abs().max() < TOL


def _out_proj_input_edit(hf, layer: int, head: int, d_head: int, fill: torch.Tensor | None):
    """A plain torch pre-hook on the layer's output projection: the test's own, independent edit."""
    from workbench.interventions.ablation import _hf_attention_modules, _out_proj

    proj = _out_proj(_hf_attention_modules(hf)[layer])

    def edit(mod, args):
        x = args[0].clone()
        sl = slice(head * d_head, (head + 1) * d_head)
        x[..., sl] = 0 if fill is None else fill.to(x.dtype)
        return (x, *args[1:])

    return proj.register_forward_pre_hook(edit)


def _out_proj_mean(hf, layer: int, head: int, d_head: int, reference: torch.Tensor) -> torch.Tensor:
    from workbench.interventions.ablation import _hf_attention_modules, _out_proj

    box = []
    proj = _out_proj(_hf_attention_modules(hf)[layer])
    handle = proj.register_forward_pre_hook(lambda mod, args: box.append(args[0].detach().double()))
    try:
        with torch.no_grad():
            hf(reference)
    finally:
        handle.remove()
    z = box[0][..., head * d_head : (head + 1) * d_head]
    return z.reshape(-1, d_head).mean(0)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_zero_and_mean_ablation_equal_the_same_edit_on_the_hf_model(arch, arch_models):
    model, hf = arch_models(arch)
    tokens, reference = _tokens(model, seed=3), _tokens(model, seed=4)
    d_head = model.geometry.d_head
    for mode in ("zero", "mean"):
        means = head_means(model, reference) if mode == "mean" else None
        got = ablated_logits(model, tokens, "L1H2", mode, means=means)
        fill = _out_proj_mean(hf, 1, 2, d_head, reference) if mode == "mean" else None
        if fill is not None:
            torch.testing.assert_close(means[1][2].double(), fill, atol=1e-5, rtol=0)
        handle = _out_proj_input_edit(hf, 1, 2, d_head, fill)
        try:
            with torch.no_grad():
                want = hf(tokens).logits
        finally:
            handle.remove()
        assert (got - want).abs().max() < TOL, mode
        with ablate_heads_hf(hf, "L1H2", mode, means=means), torch.no_grad():
            assert (hf(tokens).logits - want).abs().max() < TOL, mode


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_a_small_atlas_run_completes(arch, tiny_model_dir, tmp_path):
    from workbench.cli.main import main
    from workbench.store import Store

    folder = tiny_model_dir(arch, peaked=True)
    args = [
        "atlas",
        str(folder),
        "--results",
        str(tmp_path),
        "--families",
        "sinks,retrieval,temporal",
        "--max-tokens",
        str(N),
        "--n-prompts",
        "2",
        "--quiet",
    ]
    assert main(args) == 0
    with Store.open(tmp_path) as store:
        (run,) = store.runs()
        assert run.status == "complete"
        assert set(store.scores(run.run_id)) == {"sinks", "retrieval", "temporal"}


def test_the_matrix_covers_the_features(arch_models):
    """The matrix really contains windows shorter than the sequence, soft-caps, q norms and scaled RoPE."""
    windows = {a: layer_windows(arch_models(a)[0].hf_model.config, 2) for a in ("mistral_window", "gemma2", "gemma3", "phi3")}
    assert all(TINY_WINDOW in w and TINY_WINDOW < N for w in windows.values()), windows
    assert arch_models("gemma2")[0].hf_model.config.attn_logit_softcapping == 5.0
    periods = arch_models("gemma3")[0].geometry.positional
    assert max(periods.layer_periods(0)) != max(periods.layer_periods(1))  # local vs global base


def _angles_from_rotary(model, layer_type=None) -> list[float]:
    """Angle per pair at position 1, from the model's rotary module's own cos/sin output."""
    hf = model.hf_model
    rotary = next(m for m in hf.modules() if type(m).__name__.endswith("RotaryEmbedding"))
    x = torch.zeros(1, 2, model.geometry.d_head)
    pos = torch.arange(2)[None]
    cos, sin = rotary(x, pos, layer_type) if layer_type else rotary(x, pos)
    half = cos.shape[-1] // 2
    return torch.atan2(sin[0, 1, :half].double(), cos[0, 1, :half].double()).tolist()


@pytest.mark.parametrize("arch", ["llama31", "gemma3", "gpt_neox", "phi3", "stablelm", "qwen3"])
def test_rope_frequencies_are_the_ones_the_model_rotates_by(arch, arch_models):
    model, _ = arch_models(arch)
    pos = model.geometry.positional
    types = getattr(model.hf_model.config, "layer_types", None)
    for layer in range(model.geometry.n_layers):
        layer_type = types[layer] if arch == "gemma3" else None
        want = _angles_from_rotary(model, layer_type)
        assert pos.layer_inv_freq[layer] == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert pos.rope_dims == 2 * len(pos.layer_inv_freq[0])


def test_llama3_scaling_matches_the_published_rule(arch_models):
    """Llama 3.1's rule, written out here: wavelengths above original_max / low_freq_factor are divided
    by the factor, below original_max / high_freq_factor kept, smoothly interpolated in between."""
    import math

    model, _ = arch_models("llama31")
    rp = model.hf_model.config.rope_parameters
    d = model.geometry.d_head
    want = []
    for i in range(d // 2):
        f = rp["rope_theta"] ** (-2 * i / d)
        wavelen = 2 * math.pi / f
        lo, hi = (
            rp["original_max_position_embeddings"] / rp["low_freq_factor"],
            rp["original_max_position_embeddings"] / rp["high_freq_factor"],
        )
        if wavelen > lo:
            f = f / rp["factor"]
        elif wavelen >= hi:
            smooth = (rp["original_max_position_embeddings"] / wavelen - rp["low_freq_factor"]) / (
                rp["high_freq_factor"] - rp["low_freq_factor"]
            )
            f = (1 - smooth) * f / rp["factor"] + smooth * f
        want.append(f)
    got = model.geometry.positional.layer_inv_freq[0]
    assert got == pytest.approx(want, rel=1e-5)
    unscaled = [rp["rope_theta"] ** (-2 * i / d) for i in range(d // 2)]
    assert max(u / g for u, g in zip(unscaled, got)) == pytest.approx(rp["factor"], rel=1e-5)  # rope_theta alone: 8x off


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_the_tiny_tokenizer_survives_loading(arch, arch_models):
    """One word, one token, whatever tokenizer class transformers forces on the model type (Qwen2)."""
    model, _ = arch_models(arch)
    assert model.to_str_tokens(model.to_tokens("w1 w2 w3")) == ["<bos>", "w1", "w2", "w3"]


def test_a_rebuilt_tokenizer_is_replaced_by_the_folders_own(tiny_model_dir):
    from pathlib import Path

    from transformers import AutoTokenizer

    from workbench.models.loading import faithful_tokenizer

    qwen2 = Path(tiny_model_dir("qwen2", peaked=True))
    forced = AutoTokenizer.from_pretrained(str(qwen2))  # what transformers 5 does on its own
    assert type(forced).__name__ == "Qwen2Tokenizer" and len(forced("w1 w2 w3")["input_ids"]) < 3
    kept = faithful_tokenizer(qwen2, forced)
    assert kept is not None and kept("w1 w2 w3", add_special_tokens=False)["input_ids"] == [5, 6, 7]
    llama = Path(tiny_model_dir("llama", peaked=True))
    assert faithful_tokenizer(llama, AutoTokenizer.from_pretrained(str(llama))) is None  # kept as saved: nothing to fix
