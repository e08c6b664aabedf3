"""The RoPE frequencies a model really uses, per layer.

``rope_theta`` alone is not the rotation: Llama 3.1 rescales the low frequencies (llama3 scaling),
YaRN and linear scaling change them too, Gemma 3 uses one base for local and another for global
layers, and partial rotary (Pythia, Phi, StableLM) rotates only part of each head. Periods computed
from ``rope_theta`` were off by up to 55x on such models. So the frequencies are read from the
model's rotary embedding itself, which already holds the scaled inverse frequencies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import torch

PairLayout = Literal["half", "interleaved"]
_LAYER_RE = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")
#: model types whose rotary embedding rotates adjacent channels (2i, 2i + 1) instead of (i, i + d/2)
_INTERLEAVED_TYPES = {"gptj", "codegen", "cohere", "cohere2", "glm", "glm4", "chatglm", "ernie4_5"}


@dataclass(frozen=True)
class RopeFrequencies:
    """Per layer, the angle (radians per token) each rotated channel pair turns by."""

    layer_inv_freq: tuple[tuple[float, ...], ...]
    pair_layout: PairLayout
    source: str  # where they were read: "rotary_emb.inv_freq", "config", ...

    def periods(self, layer: int) -> list[float]:
        """Period in tokens of each pair of ``layer`` (2 pi / angle)."""
        return [2 * math.pi / f if f > 0 else math.inf for f in self.layer_inv_freq[layer]]


def pair_layout(hf_config: Any, bridge_cfg: Any = None) -> PairLayout:
    if getattr(bridge_cfg, "rotary_interleaved_cos_sin", False) or getattr(bridge_cfg, "rotary_adjacent_pairs", False):
        return "interleaved"
    return "interleaved" if getattr(hf_config, "model_type", "") in _INTERLEAVED_TYPES else "half"


def _config_inv_freq(base: float, dims: int) -> tuple[float, ...]:
    return tuple(float(base ** (-2.0 * i / dims)) for i in range(dims // 2))


def read_inv_freq(hf_model: Any, n_layers: int, layer_types: list[str] | None) -> tuple[list[tuple[float, ...]] | None, str]:
    """Inverse frequencies per layer from the rotary modules' buffers; (None, reason) when there are none.

    Handles one shared ``inv_freq`` (most models), per-layer-type buffers ``<type>_inv_freq`` (Gemma 3),
    rotary modules inside each layer, and GPT-J's table of sines and cosines (angle at position 1).
    """
    shared: tuple[float, ...] | None = None
    by_type: dict[str, tuple[float, ...]] = {}
    by_layer: dict[int, tuple[float, ...]] = {}
    source = ""
    for name, module in hf_model.named_modules():
        if "rotary" not in type(module).__name__.lower():
            continue
        m = _LAYER_RE.search(f".{name}.")
        for bname, buf in module.named_buffers(recurse=False):
            values: tuple[float, ...] | None = None
            if bname == "inv_freq" or (bname.endswith("_inv_freq") and not bname.endswith("original_inv_freq")):
                values = tuple(float(x) for x in buf.detach().double().flatten())
            elif bname == "embed_positions" and buf.dim() == 2 and buf.shape[0] > 1:
                half = buf.shape[1] // 2  # [positions, sin | cos]
                row = buf[1].detach().double()
                values = tuple(float(x) for x in torch.atan2(row[:half], row[half:]))
            if values is None:
                continue
            source = f"{type(module).__name__}.{bname}"
            if m is not None:
                by_layer[int(m.group(1))] = values
            elif bname.endswith("_inv_freq") and bname != "inv_freq":
                by_type[bname.removesuffix("_inv_freq")] = values
            else:
                shared = values
    if by_layer and len(by_layer) == n_layers:
        return [by_layer[i] for i in range(n_layers)], source
    if by_type:
        if layer_types is None or any(t not in by_type for t in layer_types):
            return None, f"per-layer-type frequencies {sorted(by_type)} but layer types {layer_types}"
        return [by_type[t] for t in layer_types], source
    if shared is not None:
        return [shared] * n_layers, source
    return None, "no rotary embedding buffers found"


def rope_frequencies(
    hf_config: Any, n_layers: int, base: float, dims: int, hf_model: Any = None, bridge_cfg: Any = None
) -> RopeFrequencies:
    """The model's frequencies when it can be read, else the unscaled ``base``/``dims`` formula (named as such)."""
    layout = pair_layout(hf_config, bridge_cfg)
    layer_types = getattr(hf_config, "layer_types", None)
    if hf_model is not None:
        freqs, source = read_inv_freq(hf_model, n_layers, list(layer_types) if layer_types is not None else None)
        if freqs is not None:
            return RopeFrequencies(tuple(freqs), layout, source)
    return RopeFrequencies(tuple([_config_inv_freq(base, dims)] * n_layers), layout, "config (rope_theta, unscaled)")
