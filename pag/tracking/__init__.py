"""MLflow tracking: live runs of the jobs; the JSON files in the run directories stay the truth.

One module per concern, all names re-exported here: `store` (where the store is, its set-up,
retries, shared tag names), `content` (what a job's run holds, read from its run directory),
`finished` (logging a finished job), `pipeline` (parent runs and `track_job`), `live` (live
training runs through the training observer).

* **Store.** `MLFLOW_TRACKING_URI` when set, else a SQLite file `mlflow.db` in the working
  directory (the project being run, where the pipelines run their jobs; not the checkout that
  holds the installed package, so clones and worktrees never mix their runs), with artifacts
  on the local file system beside it (`<store dir>/mlartifacts/<experiment>/...`).
  View it with ``mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1``.
* **A training job is a run while it trains** (`LiveTrainingRun`, a training observer that
  `pag train` gives the loop on rank 0): created when training starts (a resumed job continues
  the unfinished run of its run directory and params hash), with the flattened params, tags
  (`pag.run`, method, budget, digests, `mlflow.source.name`, `mlflow.source.git.commit` of the
  working directory), the training split as a dataset input (name, split, fingerprint); the
  loss terms, learning rate and temperature every `log_every` steps (`batch.*`, step = global
  step), each epoch's record (`train.*`, `lr`, `temperature`, step = epoch), and at the end the
  final metrics, `params.yaml`, `train_metrics.json` and `checkpoints/final.pt` as artifacts.
  A background thread sends it all, so the loop never waits on the store.
* **Finished jobs.** `log_run(run_dir, kind, experiment)` logs a job from its files: `pag
  evaluate` (with the evaluation's real start time) and `pag train` for a run that was finished
  already. Logging the same files again changes nothing (the run is found by a key tag and a
  content hash; a live run is marked the same way); logging after they changed replaces the
  old run (deleted, not duplicated). Big arrays of the metrics (lists longer than `MAX_LIST`:
  the boundary PR curve) are not metrics but `curves/<key>.csv` artifacts, PR curves also
  plotted as `curves/<key>.png`; an evaluation's `pag.trained_by` tag is its training's run id.
* **Grouping.** One parent run per pipeline invocation and profile: the Snakefile's `onstart`
  calls `begin_pipeline`, which exports its id in `$PAG_MLFLOW_PARENT` (and the experiment in
  `$PAG_MLFLOW_EXPERIMENT`) to the jobs, and `onsuccess`/`onerror` end it. DVC has no hooks:
  a stage's job finds the parent of its `dvc` process (`dvc_invocation`, a tag) or creates it,
  re-opens it, and ends it when it ends, so the parent ends with the invocation's last job.
  Jobs carry it as `mlflow.parentRunId`, which the UI nests by.
* **Concurrency.** SQLite serializes writers. The schema is created and migrated once, under an
  exclusive file lock (`init_store()`, which every entry point calls and which is cheap once
  done), the database is switched to WAL (readers never block the writer), and every store call
  is retried with backoff on "database is locked" and other transient SQLite errors.
  Experiments are got-or-created with a retry for the creation race. WAL needs a local file
  system: on a shared (NFS) file system, point `MLFLOW_TRACKING_URI` at an `mlflow server`.
* **Never fails a job.** Every entry point catches every error, logs one warning naming it (on
  stderr) and goes on without tracking; a live run waits at most `FLUSH_TIMEOUT_S` at the end.
  `PAG_TRACKING=0` turns all of it off.
* **Quiet.** MLflow's, Alembic's and SQLAlchemy's own log lines (store creation, migrations,
  MLflow's warnings) are silenced when the store is first used, unless `MLFLOW_LOGGING_LEVEL`
  is set; `pag -v` shows what this module did.
"""

from pag.tracking.content import *  # noqa: F403
from pag.tracking.finished import *  # noqa: F403
from pag.tracking.live import *  # noqa: F403
from pag.tracking.pipeline import *  # noqa: F403
from pag.tracking.store import *  # noqa: F403
