"""`Atlas`: the one Python entry point that runs the head atlas on a model into a results store.

Five lines from a notebook::

    from workbench import Atlas

    result = Atlas("organism-4l", families=["sinks", "retrieval"], store="wb-results").run()
    result.scores().head()                # one row per (family, metric, head)
    result.artefacts("retrieval")["kv_budget_curve"]

The CLI (`workbench atlas`), `make demo`, the notebooks, the dashboard's jobs, the Ray executor and the
benchmarks all run an atlas through this class, so every path records the same run. It resolves the
options (keyword arguments, or a YAML/TOML config file, over the defaults), loads the model, checks
every family's inputs before any work (`workbench.atlas.preflight`), then hands the parts to an
executor (this process, or Ray actors) and commits each to the store as it comes back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from workbench.atlas.options import RESULT_KEYS, AtlasOptions, resolve_options
from workbench.atlas.preflight import preflight
from workbench.atlas.runner import run_families, start_run
from workbench.errors import WorkbenchError
from workbench.families.base import Family, InputProblem, config_to_dict, make_config
from workbench.families.context import RunContext
from workbench.families.registry import build_family, family_class
from workbench.store.runs import RunWriter, model_identity
from workbench.store.store import RunInfo, Store, ensure_writable

if TYPE_CHECKING:
    import pandas as pd

    from workbench.atlas.plan import Plan
    from workbench.executors.base import Executor
    from workbench.models.model import Model

#: options of a family that name its inputs: a resumed run may be given them when they are missing
INPUT_OPTIONS = {"safety": ("harmful_file", "benign_file", "prompt_field", "template"), "retrieval": ("haystack",)}


class AtlasProgress(Protocol):
    """Progress hooks an atlas calls (the CLI draws rich bars or log lines; `SilentProgress` does nothing)."""

    def started(self, run_id: str, message: str) -> None:
        """The run exists in the store (new or resumed); ``message`` says what runs where."""

    def on_part(self, family: str, part: str, done: int, total: int) -> None:
        """A part starts; ``done`` parts of ``total`` are finished."""

    def step(self, label: str, done: int, total: int) -> None:
        """A family's long step advanced (per prompt, per head ...)."""

    def finished(self, result: AtlasResult) -> None:
        """Every part is done and the run is complete."""


class SilentProgress:
    """The default: no output."""

    def started(self, run_id: str, message: str) -> None:
        pass

    def on_part(self, family: str, part: str, done: int, total: int) -> None:
        pass

    def step(self, label: str, done: int, total: int) -> None:
        pass

    def finished(self, result: AtlasResult) -> None:
        pass


@dataclass
class AtlasResult:
    """A run in a results store: its head scores as a table, its artefacts and summaries."""

    run_id: str
    root: Path
    model: str
    families: list[str]
    warnings: list[str] = field(default_factory=list)
    #: the findings and report views (`workbench.report.notebook`, which installs itself here on import:
    #: the report layer is above this one, so this module cannot import it)
    views: ClassVar[Any] = None

    def _views(self) -> Any:
        if AtlasResult.views is None:
            raise WorkbenchError(
                "the findings and report views of AtlasResult are not loaded",
                "import workbench.report.notebook (`from workbench import Atlas` does it for you)",
            )
        return AtlasResult.views

    def findings(self) -> pd.DataFrame:
        """The role table (as in the report and at the end of `workbench atlas`): one row per head a family
        claims, with its role, score, causal effect, n and p-value, and verdict; confirmed heads first."""
        return self._views().findings_frame(self)

    def report(self, path: str | Path | None = None) -> Path:
        """Write the run's HTML report (as `workbench report`) to ``path`` (a .html file or a folder; default
        the run's folder in the store) and return the HTML file's path."""
        return self._views().write_result_report(self, path)

    def _repr_html_(self) -> str:
        """How a notebook shows the result: the run, the findings' headlines, warnings and role table."""
        return self._views().result_html(self)

    def _store(self) -> Store:
        return Store.open(self.root)

    def info(self) -> RunInfo:
        with self._store() as store:
            return store.run(self.run_id)

    @property
    def status(self) -> str:
        return self.info().status

    def scores(self, family: str | None = None) -> pd.DataFrame:
        """One row per (family, metric, layer, head): columns family, metric, layer, head, head_name
        ("L2H3") and value (NaN where a family did not score a head)."""
        import pandas as pd

        with self._store() as store:
            per_family = store.scores(self.run_id, family)
        rows = [
            (fam, metric, layer, head, f"L{layer}H{head}", float(values[layer, head]))
            for fam, hs in per_family.items()
            for metric, values in hs.metrics.items()
            for layer in range(hs.n_layers)
            for head in range(hs.n_heads)
        ]
        return pd.DataFrame(rows, columns=["family", "metric", "layer", "head", "head_name", "value"])

    def table(self, family: str) -> pd.DataFrame:
        """One row per head (index "L2H3"), one column per metric of ``family``."""
        long = self.scores(family)
        wide = long.pivot(index=["layer", "head", "head_name"], columns="metric", values="value")
        return wide.reset_index(level=["layer", "head"]).rename_axis(columns=None)

    def artefacts(self, family: str) -> dict[str, Any]:
        with self._store() as store:
            return store.artefacts(self.run_id, family)

    def summary(self, family: str) -> dict[str, Any]:
        return self._family(family).summary

    def members(self, family: str) -> list[str]:
        """The heads the family claims, as "L2H3"."""
        return [f"L{layer}H{head}" for layer, head in self._family(family).members]

    def _family(self, family: str) -> Any:
        with self._store() as store:
            for info in store.families(self.run_id):
                if info.family == family:
                    return info
        raise WorkbenchError(f"run {self.run_id} has no family {family!r}", f"its families: {', '.join(self.families)}")


