"""Where a sweep's files live when it spans machines.

Local disk or a shared filesystem (NFS): everything is in SWEEP = ROOT/NAME, which every node
sees at the same path (`check_shared` refuses a multi-node cluster that cannot see it).

Object storage (`--storage s3://bucket/sweeps`, `gs://...`; `file://` behaves the same and is what
the tests use): STORE = URI/NAME holds the copy that survives losing the head node:
  STORE/tune/          Ray Tune's experiment state (Tune writes it directly)
  STORE/trials/ID/     each trial's out_dir, uploaded by the trial when it ends (trials train in a
                       node-local scratch directory, so no node needs a shared filesystem); while it
                       runs, its last reported checkpoint, mirrored as checkpoint-STEP/
  STORE/space.json, optuna.log, tracking.json, mlflow.db, ...   the driver's files, mirrored after
                       every finished trial and at the end (`dnasweep resume URI/NAME` starts there)
Only the driver writes the Optuna journal and the MLflow store, so concurrent trials never touch
them; the mirror is a copy, never written by two processes.

Each checkpoint is kept once: in the trial's own directory (and, with object storage, its mirror).
What a trial reports to Ray Tune is a pointer (POINTER, a few bytes naming that checkpoint,
relative to the sweep), not a copy: Tune copies what it is given into tune/, which doubled every
checkpoint. A trial that ends keeps the weights of its last checkpoint, not its optimizer state
(`slim_checkpoint`): nothing continues a finished trial, and AdamW's two moments are two thirds of
the file.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile

from ray.tune import Callback

from dnasweep.errors import ConfigError, Problem

SETTINGS = "sweep.json"  # {"storage": URI or null}: how this sweep was run, read back by resume
MIRRORED = ("space.json", "optuna.log", "tracking.json", "tracking_backlog.json", SETTINGS, "mlflow.db",
            "pareto_front.csv", "trials.csv", "pareto.png", "pareto.html", "plotly.min.js", "hypervolume.png",
            "reference.json", "reference.csv")
POINTER = "dnasweep_checkpoint.json"  # what Tune keeps of a trial's checkpoint: {"checkpoint": REL, "step": N}


def is_uri(path: str | None) -> bool:
    return bool(path) and "://" in path


class LocalStore:
    """A sweep kept in SWEEP only (local disk, or a filesystem every node mounts). ObjectStore
    overrides each step, so the driver and the trainable never branch on "is there a store".
    Picklable: the trainable gets it with its parameters."""

    uri: str | None = None

    def __init__(self, sweep_dir: str):
        self.sweep_dir = sweep_dir

    @property
    def where(self) -> str:
        """What `dnasweep resume` takes to continue this sweep."""
        return self.sweep_dir

    @property
    def tune_root(self) -> str:
        """Ray Tune's storage_path (it writes its state under tune_root/tune)."""
        return self.sweep_dir

    def trial_out(self, trial_id: str) -> str:
        """Where a trial trains (its out_dir)."""
        return os.path.join(self.sweep_dir, "trials", trial_id)

    def pull_result(self, trial_id: str, out: str) -> None:
        """Bring a finished trial's result.json to `out` (a retried trial that already finished)."""

    def trial_ended(self, trial_id: str, out: str) -> None:
        """Called by the trial when it ends, before it returns to Tune."""
        slim_checkpoint(os.path.join(out, "checkpoint"))

    def pruned_ended(self, trial_id: str) -> None:
        """Called by the driver at the end of a sweep for a trial MO-ASHA stopped: Tune stops it with
        SystemExit inside a report, past the trial's own end (`trial_ended`), and a trial stopped
        because its driver is stopping ends the same way, so only the driver knows it is final.
        Here its checkpoint is slimmed. (In object storage, its files stay in the worker's scratch:
        not handled yet.)"""
        slim_checkpoint(os.path.join(self.trial_out(trial_id), "checkpoint"))

    def checkpointed(self, trial_id: str, ckpt_dir: str, step: int) -> str:
        """Called by the trial before it reports checkpoint `ckpt_dir` (its out_dir/checkpoint) to
        Tune: where that checkpoint is kept, relative to the sweep, for the pointer Tune gets.
        Here the trial's own directory, which every node sees."""
        return os.path.relpath(ckpt_dir, self.sweep_dir)

    def restore_checkpoint(self, trial_id: str, pointer: dict | None, own: str) -> None:
        """Bring the checkpoint that `pointer` names (None: Tune holds none) to `own`, a trial's
        missing out_dir/checkpoint. Here it names `own` itself (nothing to bring: the trial starts over)."""
        if pointer is None:
            return
        src = os.path.join(self.sweep_dir, pointer["checkpoint"])
        if os.path.abspath(src) != os.path.abspath(own) and os.path.isdir(src):  # a trial dir moved
            shutil.copytree(src, own)

    def fetch(self, trial_id: str) -> None:
        """The driver's copy of a finished trial's directory."""

    def mirror(self) -> None:
        """Copy the driver's files to where the sweep is kept."""

    def mirror_journal(self) -> None:
        """Copy the Optuna journal to where the sweep is kept (called at every ask)."""

    def callbacks(self) -> list:
        return []


