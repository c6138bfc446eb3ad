"""Live training runs: an observer the training loop calls, sending metrics to MLflow from a
background thread while the run trains."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import yaml

from pag import run_layout as layout
from pag.tracking.content import (
    _final_points,
    _find_runs,
    _job_tags,
    _JobFiles,
    _key,
    _provenance_tags,
    _run_name,
    _tag_values,
    epoch_metrics,
    flatten,
    param_value,
)
from pag.tracking.pipeline import _experiment_of, _job_parent, enabled
from pag.tracking.store import (
    BATCH_METRICS,
    BATCH_PARAMS,
    MAX_KEY,
    TAG_CONTENT,
    TAG_PARENT,
    _chunks,
    _client,
    _quiet,
    _retry,
    _warn,
    get_or_create_experiment,
    init_store,
    log,
)

# -- live training runs ----------------------------------------------------------------------------

FLUSH_TIMEOUT_S = 30.0  # at the end, the longest a job waits for its tracking to catch up


class LiveTrainingRun:
    """A training job as an MLflow run for its real duration: a `TrainingObserver`
    (`pag.training.observer`) that `pag train` gives the training loop (rank 0).

    * on start: the run is created (or, when the job resumes from a checkpoint, the unfinished
      run of the same run directory and params hash is continued), with the flattened params,
      tags (run, method, budget, digests, source and git commit), the dataset as an input,
      under the pipeline's parent run;
    * every `log_every` steps: the step's loss terms as `batch.<term>`, the learning rate and
      temperature as `batch.lr`, `batch.temperature` (step = global step);
    * every epoch: its record as `log_run` logs it (`train.<term>`, `lr`, ...; step = epoch);
    * at the end: the final metrics, `params.yaml`, `train_metrics.json` and the final
      checkpoint as artifacts; the run is FINISHED, marked as `log_run` marks it (a later
      `log_run` of the same files changes nothing).

    Everything is sent from a background thread in the order it happened, so the loop never
    waits on the store; the first error is one warning and ends tracking for the job (training
    goes on); at the end the job waits at most `FLUSH_TIMEOUT_S` for the thread."""

    def __init__(self, experiment: str, *, uri: str | None = None):
        import queue

        self.experiment = _experiment_of(experiment)
        self.uri = uri
        self.run_id: str | None = None
        self.started = False  # on_start was called: training ran (it was not finished)
        self.broken = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = None
        self._log_every = 1
        self._run_dir: Path | None = None
        self._parent: tuple[str | None, bool] = (None, False)
        self._client = None
        self._logged = {True: 0, False: 0}  # the last step (per step) or epoch already logged

    # the observer interface (called by the training loop) ---------------------------------

    def on_start(self, start) -> None:
        import threading

        self.started = True
        self._log_every = max(1, int(start.params.training.log_every))
        self._run_dir = Path(start.run_dir).resolve()
        started = int(time.time() * 1000)  # the run starts now, however slow the store is
        self._queue.put(("call", lambda: self._open(start, started)))
        self._thread = threading.Thread(target=self._work, name="mlflow-tracking", daemon=True)
        self._thread.start()

    def on_step(self, step, values, lr, temperature) -> None:
        if step % self._log_every or self.broken:
            return
        now = int(time.time() * 1000)
        points = {f"batch.{k}": v for k, v in values.items()}
        points["batch.lr"] = lr
        if temperature is not None:
            points["batch.temperature"] = temperature
        self._queue.put(("metrics", [(k, float(v), now, step) for k, v in points.items()]))

    def on_epoch(self, record) -> None:
        if self.broken:
            return
        now = int(time.time() * 1000)
        self._queue.put(("metrics", [(k, v, now, s) for k, v, s in epoch_metrics([record])]))

    def on_end(self, metrics) -> None:
        self._queue.put(("call", self._finish))
        self.close()

    # for the CLI ------------------------------------------------------------------------------

    def abort(self, status: str = "FAILED") -> None:
        """The job failed (or was interrupted: "KILLED"): end the run so."""
        if self._thread is None:
            return
        self._queue.put(("call", lambda: self._terminate(status)))
        self.close()

    def close(self) -> None:
        """Wait (at most `FLUSH_TIMEOUT_S`) for everything to be sent."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(FLUSH_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning(
                "MLflow tracking: the store did not take the run in %.0f s; left unfinished",
                FLUSH_TIMEOUT_S,
            )
        self._thread = None

    # the background thread --------------------------------------------------------------------

    def _work(self) -> None:
        pending = None
        while True:
            item = pending if pending is not None else self._queue.get()
            pending = None
            if item is None:
                return
            if self.broken:
                continue
            try:
                if item[0] == "metrics":
                    points = list(item[1])
                    while len(points) < BATCH_METRICS:  # whatever else is waiting, in one batch
                        try:
                            more = self._queue.get_nowait()
                        except Exception:
                            break
                        if more is None or more[0] != "metrics":
                            pending = more
                            break
                        points.extend(more[1])
                    self._log_metrics(points)
                else:
                    item[1]()
            except Exception as exc:
                self.broken = True
                _warn(f"tracking training run {self._run_dir}", exc)

    def _log_metrics(self, points) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        metrics = [  # not again what the run logged before it was interrupted (and redoes)
            Metric(k[:MAX_KEY], v, t, s)
            for k, v, t, s in points
            if s > self._logged[k.startswith("batch.")]
        ]
        for batch in _chunks(metrics, BATCH_METRICS):
            _retry(lambda b=batch: self._client.log_batch(self.run_id, metrics=b), "metrics")

    def _open(self, start, started: int) -> None:
        from mlflow.entities import Param

        uri = init_store(self.uri)
        self.uri = uri
        client = self._client = _client(uri)
        experiment_id = get_or_create_experiment(client, self.experiment, uri)
        run_dir = self._run_dir
        params = yaml.safe_load(layout.params_file(run_dir).read_text()) or {}
        metrics_path = layout.train_metrics_file(run_dir)
        key = _key("train", metrics_path)
        params_hash = start.provenance.get("params_hash")
        self._parent = _job_parent(client, experiment_id, self.experiment, uri)
        parent = self._parent[0]
        resumed = None
        for run in _find_runs(client, experiment_id, key):
            tags = run.data.tags
            if (
                resumed is None
                and start.resumed_step > 0
                and run.info.status != "FINISHED"
                and tags.get("pag.params_hash") == params_hash
            ):
                resumed = run
            else:  # a run this one replaces (other params, started over, or finished before)
                _retry(lambda r=run: client.delete_run(r.info.run_id), "delete stale run")
        if resumed is not None:
            self.run_id = resumed.info.run_id
            for per_step, key in ((True, "batch.loss"), (False, "train.loss")):
                history = _retry(lambda k=key: client.get_metric_history(self.run_id, k), key)
                self._logged[per_step] = max((m.step for m in history), default=0)
            _retry(lambda: client.update_run(self.run_id, "RUNNING"), "resume run")
            if parent and resumed.data.tags.get(TAG_PARENT) != parent:
                _retry(lambda: client.set_tag(self.run_id, TAG_PARENT, parent), "parent tag")
            log.debug("train job %s continues MLflow run %s", run_dir, self.run_id)
            return
        tags = _job_tags("train", run_dir, metrics_path, params, {"params_hash": params_hash})
        tags.update(_provenance_tags(start.provenance))
        if parent:
            tags[TAG_PARENT] = parent
        run = _retry(
            lambda: client.create_run(
                experiment_id,
                start_time=started,
                tags=_tag_values(tags),
                run_name=_run_name(run_dir, "train"),
            ),
            "create run",
        )
        self.run_id = run.info.run_id
        log.debug(
            "train job %s is MLflow run %s (live; experiment %r)",
            run_dir,
            self.run_id,
            self.experiment,
        )
        param_list = [
            Param(k[:MAX_KEY], param_value(v)) for k, v in flatten(params).items() if k[:MAX_KEY]
        ]
        for batch in _chunks(param_list, BATCH_PARAMS):
            _retry(lambda b=batch: client.log_batch(self.run_id, params=b), "params")
        self._log_dataset(start)

    def _log_dataset(self, start) -> None:
        """The training split as the run's input: name, split, fingerprint and size only."""
        with _quiet():
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset
            from mlflow.entities import DatasetInput, InputTag

        params = start.params
        with warnings.catch_warnings():  # "can be interpreted in multiple ways" (all local)
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(Path(start.data_root).resolve().as_uri())
        fingerprint = start.provenance.get("data")
        dataset = MetaDataset(
            source,
            name=f"{params.dataset}/{params.train_split}",
            digest=(fingerprint or "")[:36] or None,
        )
        entity = dataset._to_mlflow_entity()
        context = [
            InputTag("mlflow.data.context", "train"),
            InputTag("pag.images", str(start.num_images)),
        ]
        _retry(
            lambda: self._client.log_inputs(self.run_id, [DatasetInput(entity, context)]),
            "dataset input",
        )

    def _finish(self) -> None:
        from mlflow.entities import Metric, RunTag

        if self.run_id is None:
            return
        job = _JobFiles(self._run_dir, "train", None)
        now = int(time.time() * 1000)
        logged = {(k, s): v for k, v, s in epoch_metrics(job.metrics.get("history") or [])}
        finals = [Metric(k[:MAX_KEY], v, now, s) for k, v, s in _final_points(job.metrics, logged)]
        client = self._client
        for batch in _chunks(finals, BATCH_METRICS):
            _retry(lambda b=batch: client.log_batch(self.run_id, metrics=b), "final metrics")
        job.log_files(client, self.run_id)
        content = job.content_hash(self.experiment)
        _retry(
            lambda: client.log_batch(self.run_id, tags=[RunTag(TAG_CONTENT, content)]), "content"
        )
        self._terminate("FINISHED")

    def _terminate(self, status: str) -> None:
        if self.run_id is None:
            return
        _retry(lambda: self._client.set_terminated(self.run_id, status), "end run")
        parent, ends = self._parent
        if ends and parent:
            _retry(lambda: self._client.set_terminated(parent, status), "end parent run")


def training_observer(experiment: str):
    """The observer `pag train` gives the training loop: a `LiveTrainingRun`, or the no-op one
    when tracking is off."""
    from pag.training.observer import NO_OBSERVER

    return LiveTrainingRun(experiment) if enabled() else NO_OBSERVER
