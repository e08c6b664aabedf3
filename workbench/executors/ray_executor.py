"""The Ray executor: the parts of a run computed by Ray actors on one machine or a cluster.

Each actor (`PartWorker`) loads the run's model once (`ModelRef`: recorded spec, revision,
fingerprint and dtype) and then computes the parts it is given; the driver process keeps the
only store connection and commits each part as soon as it comes back. An actor asks Ray for one
GPU when the cluster has GPUs (and ``--device`` is not ``cpu``), else for CPUs.

Failures: a worker process that dies (killed, out of memory, node lost) is restarted by Ray
(``max_restarts``) and the part it was computing is retried (``max_task_retries``); if an actor
is gone for good, its part goes back to the queue for another actor (``max_requeues`` times). An exception raised by a
family is not retried (the part is deterministic: it would fail again); the parts other actors
already finished are still committed, then the error stops the run, which can be resumed.

Numbers: a part is deterministic given the model, the context and the family config, so it
does not matter which worker computes it. On CPU the stored scores equal a local run's bit for
bit when both use the same number of torch threads (each actor uses ``cpus_per_worker``
threads, 1 by default): some CPU float32 reductions are split by thread count, and a different
split changes the last bits (measured and bounded in tests/executors/test_ray_executor.py).

Ray is an optional dependency: ``pip install 'attention-workbench[ray]'``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError
from workbench.executors.base import RAY_INSTALL_HINT, ModelRef, PartJob, PartOutcome, StartedFn
from workbench.families.base import Family
from workbench.families.context import RunContext

if TYPE_CHECKING:
    from workbench.models.model import Model

#: ``loader(device) -> model``; must pickle (a `ModelRef` by default).
ModelLoader = Callable[[str], Any]


def require_ray() -> Any:
    """Import ray, or say how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise WorkbenchError(
            "the Ray executor needs the optional dependency 'ray', which is not installed", RAY_INSTALL_HINT
        ) from exc
    return ray


