"""Head geometry: the numbers every analysis needs to address heads and positions.

Read from the Hugging Face config (the source of truth for the checkpoint) and the
tokenizer; the bridge's own config is only a fallback.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from workbench.models.heads import Head, HeadLike, parse_head

PositionKind = Literal["rope", "absolute", "none"]


@dataclass(frozen=True)
class PositionalScheme:
    """How the model knows where a token is; temporal analyses need the RoPE details."""

    kind: PositionKind
    rope_base: float | None = None
    rope_dims: int | None = None  # rotated dimensions per head (partial rotary < d_head)
    # Per layer, the angle (rad/token) of each rotated pair as the model computes it (scaling, per-layer
    # bases and partial rotary included; see workbench.models.rope); pair i of "half" is (i, i + dims/2),
    # of "interleaved" (2i, 2i + 1).
    layer_inv_freq: tuple[tuple[float, ...], ...] = ()
    pair_layout: str = "half"
    freq_source: str = ""

    def layer_periods(self, layer: int) -> list[float]:
        """Period in tokens of each rotated pair of ``layer``."""
        return [2 * math.pi / f if f > 0 else math.inf for f in self.layer_inv_freq[layer]]

    def describe(self) -> str:
        if self.kind == "rope":
            text = f"RoPE (base {self.rope_base:g}, {self.rope_dims} rotated dims per head"
            if self.layer_inv_freq:
                periods = sorted({round(max(self.layer_periods(i)), 1) for i in range(len(self.layer_inv_freq))})
                text += f", longest period {', '.join(f'{p:g}' for p in periods)} tokens"
            return text + ")"
        if self.kind == "absolute":
            return "learned absolute position embeddings"
        return "none"


@dataclass(frozen=True)
class BosHandling:
    """Whether the tokenizer prepends a BOS token: sink analyses treat position 0 specially."""

    token_id: int | None
    token: str | None
    prepends: bool


@dataclass(frozen=True)
class HeadGeometry:
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    vocab_size: int
    n_ctx: int | None
    positional: PositionalScheme
    bos: BosHandling
    head_to_kv: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        group = self.n_heads // self.n_kv_heads
        object.__setattr__(self, "head_to_kv", tuple(h // group for h in range(self.n_heads)))

    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 without GQA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def attention_kind(self) -> str:
        """How query heads share KV heads: "MHA" (one KV head each), "MQA" (a single KV head for all
        query heads, as Falcon's multi_query) or "GQA" (groups of query heads per KV head)."""
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else "GQA"

    def kv_sharing(self) -> str:
        """The KV-head sharing in words: "MQA, all 8 query heads share it" / "GQA, 4 query heads each" / ""."""
        kind = self.attention_kind
        if kind == "MQA":
            return f"MQA, all {self.n_heads} query heads share it"
        if kind == "GQA":
            return f"GQA, {self.group_size} query heads each"
        return ""

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    def kv_head(self, head: int) -> int:
        return self.head_to_kv[head]

    def head(self, spec: HeadLike) -> Head:
        """Parse and range-check one head address against this model."""
        return parse_head(spec, self.n_layers, self.n_heads)

    def all_heads(self) -> list[Head]:
        return [Head(layer, h) for layer in range(self.n_layers) for h in range(self.n_heads)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["head_to_kv"] = list(self.head_to_kv)
        return d


def _first(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def positional_scheme(
    hf_config: Any, d_head: int, bridge_kind: str | None = None, hf_model: Any = None, bridge_cfg: Any = None
) -> PositionalScheme:
    rope_params = getattr(hf_config, "rope_parameters", None)
    rope_theta = None
    partial = _first(hf_config, "partial_rotary_factor", default=None)
    if isinstance(rope_params, dict):
        rope_theta = rope_params.get("rope_theta")
        partial = rope_params.get("partial_rotary_factor", partial)
    rope_theta = rope_theta if rope_theta is not None else getattr(hf_config, "rope_theta", None)
    rotary_dim = _first(hf_config, "rotary_dim", "rotary_emb_base_dim", default=None)
    if isinstance(rope_params, dict) and rope_theta is None:
        # per-layer-type parameters (Gemma 3): {"sliding_attention": {...}, "full_attention": {...}}
        nested = [v for v in rope_params.values() if isinstance(v, dict) and "rope_theta" in v]
        if nested:
            rope_theta = nested[-1]["rope_theta"]
            partial = nested[-1].get("partial_rotary_factor", partial)
    if rope_theta is not None or bridge_kind == "rotary":
        from workbench.models.rope import rope_frequencies

        dims = int(rotary_dim) if rotary_dim else int(round(d_head * float(partial if partial else 1.0)))
        base = float(rope_theta if rope_theta is not None else 10000.0)
        n_layers = int(_first(hf_config, "num_hidden_layers", "n_layer", "num_layers"))
        freqs = rope_frequencies(hf_config, n_layers, base, dims, hf_model=hf_model, bridge_cfg=bridge_cfg)
        dims = 2 * max(len(f) for f in freqs.layer_inv_freq)  # what the model really rotates
        return PositionalScheme("rope", base, dims, freqs.layer_inv_freq, freqs.pair_layout, freqs.source)
    # learned absolute positions: a bridge that says so, or a known model type that has a position table
    if bridge_kind in ("standard", "shortformer") or (
        getattr(hf_config, "model_type", "") in {"gpt2", "opt", "gpt_bigcode", "gptj"}
        and _first(hf_config, "n_positions", "max_position_embeddings")
    ):
        return PositionalScheme("absolute")
    return PositionalScheme("none")


def _kv_heads(hf_config: Any, n_heads: int, bridge_cfg: Any = None) -> int:
    """KV heads as the attention really has them (Falcon's multi_query means one, whatever num_kv_heads says)."""
    bridged = getattr(bridge_cfg, "n_key_value_heads", None) if bridge_cfg is not None else None
    if bridged:
        return int(bridged)
    if getattr(hf_config, "multi_query", False) and not getattr(hf_config, "new_decoder_architecture", False):
        return 1
    return int(_first(hf_config, "num_key_value_heads", "num_kv_heads", "n_kv_heads", default=n_heads))


def geometry_from_config(hf_config: Any, tokenizer: Any = None, bridge_cfg: Any = None, hf_model: Any = None) -> HeadGeometry:
    """Build the geometry from a Hugging Face config (plus tokenizer for BOS handling).

    With ``hf_model`` the RoPE frequencies are read from its rotary embedding (the truth under rope
    scaling and per-layer bases); without it they follow the config's ``rope_theta`` unscaled.
    """
    n_layers = int(_first(hf_config, "num_hidden_layers", "n_layer", "num_layers"))
    n_heads = int(_first(hf_config, "num_attention_heads", "n_head", "num_heads"))
    n_kv = _kv_heads(hf_config, n_heads, bridge_cfg)
    d_model = int(_first(hf_config, "hidden_size", "n_embd", "d_model"))
    d_head = int(_first(hf_config, "head_dim", default=d_model // n_heads))
    vocab = int(_first(hf_config, "vocab_size"))
    n_ctx = _first(hf_config, "max_position_embeddings", "n_positions", "n_ctx")
    archs = getattr(hf_config, "architectures", None) or [getattr(hf_config, "model_type", "unknown")]
    bridge_kind = getattr(bridge_cfg, "positional_embedding_type", None) if bridge_cfg is not None else None
    return HeadGeometry(
        architecture=str(archs[0]),
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=d_head,
        d_model=d_model,
        vocab_size=vocab,
        n_ctx=int(n_ctx) if n_ctx is not None else None,
        positional=positional_scheme(hf_config, d_head, bridge_kind, hf_model=hf_model, bridge_cfg=bridge_cfg),
        bos=bos_handling(tokenizer),
    )


def bos_handling(tokenizer: Any) -> BosHandling:
    if tokenizer is None:
        return BosHandling(None, None, False)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    prepends = False
    if bos_id is not None:
        try:
            ids = tokenizer("a", add_special_tokens=True)["input_ids"]
            prepends = len(ids) > 0 and ids[0] == bos_id
        except Exception:  # a tokenizer that cannot encode "a" simply does not prepend
            prepends = False
    return BosHandling(bos_id, getattr(tokenizer, "bos_token", None), prepends)