class ObjectStore(LocalStore):
    """A sweep kept in object storage, STORE = URI/NAME (any URI pyarrow opens: s3://, gs://,
    file://; see the module doc): trials train in node-local scratch and upload their directory
    when they end; the driver mirrors its files."""

    def __init__(self, sweep_dir: str, uri: str):
        super().__init__(sweep_dir)
        self.uri = uri.rstrip("/")

    def __getstate__(self):
        return {"sweep_dir": self.sweep_dir, "uri": self.uri}  # the pyarrow handle is opened per process

    @functools.cached_property
    def _fs(self):
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(self.uri)

    def _p(self, rel: str) -> str:
        return f"{self._fs[1]}/{rel}".rstrip("/")

    def _info(self, rel: str):
        return self._fs[0].get_file_info(self._p(rel))

    def exists(self, rel: str) -> bool:
        import pyarrow.fs as pafs

        return self._info(rel).type != pafs.FileType.NotFound

    def put(self, local: str, rel: str) -> None:
        """Upload a file or a directory tree (replacing files of the same name). A file replaces its
        old copy at once, never through a truncated one: an object store's PUT is atomic, and on a
        filesystem (file://) the copy goes to a temporary name and is renamed over it, so a reader (a
        resume after the head died mid-mirror) never finds the journal empty."""
        import uuid

        import pyarrow.fs as pafs

        if not os.path.exists(local):
            return
        fs, is_file = self._fs[0], not os.path.isdir(local)
        fs.create_dir(self._p(os.path.dirname(rel) if is_file else rel), recursive=True)
        dest = self._p(rel)
        tmp = f"{dest}.part-{uuid.uuid4().hex[:8]}" if is_file and isinstance(fs, pafs.LocalFileSystem) else None
        pafs.copy_files(local, tmp or dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        if tmp:
            fs.move(tmp, dest)

    def get(self, rel: str, local: str) -> None:
        """Download a file or a directory tree, if the store has it."""
        import pyarrow.fs as pafs

        kind = self._info(rel).type
        if kind != pafs.FileType.NotFound:
            os.makedirs(local if kind == pafs.FileType.Directory else os.path.dirname(local), exist_ok=True)
            pafs.copy_files(self._p(rel), local, source_filesystem=self._fs[0],
                            destination_filesystem=pafs.LocalFileSystem())

    where = property(lambda self: self.uri)
    tune_root = property(lambda self: self.uri)

    def trial_out(self, trial_id: str) -> str:
        return scratch_dir(os.path.basename(self.sweep_dir), trial_id)

    def pull_result(self, trial_id: str, out: str) -> None:
        if not os.path.exists(os.path.join(out, "result.json")):
            self.get(f"trials/{trial_id}/result.json", os.path.join(out, "result.json"))

    def pruned_ended(self, trial_id: str) -> None:
        pass  # the trial's directory is in a worker's scratch, out of the driver's reach

    def trial_ended(self, trial_id: str, out: str) -> None:
        """Upload `out`, result.json last: the driver (`fetch`) and a retried trial (`pull_result`)
        take a trial whose result.json is in the store as finished and whole, so an upload cut short
        (a killed worker) must not leave one beside a missing checkpoint or metrics.jsonl."""
        slim_checkpoint(os.path.join(out, "checkpoint"))
        rel = f"trials/{trial_id}"
        for name in sorted(n for n in os.listdir(out) if n != "result.json"):
            self.put(os.path.join(out, name), f"{rel}/{name}")
        self._prune(trial_id, keep=None)  # out/checkpoint is there now: the running mirrors go
        self.put(os.path.join(out, "result.json"), f"{rel}/result.json")
        shutil.rmtree(out, ignore_errors=True)  # the store has it; scratch must not fill the node's disk

    _MIRROR = "checkpoint-"  # STORE/trials/ID/checkpoint-STEP: a running trial's last reported checkpoint
    _HISTORY, _HISTORY_DIR = ("metrics.jsonl", "attempts.log"), "history"  # OUT's files a mirror carries

    def checkpointed(self, trial_id: str, ckpt_dir: str, step: int) -> str:
        """Mirror the checkpoint (node-local scratch) to STORE/trials/ID/checkpoint-STEP, so that a
        trial restarted on another node continues from it; then drop the older mirrors (keep-last).
        config.yaml goes up last: a mirror is complete once it is there (as `checkpoint.save`
        writes it), so a copy cut short by a killed worker is never resumed from."""
        rel = f"trials/{trial_id}/{self._MIRROR}{step}"
        # The trial's history so far rides along: a trial restarted from this mirror on a node
        # without its scratch lost its rows before the checkpoint (run_trial drops those after it).
        out = os.path.dirname(ckpt_dir)
        for name in self._HISTORY:
            self.put(os.path.join(out, name), f"{rel}/{self._HISTORY_DIR}/{name}")
        names = sorted(os.listdir(ckpt_dir), key=lambda n: n == "config.yaml")
        for name in names:
            self.put(os.path.join(ckpt_dir, name), f"{rel}/{name}")
        self._prune(trial_id, keep=rel)
        return rel

    def _mirrors(self, trial_id: str, complete: bool = True) -> list[tuple[int, str]]:
        """(step, rel) of the checkpoint mirrors of a trial (`complete`: those with config.yaml),
        newest first."""
        import pyarrow.fs as pafs

        if not self.exists(f"trials/{trial_id}"):
            return []
        infos = self._fs[0].get_file_info(pafs.FileSelector(self._p(f"trials/{trial_id}")))
        found = [(int(i.base_name[len(self._MIRROR):]), f"trials/{trial_id}/{i.base_name}") for i in infos
                 if i.type == pafs.FileType.Directory and i.base_name.startswith(self._MIRROR)
                 and i.base_name[len(self._MIRROR):].isdigit()]
        return sorted((f for f in found if not complete or self.exists(f"{f[1]}/config.yaml")), reverse=True)

    def _prune(self, trial_id: str, keep: str | None) -> None:
        for _, rel in self._mirrors(trial_id, complete=False):  # a mirror cut short goes too
            if rel != keep:
                self._fs[0].delete_dir(self._p(rel))

    def restore_checkpoint(self, trial_id: str, pointer: dict | None, own: str) -> None:
        """The checkpoint mirror the pointer names, else the newest complete one (a pointer Tune
        recorded before the trial's last report names a mirror already replaced; no pointer: the
        worker died between mirroring its first checkpoint and Tune taking the report)."""
        mirrors = [rel for _, rel in self._mirrors(trial_id)]
        named = pointer["checkpoint"] if pointer else None
        rel = named if named in mirrors else next(iter(mirrors), None)
        if rel is None:
            return
        self.get(rel, own)
        history, out = os.path.join(own, self._HISTORY_DIR), os.path.dirname(own)
        for name in os.listdir(history) if os.path.isdir(history) else []:
            if not os.path.exists(os.path.join(out, name)):  # scratch that survived is as new or newer
                os.replace(os.path.join(history, name), os.path.join(out, name))
        shutil.rmtree(history, ignore_errors=True)

    def fetch(self, trial_id: str) -> None:
        local = os.path.join(self.sweep_dir, "trials", trial_id)
        if not os.path.exists(os.path.join(local, "result.json")):
            self.get(f"trials/{trial_id}", local)

    def mirror_journal(self) -> None:
        self.put(os.path.join(self.sweep_dir, "optuna.log"), "optuna.log")

    def mirror(self) -> None:
        """The driver's files (small, single writer) and any analysis reports, copied up."""
        for name in (*MIRRORED, "mlartifacts"):
            self.put(os.path.join(self.sweep_dir, name), name)
        trials = os.path.join(self.sweep_dir, "trials")
        for tid in os.listdir(trials) if os.path.isdir(trials) else []:
            self.put(os.path.join(trials, tid, "analysis"), f"trials/{tid}/analysis")

    def pull_sweep(self) -> None:
        """A local working copy of the sweep (resume on a new head node)."""
        for name in (*MIRRORED, "mlartifacts"):
            self.get(name, os.path.join(self.sweep_dir, name))
        os.makedirs(os.path.join(self.sweep_dir, "trials"), exist_ok=True)

    def callbacks(self) -> list:
        return [StoreMirror(self)]


def open_store(sweep_dir: str, storage: str | None) -> LocalStore:
    """The store of sweep SWEEP = ROOT/NAME: STORAGE/NAME in object storage, else SWEEP itself."""
    return ObjectStore(sweep_dir, f"{storage.rstrip('/')}/{os.path.basename(sweep_dir)}") if storage \
        else LocalStore(sweep_dir)


class StoreMirror(Callback):
    """Ray Tune callback: copies the driver's files to the store after every finished trial
    (listed after the tracker, so the copy has the trial's MLflow run)."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.store.mirror()

    on_trial_error = on_trial_complete


def slim_checkpoint(directory: str) -> None:
    """Keep only what a finished trial's checkpoint is read for (`dnasweep analyze`: the weights;
    step, sampler and RNG state are bytes), not the optimizer state, which only continuing the run
    needs: AdamW's two moments per parameter are two thirds of the file. The file says so
    (`weights_only`), so `dnasweep train` refuses to continue from it rather than fail midway."""
    from dnasweep.train import checkpoint

    if not checkpoint.exists(directory) or "optimizer" not in (state := checkpoint.load(directory)):
        return
    state.pop("optimizer")
    with open(os.path.join(directory, "config.yaml")) as f:
        checkpoint.save(directory, {**state, "weights_only": True}, f.read())


def read_pointer(directory: str) -> dict | None:
    """The pointer in a checkpoint Tune restored (`directory`), None for a whole checkpoint (a
    sweep started before pointers: Tune holds a copy)."""
    from dnasweep.sweep.study import read_json

    return read_json(os.path.join(directory, POINTER))


def write_pointer(directory: str, rel: str, step: int) -> None:
    with open(os.path.join(directory, POINTER), "w") as f:
        json.dump({"checkpoint": rel, "step": step}, f)


def scratch_dir(name: str, trial_id: str) -> str:
    """Node-local out_dir of a trial whose sweep keeps its files in object storage."""
    return os.path.join(tempfile.gettempdir(), "dnasweep-scratch", name, trial_id)


def check_shared(root: str) -> None:
    """On a multi-node cluster, every node must see ROOT (a shared filesystem), or the sweep must
    use object storage: otherwise trials would write where the driver never looks."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    os.makedirs(root, exist_ok=True)
    marker = os.path.join(os.path.abspath(root), f".dnasweep-shared-{uuid.uuid4().hex}")
    open(marker, "w").close()
    try:
        probe = ray.remote(num_cpus=0)(os.path.exists)
        seen = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(marker) for n in nodes])
    finally:
        os.remove(marker)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise ConfigError([Problem("--root", f"{os.path.abspath(root)} is not visible from node(s) {', '.join(blind)} "
                                   f"of this {len(nodes)}-node cluster: trials there would write where the driver "
                                   "never looks", "put --root on a filesystem every node mounts (NFS), or keep the "
                                   "sweep in object storage: --storage s3://BUCKET/sweeps")], "run")