class PartWorker:
    """A Ray actor: one copy of the model, computing parts on request.

    A failure to load is kept and raised by `run` (as the family error it is), rather than
    killing the actor, so Ray does not restart it in a loop and the driver reports the cause.
    """

    def __init__(self, loader: ModelLoader, use_gpu: bool, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if use_gpu else "cpu"
        self.label = f"ray:{socket.gethostname()}:{os.getpid()}"
        self.error: BaseException | None = None
        self.model: Model | None = None
        try:
            if use_gpu and not torch.cuda.is_available():
                raise WorkbenchError(
                    f"Ray gave worker {self.label} a GPU, but torch {torch.__version__} there cannot use CUDA",
                    "install a CUDA build of torch on every GPU node, or run with --device cpu",
                )
            self.model = loader(self.device)
        except Exception as exc:
            self.error = exc

    def info(self) -> dict[str, Any]:
        import torch

        return {
            "worker": self.label,
            "pid": os.getpid(),
            "device": self.device,
            "threads": torch.get_num_threads(),
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
        }

    def run(self, families: dict[str, Family], ctx: RunContext, family: str, part: str) -> PartOutcome:
        if self.error is not None:
            raise self.error
        assert self.model is not None  # loaded in __init__, or self.error is set
        ctx = dataclasses.replace(ctx, device=self.device, progress=None)
        t0 = time.perf_counter()
        result = families[family].run_part(self.model, ctx, part)
        return PartOutcome(family, part, result, time.perf_counter() - t0, worker=self.label)


class RayExecutor:
    """Parts on Ray actors. ``address``: as `ray.init` takes it (None: the cluster of RAY_ADDRESS
    or the latest one started on this machine, else a new local instance; "auto"; "ray://host:10001").
    ``workers``: number of actors (default: one per GPU of the cluster, else one per CPU), never
    more than there are parts to run. If Ray is already initialised in this process, it is used
    as it is and left running; an instance this executor started is shut down by `close`."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        device: str = "auto",
        *,
        cpus_per_worker: float = 1,
        threads: int | None = None,
        max_restarts: int = 2,
        max_task_retries: int = 2,
        max_requeues: int = 2,
        loader: ModelLoader | None = None,
        quiet: bool = False,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise WorkbenchError(f"--ray-workers must be at least 1, got {workers}")
        self.address = address
        self.workers = workers
        self.device = device
        self.cpus_per_worker = cpus_per_worker
        self.threads = threads
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.max_requeues = max_requeues
        self.loader = loader
        self.quiet = quiet
        self.init_kwargs = dict(init_kwargs or {})
        self._ray = require_ray()
        self._owns_ray = False
        self._actors: list[Any] = []
        self.workers_used: list[dict[str, Any]] = []  # info() of each actor of the last run
        self.retried: list[PartJob] = []  # jobs put back in the queue after their actor was lost

    # -- connection ----------------------------------------------------------------------------------

    def connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {
            "address": self.address,
            "include_dashboard": False,
            "log_to_driver": not self.quiet,
            "logging_level": "ERROR" if self.quiet else "WARNING",
        }
        kwargs.update(self.init_kwargs)
        # ray.init replaces SIGTERM's handler with sys.exit: keep the caller's (the CLI turns SIGTERM into
        # an interrupt, so the run is marked interrupted and can be resumed, as with the local executor)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main_thread else None
        try:
            ray.init(**kwargs)
            if main_thread and previous is not None:
                signal.signal(signal.SIGTERM, previous)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = self.address or "the default address ($RAY_ADDRESS, else the cluster last started on this machine)"
            raise WorkbenchError(
                f"cannot connect to Ray at {where}: {exc}",
                "start the cluster first (`ray start --head` on the head node) and check --ray-address; with an "
                "explicit address and Ray's token authentication, set RAY_AUTH_MODE=token and give the cluster's token "
                "(RAY_AUTH_TOKEN or ~/.ray/auth_token), or run on the head node with --ray-address auto; "
                "--ray-address local starts a new local Ray instance",
            ) from exc
        self._owns_ray = True

    def use_gpus(self) -> bool:
        """Whether actors ask for a GPU: the cluster has one and the run was not asked for CPU.
        ``--device cuda`` on a cluster without GPUs is an error, not a silent CPU run."""
        self.connect()
        has_gpu = self._ray.cluster_resources().get("GPU", 0) >= 1
        if self.device.startswith("cuda") and not has_gpu:
            raise WorkbenchError(
                f"--device {self.device} was given, but the Ray cluster has no GPU (resources: "
                f"{ {k: v for k, v in self._ray.cluster_resources().items() if k in ('CPU', 'GPU')} })",
                "start the Ray nodes with their GPUs (ray start --num-gpus N), or use --device auto or cpu",
            )
        return not self.device.startswith("cpu") and has_gpu

    def worker_device(self) -> str:
        """The device the workers will compute on (recorded in the run's config)."""
        return "cuda" if self.use_gpus() else "cpu"

    def actor_options(self, use_gpu: bool) -> dict[str, Any]:
        """What each actor asks Ray for, and how it survives a crash."""
        return {
            "num_cpus": self.cpus_per_worker,
            "num_gpus": 1 if use_gpu else 0,
            "max_restarts": self.max_restarts,
            "max_task_retries": self.max_task_retries,
            "scheduling_strategy": "SPREAD",
        }

    def worker_threads(self, use_gpu: bool) -> int | None:
        """torch intra-op threads per actor: ``threads``, else its CPU share on CPU (None: torch's default)."""
        if self.threads is not None:
            return self.threads
        return None if use_gpu else max(1, int(self.cpus_per_worker))

    def n_workers(self, use_gpu: bool, n_jobs: int) -> int:
        resources = self._ray.cluster_resources()
        if self.workers is not None:
            n = self.workers
        elif use_gpu:
            n = int(resources.get("GPU", 1))
        else:
            n = int(resources.get("CPU", 1) // max(self.cpus_per_worker, 1e-9))
        return max(1, min(n, n_jobs))

    # -- running -------------------------------------------------------------------------------------

    def run(
        self,
        model: Model,
        families: dict[str, Family],
        ctx: RunContext,
        jobs: list[PartJob],
        started: StartedFn,
    ) -> Iterator[PartOutcome]:
        if not jobs:
            return
        ray = self._ray
        from ray.exceptions import RayActorError, RayError, RayTaskError

        self._kill_actors()
        use_gpu = self.use_gpus()
        loader = self.loader or ModelRef.from_model(model, ctx.dtype)
        actor_class = ray.remote(PartWorker).options(**self.actor_options(use_gpu))
        threads = self.worker_threads(use_gpu)
        self._actors = [actor_class.remote(loader, use_gpu, threads) for _ in range(self.n_workers(use_gpu, len(jobs)))]
        families_ref = ray.put(families)
        ctx_ref = ray.put(dataclasses.replace(ctx, progress=None))
        queue: deque[PartJob] = deque(jobs)
        idle = list(self._actors)
        in_flight: dict[Any, tuple[PartJob, Any]] = {}
        losses: dict[PartJob, int] = {}
        error: BaseException | None = None
        while in_flight or (queue and error is None):
            while queue and idle and error is None:
                actor, job = idle.pop(0), queue.popleft()
                started(job)
                in_flight[actor.run.remote(families_ref, ctx_ref, job.family, job.part)] = (job, actor)
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            job, actor = in_flight.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except RayTaskError as exc:  # the family raised: deterministic, so not retried
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
                if error is None:
                    error = cause
                idle.append(actor)
                continue
            except RayError as exc:  # the actor is gone for good (restarts used up), or the result was lost
                if isinstance(exc, RayActorError):
                    self._actors = [a for a in self._actors if a is not actor]
                else:
                    idle.append(actor)
                losses[job] = losses.get(job, 0) + 1
                if losses[job] > self.max_requeues or not self._actors:
                    if error is None:
                        error = WorkbenchError(
                            f"Ray worker(s) died while computing {job.family}/{job.part} ({losses[job]} time(s)): {exc}",
                            "check the worker logs (`ray logs`) for out-of-memory kills; resume the run once fixed",
                        )
                    continue
                self.retried.append(job)
                queue.appendleft(job)
                continue
            idle.append(actor)
            yield outcome
        if error is not None:
            raise error
        self.workers_used = ray.get([a.info.remote() for a in self._actors]) if self._actors else []

    def _kill_actors(self) -> None:
        for actor in self._actors:
            with contextlib.suppress(Exception):  # an actor already gone cannot be killed again
                self._ray.kill(actor, no_restart=True)
        self._actors = []

    def close(self) -> None:
        ray = self._ray
        self._kill_actors()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
