"""`workbench info MODEL`: load a model and print its head geometry."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from workbench.cli.common import DeviceOpt, DtypeOpt, console


def _attention_summary(loaded) -> str:
    """Per-layer masking/score features and whether the instrumented recorder implements them."""
    from workbench.errors import WorkbenchError
    from workbench.record.patch import check_instrumentable

    try:
        specs = check_instrumentable(loaded.bridge)
    except WorkbenchError as exc:
        return f"instrumented recorder: not supported ({exc.message}); eager backend only"
    kinds: dict[str, list[int]] = {}
    for layer, spec in enumerate(specs):
        kinds.setdefault(spec.describe(), []).append(layer)
    parts = [f"{desc} (layers {', '.join(map(str, layers))})" if len(kinds) > 1 else desc for desc, layers in kinds.items()]
    return "; ".join(parts) + "; instrumented recorder supported (self-checked on first use)"


def info(
    model: str = typer.Argument(..., help="shipped model name, local Hugging Face folder, or cached hub id"),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    as_json: bool = typer.Option(False, "--json", help="print the geometry as JSON"),
) -> None:
    """Print a model's head geometry: layers, heads, KV heads, head dim, positions, BOS."""
    from workbench.models import load_model

    loaded = load_model(model, device=device, dtype=dtype)
    geo = loaded.geometry
    if as_json:
        payload = {
            "model": loaded.name,
            "path": str(loaded.source.path),
            "kind": loaded.source.kind,
            **geo.to_dict(),
            "attention_kind": geo.attention_kind,
        }
        print(json.dumps(payload, indent=2))
        return
    table = Table(title=f"{loaded.name}  ({loaded.source.kind}: {loaded.source.path})", show_header=False)
    rows = [
        ("architecture", geo.architecture),
        ("layers", str(geo.n_layers)),
        ("query heads per layer", str(geo.n_heads)),
        (
            "KV heads per layer",
            f"{geo.n_kv_heads}" + (f"  ({geo.kv_sharing()})" if geo.kv_sharing() else ""),
        ),
        ("head -> KV head", " ".join(f"{h}->{kv}" for h, kv in enumerate(geo.head_to_kv))),
        ("head dim", str(geo.d_head)),
        ("model dim", str(geo.d_model)),
        ("vocabulary", str(geo.vocab_size)),
        ("context length", str(geo.n_ctx)),
        ("positions", geo.positional.describe()),
        ("attention", _attention_summary(loaded)),
        (
            "BOS",
            f"{geo.bos.token!r} (id {geo.bos.token_id}), "
            + ("prepended by the tokenizer" if geo.bos.prepends else "not prepended"),
        ),
        ("device / dtype", f"{loaded.device} / {str(loaded.dtype).removeprefix('torch.')}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
