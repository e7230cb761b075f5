"""Running an archive's explanations on Ray actors (Ray is an optional extra: ``pip install ...[archive]``).

Each actor is one worker process that loads the model set once and then explains the batches of inputs the
driver sends it, writing every output folder itself (atomically, see :func:`.files.explain_work`) and returning
only the results. The driver keeps every decision: which batch goes where, and what to do when a worker
process dies. Ray is told never to restart an actor or retry a task (``max_restarts=0``,
``max_task_retries=0``): a lost actor is killed for certain, replaced by a new one, and its unfinished inputs
are sent again, one per batch, so that a file that kills its worker takes only itself down; after
:data:`DEATHS_BEFORE_FAILING` deaths it is reported as failed. Each input is therefore in at most one
running task at a time, and each result reaches the driver once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ArchiveError, ExplainerError
from ..options import ExplainOptions
from .cluster import check_cluster
from .files import FileResult, explain_work

#: How many worker processes may die with an input in their batch before it is reported as failed.
DEATHS_BEFORE_FAILING = 3

#: (input file, output folder) for each input the run explains.
Work = Sequence[tuple[Path, Path]]


class ArchiveWorker:
    """One Ray actor: the model set loaded once, on its device, then batch after batch of inputs explained."""

    def __init__(self, models: str | Path | None, options: ExplainOptions, device: str | None) -> None:
        from ..explain.pipeline import Explainer
        from ..modelset import load_model_set

        self.options = options
        self.problem: str | None = None
        self.warning: str | None = None
        try:
            self.explainer = Explainer(load_model_set(models, device))
            self.warning = self.explainer.device_warning
        except ExplainerError as error:  # reported by ready(), so the driver can stop with the sentence
            self.problem = str(error)

    def ready(self) -> tuple[str | None, str | None]:
        """(None once the models are loaded, else the sentence that says why they could not be; the sentence that
        says why they run on the CPU although another device was asked for, or None).
        """
        return self.problem, self.warning

    def explain(self, batch: list[tuple[Path, Path]]) -> list[FileResult]:
        """Explain each (input, output folder) of ``batch`` in one batched engine call; one result each, in order."""
        return explain_work(batch, self.explainer, self.options)


def gpu_wanted(device: str | None, gpus: int) -> bool:
    """Whether each actor reserves a GPU: ``device`` is ``auto`` or names CUDA, and the cluster has ``gpus``
    (without any, the actors run where ``device`` resolves on their node, and say so if that is the CPU).
    """
    return gpus > 0 and device is not None and (device == "auto" or device.startswith("cuda"))


def init_arguments(address: str, device: str | None = None) -> dict[str, Any]:
    """``ray.init`` keywords for ``--ray``: ``local:N`` starts a local Ray instance with N CPUs (so N worker
    processes) and no dashboard, and the GPUs Ray finds only if ``device`` may use one (``auto``, ``cuda...``);
    anything else (``auto``, ``HOST:PORT``, ``ray://...``) names a running cluster.
    """
    if address.startswith("local:"):
        count = address.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--ray local:N needs a whole number of worker processes, at least 1, not {count!r}")
        arguments: dict[str, Any] = {"address": "local", "num_cpus": int(count), "include_dashboard": False}
        return arguments if gpu_wanted(device, 1) else {**arguments, "num_gpus": 0}
    return {"address": address}


def explain_on_ray(
    work: Work,
    options: ExplainOptions,
    *,
    address: str,
    models: str | Path | None,
    device: str | None = None,
    gpus_per_worker: float = 1.0,
    workers: int | None,
    batch_size: int,
    on_worker_lost: Callable[[str], None],
    on_warning: Callable[[str], None] = lambda message: None,
) -> Generator[tuple[int, FileResult], None, None]:
    """Explain ``work`` on Ray and yield (position in ``work``, result) as results land, once per input.

    Connects to (or, for ``local:N``, starts) the cluster ``address`` names, unless this process is already
    connected (:class:`ArchiveError`, at once, if no cluster answers there: :func:`.cluster.check_cluster`), and
    disconnects at the end only if it connected. Each actor loads the models on ``device``
    (:func:`gpu_wanted`: one that asks for a GPU reserves ``gpus_per_worker`` of one per actor, a fraction to share
    a card). ``workers`` defaults to as many actors as the cluster's GPUs hold when the actors want them, else one
    per CPU. ``on_worker_lost`` is told, in a sentence, of each
    worker process that died; its inputs are resubmitted. ``on_warning`` is told once why the models run on the
    CPU, if a worker could not use ``device``.
    """
    import ray

    connected_here = not ray.is_initialized()
    if connected_here:
        if not address.startswith("local:"):
            check_cluster(address)
        ray.init(**init_arguments(address, device))
    pool = _Pool(ray, work, options, models, device, batch_size, (on_worker_lost, on_warning), gpus_per_worker)
    try:
        yield from pool.run(workers)
    finally:
        pool.stop()
        if connected_here:
            ray.shutdown()


class _Pool:
    """The driver's side: actors, the queue of batches, and what each running task holds."""

    def __init__(
        self,
        ray: Any,
        work: Work,
        options: ExplainOptions,
        models: str | Path | None,
        device: str | None,
        batch_size: int,
        tell: tuple[Callable[[str], None], Callable[[str], None]],
        gpus_per_worker: float = 1.0,
    ) -> None:
        self.ray = ray
        self.work = work
        self.options = options
        self.models = str(models) if models is not None else None
        self.on_worker_lost, self.on_warning = tell
        self.warned = False
        self.queue = deque(
            list(range(start, min(start + batch_size, len(work)))) for start in range(0, len(work), batch_size)
        )
        self.deaths = dict.fromkeys(range(len(work)), 0)
        self.starting: dict[Any, Any] = {}  # ready() reference -> actor
        self.running: dict[Any, tuple[Any, list[int]]] = {}  # explain() reference -> (actor, positions)
        self.idle: list[Any] = []
        self.actors: list[Any] = []
        self.deaths_at_start = 0
        gpus = int(ray.cluster_resources().get("GPU", 0))
        wants_gpu = gpu_wanted(device, gpus)
        # Ray shows a GPU actor only its own card (CUDA_VISIBLE_DEVICES), which torch then numbers 0.
        self.device = "cuda" if wants_gpu else device
        self.capacity = int(gpus / gpus_per_worker) if wants_gpu else int(ray.cluster_resources().get("CPU", 1))
        self.actor_class = ray.remote(ArchiveWorker).options(
            num_cpus=1, num_gpus=gpus_per_worker if wants_gpu else 0, max_restarts=0, max_task_retries=0,
        )

    def run(self, workers: int | None) -> Iterator[tuple[int, FileResult]]:
        for _ in range(min(workers or self.capacity, len(self.queue))):
            self._start_actor()
        while self.queue or self.running:
            while self.idle and self.queue:
                actor, positions = self.idle.pop(), self.queue.popleft()
                reference = actor.explain.remote([self.work[position] for position in positions])
                self.running[reference] = (actor, positions)
            [reference], _ = self.ray.wait([*self.starting, *self.running], num_returns=1)
            if reference in self.starting:
                self._started(reference)
                continue
            actor, positions = self.running.pop(reference)
            try:
                results = self.ray.get(reference)
            except self.ray.exceptions.RayActorError as error:
                yield from self._lost(actor, positions, error)
            else:
                self.idle.append(actor)
                yield from zip(positions, results, strict=True)

    def _start_actor(self) -> None:
        actor = self.actor_class.remote(self.models, self.options, self.device)
        self.actors.append(actor)
        self.starting[actor.ready.remote()] = actor

    def _started(self, reference: Any) -> None:
        """Put a new actor to work, replace it if its process died, or stop the run if it cannot ever work."""
        actor = self.starting.pop(reference)
        try:
            problem, warning = self.ray.get(reference)
        except self.ray.exceptions.RayActorError as error:
            self.deaths_at_start += 1
            if error.actor_init_failed or self.deaths_at_start > DEATHS_BEFORE_FAILING * len(self.actors):
                raise ArchiveError(f"Ray workers die while loading the model set: {_first_line(error)}")
            self._replace(actor, f"a worker process died while loading the model set ({_first_line(error)})")
            return
        if problem:
            raise ArchiveError(f"a Ray worker could not load the model set: {problem}")
        if warning and not self.warned:
            self.warned = True
            self.on_warning(f"a Ray worker: {warning}")
        self.idle.append(actor)

    def _replace(self, actor: Any, message: str) -> None:
        self.ray.kill(actor)  # an unreachable actor may still be running: make sure it never writes again
        self.actors.remove(actor)
        self.on_worker_lost(message)
        self._start_actor()

    def _lost(self, actor: Any, positions: list[int], error: BaseException) -> Iterator[tuple[int, FileResult]]:
        """Replace a dead actor; resubmit its inputs one per batch, or fail those that died with too many."""
        self._replace(actor, f"a worker process died ({_first_line(error)}); its {len(positions)} inputs are resent")
        for position in reversed(positions):
            self.deaths[position] += 1
            if self.deaths[position] < DEATHS_BEFORE_FAILING:
                self.queue.appendleft([position])
                continue
            path, folder = self.work[position]
            reason = (
                f"{path}: the worker process explaining it died {self.deaths[position]} times "
                "(out of memory, or a crash while decoding it?); see the Ray worker logs"
            )
            yield position, FileResult(path, "failed", folder, error=reason)

    def stop(self) -> None:
        """Kill every actor still there (on a shared cluster, nothing of this run is left holding resources)."""
        for actor in self.actors:
            self.ray.kill(actor)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