class Atlas:
    """Run (or resume) the head atlas of one model into one results store.

    ``model``: a loaded `Model`, a spec (shipped name, local folder, cached hub id), or a model in memory:
    a transformers ``PreTrainedModel`` (``tokenizer=`` unless its ``name_or_path`` is a folder or cached
    hub id) or a TransformerLens ``TransformerBridge`` (see `workbench.models.load_model`). ``families``:
    names, a comma-separated string, or "all". ``store``: a `Store`, a results folder, or None
    ($WORKBENCH_RESULTS, else ./wb-results). ``executor``: "local", "ray", or an executor object.
    ``options``: per-family options, ``{"sinks": {"eps": 0.2}}``. ``prompts``: a prompt file or a
    list of texts (default: each family's registered set for the model). ``config``: a YAML/TOML
    file holding any of these (keyword arguments win).
    """

    def __init__(
        self,
        model: Model | str | Path | Any | None = None,
        families: str | Sequence[str] | None = None,
        store: Store | str | Path | None = None,
        executor: Executor | str | None = None,
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        prompts: str | Path | Sequence[str] | None = None,
        prompt_field: str | None = None,
        n_prompts: int | None = None,
        max_tokens: int | None = None,
        context: int | None = None,
        seed: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        ray_address: str | None = None,
        ray_workers: int | None = None,
        config: str | Path | None = None,
        set_options: Sequence[str] = (),
        progress: AtlasProgress | None = None,
        budget_minutes: float | None = None,
        tokenizer: Any = None,
    ) -> None:
        self._model: Model | None = None
        if model is not None and not isinstance(model, (str, Path)):
            from workbench.models import load_model

            # a Model as it is; a transformers model or a TransformerBridge wrapped now (no file is read,
            # the weights stay where they are unless device= / dtype= are given); anything else refused
            self._model = load_model(model, device=device, dtype=dtype, tokenizer=tokenizer)
        elif tokenizer is not None:
            raise WorkbenchError("tokenizer= is for a model given in memory", "a spec brings its own tokenizer")
        spec = None if model is None else (str(model) if self._model is None else self._model.name)
        self._texts = list(prompts) if prompts is not None and not isinstance(prompts, (str, Path)) else None
        self._executor = executor if executor is not None and not isinstance(executor, str) else None
        root = store.root if isinstance(store, Store) else store
        cli = {
            "model": spec,
            "families": None if families is None else (families if isinstance(families, str) else list(families)),
            "results": None if root is None else str(root),
            "prompts": None if self._texts is not None or prompts is None else str(prompts),
            "prompt_field": prompt_field,
            "n_prompts": n_prompts,
            "max_tokens": max_tokens,
            "context": context,
            "seed": seed,
            "device": device,
            "dtype": dtype,
            "executor": None if executor is None or self._executor is not None else executor,
            "ray_address": ray_address,
            "ray_workers": ray_workers,
        }
        fam_opts = {k: dict(v) for k, v in (options or {}).items()}
        self.opts: AtlasOptions = resolve_options(cli, config, list(set_options), fam_opts)
        if self._model is not None and "dtype" not in self.opts.given:
            self.opts.dtype = str(self._model.dtype).removeprefix("torch.")  # the run records the model's own
        self.progress: AtlasProgress = progress or SilentProgress()
        self.warnings: list[InputProblem] = []
        if budget_minutes is not None and not budget_minutes > 0:
            raise WorkbenchError(f"budget_minutes must be > 0, got {budget_minutes}", "give the minutes the run may take")
        self.budget_minutes = budget_minutes

    # -- pieces ------------------------------------------------------------------------------------

    @property
    def model(self) -> Model:
        """The model, loaded on first use (on CPU when Ray workers do the computing)."""
        if self._model is None:
            from workbench.models import load_model

            if self.opts.model is None:
                raise WorkbenchError(
                    "no model given", "name one: Atlas(MODEL) / workbench atlas MODEL (or `model:` in the config file)"
                )
            device = "cpu" if self.opts.executor == "ray" and self._executor is None else self.opts.device
            self._model = load_model(self.opts.model, device=device, dtype=self.opts.dtype)
        return self._model

    def _texts_from_file(self) -> list[str] | None:
        if self._texts is not None:
            if not self._texts or not all(isinstance(t, str) for t in self._texts):
                raise WorkbenchError("prompts must be a non-empty list of strings, or a prompt file", "give texts or a path")
            return self._texts
        if self.opts.prompts is None:
            return None
        from workbench.data.prompts import load_prompts

        return load_prompts(self.opts.prompts, self.opts.prompt_field)

    def _families(self) -> dict[str, Family]:
        return {name: build_family(name, self.opts.family_options.get(name)) for name in self.opts.families}

    def _context(self, texts: list[str] | None, device: str) -> RunContext:
        o = self.opts
        return RunContext(
            seed=o.seed,
            max_tokens=o.max_tokens,
            context=o.context,
            n_prompts=o.n_prompts,
            device=device,
            dtype=o.dtype,
            prompts=texts,
            prompt_file=o.prompts,
            family_options=o.family_options,
            quiet=True,
        )

    def _make_executor(self) -> tuple[Executor, bool]:
        if self._executor is not None:
            return self._executor, False
        from workbench.executors import make_executor

        o = self.opts
        return make_executor(o.executor, o.ray_address, o.ray_workers, o.device, True), True

    def preflight(self) -> list[InputProblem]:
        """Check every input of every family now (raises `PreflightError`); returns the warnings."""
        texts = self._texts_from_file()
        warnings = preflight(
            self.model,
            self._families(),
            self._context(texts, str(self.model.device)),
            explicit_max_tokens="max_tokens" in self.opts.given,
        )
        return warnings + (self.budget_problems(self.plan()) if self.budget_minutes is not None else [])

    def plan(self, measure_tokens: int = 256) -> Plan:
        """Every family's passes and their estimated time and peak memory on the model's device, before
        any work. The cost of a pass is fitted from three short recorded passes on that device
        (`workbench.atlas.plan.measure_costs`), not from a constant."""
        from workbench.atlas.plan import Workload, geometry_of, measure_costs, plan_atlas

        o = self.opts
        model = self.model
        cost, notes = measure_costs(model, max(2, min(measure_tokens, o.max_tokens)))
        work = Workload(n_tokens=o.max_tokens, n_prompts=o.n_prompts, n_ctx=int(getattr(model.geometry, "n_ctx", 0) or 0))
        return plan_atlas(
            geometry_of(model), list(o.families), cost, notes, options=o.family_options, work=work, device=str(model.device)
        )

    def budget_problems(self, plan: Plan) -> list[InputProblem]:
        """A warning when the plan is over ``budget_minutes`` (nothing when no budget was given)."""
        if self.budget_minutes is None or plan.seconds <= self.budget_minutes * 60:
            return []
        worst = max(plan.steps, key=lambda s: s.seconds)
        return [
            InputProblem(
                "run",
                f"the plan estimates {plan.seconds / 60:.1f} min, over the budget of {self.budget_minutes:g} min "
                f"(largest step: {worst.family} {worst.step}, {worst.seconds / 60:.1f} min)",
                "fewer --n-prompts, a shorter --max-tokens, fewer --families, or a larger budget; `workbench plan` shows every step",
                fatal=False,
            )
        ]

    # -- a new run ---------------------------------------------------------------------------------

    def run(self, run_id: str | None = None) -> AtlasResult:
        """Check the inputs, record the plan in the store, compute every part, return the run."""
        o = self.opts
        texts = self._texts_from_file()
        fams = self._families()
        ensure_writable(o.results)
        executor, owned = self._make_executor()  # a missing optional dependency (Ray) fails before the model loads
        try:
            model = self.model
            if model.source.kind == "memory" and o.executor == "ray" and self._executor is None:
                raise WorkbenchError(
                    f"the Ray executor loads the model on each worker, and {model.name!r} was given in memory",
                    "save it (model.save_pretrained(FOLDER), with its tokenizer) and give the folder, or use the local executor",
                )
            ctx = self._context(texts, o.device)
            self.warnings = preflight(model, fams, ctx, explicit_max_tokens="max_tokens" in o.given)
            if self.budget_minutes is not None:
                self.warnings += self.budget_problems(self.plan())
            config = {
                "model": o.model,
                "families": o.families,
                "results": str(o.results.resolve()),
                "prompts": None if o.prompts is None else str(o.prompts.resolve()),
                "prompts_sha256": None if texts is None else hashlib.sha256(json.dumps(texts).encode()).hexdigest(),
                "n_prompts": o.n_prompts,
                "max_tokens": o.max_tokens,
                "seed": o.seed,
                "device": executor.worker_device()
                if hasattr(executor, "worker_device") and o.executor == "ray"
                else str(model.device),
                "dtype": str(model.dtype).removeprefix("torch."),
                "family_options": {n: config_to_dict(f.config) for n, f in fams.items()},
                "warnings": [str(w) for w in self.warnings],
            }
            with Store.open(o.results, write=True) as store:
                writer = start_run(store, model, fams, ctx, config, run_id)
                where = f"Ray workers ({config['device']})" if o.executor == "ray" else str(model.device)
                over = [str(w) for w in self.warnings if "over the budget" in w.message]
                self.progress.started(
                    writer.run_id, f"{model.name} on {where}, families {', '.join(fams)}" + "".join(f"; {w}" for w in over)
                )
                self._execute(writer, model, fams, ctx, executor)
        finally:
            if owned:
                executor.close()
        return self._finish(writer.run_id, list(fams))

    def _execute(self, writer: RunWriter, model: Model, fams: dict[str, Family], ctx: RunContext, executor: Executor) -> None:
        ctx.progress = self.progress.step
        ctx.quiet = False
        run_families(writer, model, fams, ctx, on_part=self.progress.on_part, executor=executor)

    def _finish(self, run_id: str, families: list[str]) -> AtlasResult:
        result = AtlasResult(
            run_id, self.opts.results, self.opts.model or self.model.name, families, [str(w) for w in self.warnings]
        )
        self.progress.finished(result)
        return result

    # -- resuming ----------------------------------------------------------------------------------

    def resume(self, run_id: str | None = None) -> AtlasResult:
        """Continue an interrupted or failed run: ``run_id`` (or a prefix), else the latest of this
        atlas's model, else the latest in the store. Finished parts are kept; options that change the
        numbers must equal the recorded ones. Input options (e.g. ``safety.harmful_file``) may be given
        for a family none of whose parts ran, so a run stopped by a missing input can be completed."""
        o = self.opts
        executor, owned = self._make_executor()
        try:
            with Store.open(o.results, write=True) as store:
                info = pick_run(store, run_id if run_id is not None else o.model)
                if info.status == "complete":
                    raise WorkbenchError(f"run {info.run_id} is already complete", "start a new run instead of resuming")
                if info.status == "running":
                    raise WorkbenchError(
                        f"run {info.run_id} is still running (process {info.pid} on {info.host})", "wait for it or stop it first"
                    )
                recorded = info.config
                for key in RESULT_KEYS:
                    if key in o.given and getattr(o, key) != recorded.get(key):
                        raise WorkbenchError(
                            f"{key} = {getattr(o, key)!r} differs from run {info.run_id}, which was started with {key} = {recorded.get(key)!r}",
                            "drop the option to resume with the recorded one, or start a new run",
                        )
                if info.model_kind == "memory" and (self._model is None or self._model.name != info.model):
                    raise WorkbenchError(
                        f"run {info.run_id} is of the model {info.model!r}, which was given in memory",
                        "give the same model again: Atlas(model, store=...).resume()",
                    )
                if self._model is None or self._model.name != info.model:
                    from workbench.models import load_model

                    device = o.device if "device" in o.given else "auto"
                    device = "cpu" if o.executor == "ray" and self._executor is None else device
                    self._model = load_model(info.model, device=device, dtype=recorded.get("dtype", "float32"))
                model = self._model
                now = model_identity(model)
                if info.model_hash and now["hash"] != info.model_hash and not _same_weights(model, info.model_hash):
                    raise WorkbenchError(
                        f"model {info.model!r} changed since run {info.run_id} started "
                        f"(fingerprint {now['hash'][:12]} vs {info.model_hash[:12]})",
                        "resume with the same weights, or start a new run",
                    )
                writer_probe = RunWriter(store, info.run_id)
                stored = {f.family: f.options for f in store.families(info.run_id)}
                changed = self._input_changes(info, stored, writer_probe)
                texts = None
                prompts_file = store.run_dir(info.run_id) / "prompts.json"
                if prompts_file.is_file():
                    texts = json.loads(prompts_file.read_text(encoding="utf-8"))
                fams: dict[str, Family] = {}
                for name in info.families:
                    cls = family_class(name)
                    fams[name] = cls(make_config(cls.config_class, {**stored.get(name, {}), **changed.get(name, {})}, name))
                ctx = RunContext(
                    seed=recorded.get("seed", 0),
                    max_tokens=recorded.get("max_tokens", 256),
                    n_prompts=recorded.get("n_prompts"),
                    device=str(model.device),
                    dtype=recorded.get("dtype", "float32"),
                    prompts=texts,
                    family_options={n: {**stored.get(n, {}), **changed.get(n, {})} for n in info.families},
                    quiet=True,
                )
                pending = {n: f for n, f in fams.items() if not writer_probe.family_done(n)}
                self.warnings = preflight(model, pending, ctx)
                writer = RunWriter.claim(store, info.run_id)
                for name in changed:
                    writer.set_family_options(name, config_to_dict(fams[name].config))
                self.progress.started(info.run_id, f"resuming: {info.parts_done}/{info.parts_total} parts already done")
                self._execute(writer, model, fams, ctx, executor)
        finally:
            if owned:
                executor.close()
        self.opts.model = info.model
        return self._finish(info.run_id, list(info.families))

    def _input_changes(self, info: RunInfo, stored: dict[str, dict[str, Any]], writer: RunWriter) -> dict[str, dict[str, Any]]:
        """Options given to a resume: only a family's input options, only before any of its parts ran."""
        changed: dict[str, dict[str, Any]] = {}
        for name, given in self.opts.family_options.items():
            if name not in info.families:
                raise WorkbenchError(f"run {info.run_id} has no family {name!r}", f"its families: {', '.join(info.families)}")
            for key, value in given.items():
                if stored.get(name, {}).get(key) == value:
                    continue
                allowed = INPUT_OPTIONS.get(name, ())
                if key not in allowed:
                    raise WorkbenchError(
                        f"option {name}.{key} cannot change on a resumed run (it changes the numbers)",
                        f"run {info.run_id} keeps the options it was started with; only inputs ({', '.join(f'{name}.{k}' for k in allowed) or 'none'}) may be given",
                    )
                if any(status == "done" for _, status in writer.parts(name)):
                    raise WorkbenchError(
                        f"family {name!r} of run {info.run_id} already finished parts with its recorded inputs",
                        "start a new run to use other inputs",
                    )
                changed.setdefault(name, {})[key] = value
        return changed


