"""`AttentionRecorder`: record per-head attention statistics while the model runs.

    with AttentionRecorder(model) as rec:
        logits = model.logits(tokens)
    record = rec.last            # AttentionRecord: per layer, per head, per query/key statistics

The instrumented backends (triton, torch) never build an N x N tensor, so this works at long
context; the eager backend keeps the bridge's own attention and can keep full patterns.
The model is restored on exit, also when the forward raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.kernels import AttentionStats, attention_with_stats
from workbench.models.attention_spec import LayerAttention
from workbench.models.hooks import temporary_hooks
from workbench.models.model import Model
from workbench.record.config import RecorderConfig
from workbench.record.eager import stats_from_pattern
from workbench.record.patch import instrumented_attention, layer_specs, plain_core
from workbench.record.record import AttentionRecord
from workbench.record.self_check import ensure_checked

#: ``on_layer(layer, stats, q, k, scale)``: called inside the pass as each recorded layer's attention
#: finishes, with its statistics and the post-RoPE queries and keys still on the device
LayerCallback = Callable[[int, AttentionStats, torch.Tensor, torch.Tensor, float], None]


class AttentionRecorder:
    def __init__(
        self, model: Model, config: RecorderConfig | None = None, on_layer: LayerCallback | None = None, **overrides: Any
    ) -> None:
        """``on_layer`` lets an analysis use each layer's queries and keys while the pass runs and keep
        only what it computes from them: its host memory then holds one layer's q/k, not every layer's
        (``capture_qk`` keeps all of them, O(L x N x d))."""
        base = config or RecorderConfig()
        if overrides:
            base = RecorderConfig(**{**base.__dict__, **overrides})
        self.on_layer = on_layer
        self.model = model
        self.config = base
        self.backend = base.resolved_backend(model.device.type)
        n_layers = model.geometry.n_layers
        if base.layers is not None:
            bad = [layer for layer in base.layers if not 0 <= layer < n_layers]
            if bad:
                raise WorkbenchError(f"layers {bad} out of range: the model has {n_layers} layers", f"use 0..{n_layers - 1}")
        if self.backend == "eager" and on_layer is not None:
            raise WorkbenchError("on_layer needs an instrumented backend", "use backend='torch' or 'triton'")
        if self.backend == "eager" and base.capture_qk:
            raise WorkbenchError("capture_qk needs an instrumented backend", "use backend='torch' or 'triton'")
        self.records: list[AttentionRecord] = []
        self._pending: dict[int, AttentionStats] = {}
        self._patterns: dict[int, torch.Tensor] = {}
        self._qk: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}
        self._stack: contextlib.ExitStack | None = None
        self._eager_scores: dict[int, torch.Tensor] = {}
        self._eager_patterns: dict[int, torch.Tensor] = {}
        self._eager_specs: list[LayerAttention] = []
        self._tokens_seen: torch.Tensor | None = None

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> AttentionRecorder:
        stack = contextlib.ExitStack()
        try:
            stack.callback(self._finish_record)
            if self.backend == "eager":
                stack.enter_context(temporary_hooks(self._eager_points()))
            else:
                if self.config.self_check:
                    self._self_check()
                stack.enter_context(
                    instrumented_attention(self.model.bridge, self._core, list(range(self.model.geometry.n_layers)))
                )
            stack.enter_context(self._token_capture())
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    @property
    def last(self) -> AttentionRecord:
        self._finish_record()
        if not self.records:
            raise WorkbenchError("nothing was recorded", "run the model inside the `with AttentionRecorder(...)` block")
        return self.records[-1]

    # -- internals ---------------------------------------------------------------------
    def _wanted(self, layer: int) -> bool:
        return self.config.layers is None or layer in self.config.layers

    @contextlib.contextmanager
    def _token_capture(self):
        """Each embedding call (one per forward pass) starts a new record; keep its input ids."""

        def pre_hook(module: Any, args: tuple, kwargs: dict) -> None:
            self._finish_record()
            ids = args[0] if args else kwargs.get("input_ids", kwargs.get("input"))
            if isinstance(ids, torch.Tensor):
                if self.backend == "eager" and ids.shape[-1] > self.config.eager_max_tokens:
                    raise WorkbenchError(
                        f"the eager backend builds N x N patterns and is limited to {self.config.eager_max_tokens} tokens; "
                        f"this input has {ids.shape[-1]}",
                        "use backend='torch' (CPU) or 'triton' (GPU) for long prompts",
                    )
                self._tokens_seen = ids.detach().cpu()

        handle = self.model.bridge.embed.register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def _finish_record(self) -> None:
        self._flush_eager()
        if self._tokens_seen is None and not self._pending:
            return
        n_layers = self.model.geometry.n_layers
        layers = [self._pending.get(i) for i in range(n_layers)]
        tokens = self._tokens_seen if self._tokens_seen is not None else torch.empty(0, dtype=torch.long)
        self.records.append(
            AttentionRecord(tokens=tokens, layers=layers, backend=self.backend, patterns=dict(self._patterns), qk=dict(self._qk))
        )
        self._pending, self._patterns, self._qk, self._tokens_seen = {}, {}, {}, None

    def _self_check(self) -> None:
        """Refuse to record if the instrumented core disagrees with the model's own attention."""
        backend = "torch" if self.backend == "torch" else "triton"
        core = plain_core(backend, self.config.chunk)
        ensure_checked(self.model, backend, lambda: instrumented_attention(self.model.bridge, core))

    def _core(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scale: float,
        spec: LayerAttention,
        q_offset: int = 0,
    ) -> torch.Tensor:
        cfg = self.config
        wanted = self._wanted(layer)
        if q.dtype != v.dtype or k.dtype != v.dtype:  # a norm that upcasts q/k (OLMo 2 in half precision)
            q, k = q.to(v.dtype), k.to(v.dtype)
        if not torch.isfinite(q).all() or not torch.isfinite(k).all():
            raise WorkbenchError(
                f"layer {layer}: queries or keys contain NaN/inf before attention",
                "check the model weights and dtype (float16 overflow?); try --dtype float32",
            )
        # the Triton kernels do not implement per-head edits yet: edited layers take the chunked torch path
        backend = "torch" if self.backend == "torch" or spec.edits else "triton"
        out, stats = attention_with_stats(
            q,
            k,
            v,
            scale=scale,
            causal=True,
            q_offset=q_offset,
            first_k=cfg.first_k,
            window=cfg.window,
            columns=cfg.columns and wanted,
            pool=cfg.pool,
            backend=backend,
            chunk=cfg.chunk,
            sliding_window=spec.sliding_window,
            softcap=spec.softcap,
            edits=spec.edits,
        )
        if wanted:
            self._pending[layer] = self._keep(stats)
            if cfg.capture_qk:
                self._qk[layer] = (q.detach().float().cpu(), k.detach().float().cpu(), scale)
            if self.on_layer is not None:
                self.on_layer(layer, stats, q.detach(), k.detach(), scale)
        return out

    def _keep(self, stats: AttentionStats) -> AttentionStats:
        """What the record keeps of one layer's statistics, on the host (``pooled=False``: no pooled map)."""
        if not self.config.pooled and stats.pooled is not None:
            stats = dataclasses.replace(stats, pooled=None)
        return stats.cpu() if hasattr(stats, "cpu") else stats

    def _eager_points(self) -> list[tuple[Any, Any]]:
        """hook_attn_scores / hook_pattern of every wanted layer, in whichever order the bridge fires them.

        Bridges that re-implement attention fire the pre-softmax scores, then the pattern. Bridges that
        delegate to the Hugging Face module (GPT-J) fire the pattern first and then hook_attn_scores with
        the *same post-softmax* tensor: there are no scores to take an LSE from, so the record's ``lse``
        is NaN for those layers (every other statistic comes from the pattern and is exact).
        """
        try:
            specs = layer_specs(self.model.bridge)
        except WorkbenchError:
            # Layer types the core does not know (e.g. chunked attention): the statistics still come from
            # the bridge's exact pattern; only col_count/col_mean, which need the mask, count every earlier key.
            specs = [LayerAttention()] * self.model.geometry.n_layers
        self._eager_specs = specs
        scores_box = self._eager_scores
        pattern_box = self._eager_patterns
        points = []
        for layer, block in enumerate(self.model.bridge.blocks):
            if not self._wanted(layer):
                continue

            def on_scores(t: torch.Tensor, hook: Any, layer: int = layer) -> None:
                if layer in pattern_box:  # post-hoc firing: t is the pattern again
                    self._eager_stats(layer, None, pattern_box.pop(layer), specs[layer])
                else:
                    scores_box[layer] = t.detach()

            def on_pattern(t: torch.Tensor, hook: Any, layer: int = layer) -> None:
                if layer in scores_box:
                    self._eager_stats(layer, scores_box.pop(layer), t.detach(), specs[layer])
                else:
                    pattern_box[layer] = t.detach()

            points.append((block.attn.hook_attn_scores, on_scores))
            points.append((block.attn.hook_pattern, on_pattern))
        return points

    def _eager_stats(self, layer: int, scores: torch.Tensor | None, pattern: torch.Tensor, spec: LayerAttention) -> None:
        cfg = self.config
        stats = stats_from_pattern(
            scores,
            pattern,
            first_k=cfg.first_k,
            window=cfg.window,
            columns=cfg.columns,
            pool=cfg.pool,
            sliding_window=spec.sliding_window,
            softcap=spec.softcap,
        )
        self._pending[layer] = self._keep(stats)
        if cfg.keep_patterns:
            self._patterns[layer] = pattern.float().cpu()

    def _flush_eager(self) -> None:
        """Patterns whose bridge never fired hook_attn_scores: statistics without an LSE."""
        for layer in list(self._eager_patterns):
            self._eager_stats(layer, None, self._eager_patterns.pop(layer), self._eager_specs[layer])
        self._eager_scores.clear()


def record_attention(model: Model, tokens: torch.Tensor, config: RecorderConfig | None = None, **overrides: Any):
    """One recorded forward pass: returns (logits, AttentionRecord)."""
    with AttentionRecorder(model, config, **overrides) as rec, torch.no_grad():
        logits = model.logits(tokens)
    return logits, rec.last