def _same_weights(model: Model, recorded: str) -> bool:
    """Whether ``model``'s weights have the fingerprint a run recorded for a model given in memory (a run of
    an in-memory model loaded from a folder may be resumed from that folder, and the other way round)."""
    from workbench.models.loading import weights_fingerprint
    from workbench.store.runs import model_fingerprint

    if model.source.kind == "memory":
        folder = getattr(model.hf_model, "name_or_path", None)
        return bool(folder) and model_fingerprint(folder) == recorded
    return weights_fingerprint(model.hf_model) == recorded


def pick_run(store: Store, ref: str | None) -> RunInfo:
    """The run to resume: by id or id prefix, else the latest resumable run of a model spec, else the latest resumable."""
    resumable = ("interrupted", "failed")
    runs = store.runs()
    if ref is not None:
        exact = [r for r in runs if r.run_id == ref] or [r for r in runs if r.run_id.startswith(ref)]
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            raise WorkbenchError(f"run id prefix {ref!r} matches {len(exact)} runs", "give more of the run id")
        as_path = Path(ref).expanduser()
        folder = str(as_path.resolve()) if as_path.exists() else None
        by_model = [r for r in runs if r.model in (ref, folder) and r.status in resumable]
        if not by_model:
            raise WorkbenchError(
                f"no interrupted run of {ref!r} (and no run with that id) in {str(store.root)!r}",
                "list runs with `workbench runs`; start a new run without --resume",
            )
        return by_model[0]
    pending = [r for r in runs if r.status in resumable]
    if not pending:
        raise WorkbenchError(f"no interrupted run in {str(store.root)!r}", "start a new run without --resume")
    return pending[0]
