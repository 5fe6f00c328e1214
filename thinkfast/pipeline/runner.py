"""Run the stages in order, caching each result in <out_dir>/stages/<stage>.json.

A stage's marker is written (atomically) only when it finishes, so a killed run restarts the
interrupted stage — which itself resumes its own long work (training checkpoints, the sample
store, the KD file) — and skips every finished one.  `from_stage` forgets that stage and all
later ones (and their outputs) and runs them again.  The run folder is locked while a run works in
it (a second run on it is refused at once, naming the first), and what a killed writer left behind
(`*.tmp<pid>` files and folders) is removed before any stage starts.
"""

from __future__ import annotations

import json
import shutil
import time

from thinkfast import faults, storage
from thinkfast.config import save_config, to_dict
from thinkfast.device import resolve_device
from thinkfast.errors import ThinkfastError
from thinkfast.pipeline.config import RunConfig
from thinkfast.pipeline.stages import STAGE_FUNCTIONS, RunPaths

STAGES = tuple(STAGE_FUNCTIONS)
# seconds per stage of the shipped default runs, for the time-left estimate before this run's own timings exist:
# run_cpu_default on 2 cores (`make run`, 2026-12-01: 12.9 min) and run_gpu_default on one H200 (2026-12-01,
# docs/results/fidelity_qwen05_h200/)
_DEFAULT_WEIGHTS = {
    "cpu": {"convert": 59, "kd_data": 128, "distill": 463, "sft": 1, "speed": 37, "eval": 84, "report": 1},
    "cuda": {"convert": 67, "kd_data": 73, "distill": 687, "sft": 1, "speed": 34, "eval": 177, "report": 1},
}


def _outputs_of(stage: str, paths: RunPaths, cfg: RunConfig) -> list:
    """What a stage wrote besides its marker (removed by --from)."""
    if stage == "convert":
        return [paths.student(s.name) / "init" for s in cfg.students]
    if stage == "kd_data":
        return [paths.data]
    if stage == "distill":
        return [paths.student(s.name) / "train" for s in cfg.students]
    if stage == "sft":
        return [paths.student(s.name) / "sft" for s in cfg.students]
    if stage == "eval":
        return [paths.eval]
    if stage == "report":
        return [paths.report]
    return []


def _write_json(path, data) -> None:
    storage.atomic_write_json(path, data)


def _check_same_config(cfg: RunConfig, paths: RunPaths, from_stage: str | None) -> None:
    """A changed config may not reuse finished stages (unless --from says which to redo).  While no
    stage has finished, nothing is cached: the new config replaces the old one, and the interrupted
    first stage's partial outputs, made with the old config, are removed."""
    saved = paths.root / "config.yaml"
    if saved.is_file() and from_stage is None:
        from thinkfast.config import load_yaml

        before, now = load_yaml(saved), json.loads(json.dumps(to_dict(cfg)))
        before.pop("out_dir", None), now.pop("out_dir", None)  # a run directory may be moved
        if before == now:
            return
        if not any((paths.stages / f"{stage}.json").is_file() for stage in STAGES):
            print(f"note: {paths.root} holds no finished stage of its earlier config; starting over with this one")
            _forget(STAGES[0], paths, cfg, _previous_config(before, cfg))
            return
        raise ThinkfastError(
            f"{paths.root} holds a run made with a different config ({saved}); rerun with --from STAGE to redo "
            "from the first stage the change affects, or choose another out_dir"
        )


def _previous_config(data: dict, fallback: RunConfig) -> RunConfig:
    """The earlier config (to find its outputs); the current one if it no longer loads."""
    from thinkfast.config import from_dict

    try:
        return from_dict(RunConfig, {**data, "out_dir": fallback.out_dir})
    except ThinkfastError:
        return fallback


def _forget(from_stage: str, paths: RunPaths, *cfgs: RunConfig) -> None:
    """Remove the markers and outputs of `from_stage` and every later stage."""
    for stage in STAGES[STAGES.index(from_stage):]:
        (paths.stages / f"{stage}.json").unlink(missing_ok=True)
        for cfg in cfgs:
            for out in _outputs_of(stage, paths, cfg):
                shutil.rmtree(out, ignore_errors=True)


def _eta(done_seconds: dict, remaining: list[str], timings_before: dict, machine: str = "cpu") -> float:
    """Seconds left: last run's timings when known, else the default run's, scaled by this run's pace once a
    minute of work past `convert` has been seen (convert is mostly a one-off download and dequantisation)."""
    if all(s in timings_before for s in remaining):
        return sum(timings_before[s] for s in remaining)
    weights = _DEFAULT_WEIGHTS[machine]
    measured = {s: t for s, t in done_seconds.items() if s in weights and s != "convert"}
    pace = 1.0  # this machine against the reference one
    if sum(measured.values()) >= 60:
        pace = min(4.0, max(0.25, sum(measured.values()) / sum(weights[s] for s in measured)))
    return sum(timings_before.get(s, weights[s] * pace) for s in remaining)


def run_pipeline(cfg: RunConfig, from_stage: str | None = None, until: str | None = None) -> dict:
    for name, value in (("--from", from_stage), ("--until", until)):
        if value is not None and value not in STAGES:
            raise ThinkfastError(f"{name} {value!r} is not a stage; stages are {list(STAGES)}")
    paths = RunPaths(cfg.out_dir)
    with storage.FolderLock(paths.root, f"run folder {paths.root}"):
        return _run_locked(cfg, paths, from_stage, until)


def _run_locked(cfg: RunConfig, paths: RunPaths, from_stage: str | None, until: str | None) -> dict:
    storage.remove_temp_files(paths.root, recursive=True)  # left by a killed run; we hold the lock
    _check_same_config(cfg, paths, from_stage)
    paths.stages.mkdir(parents=True, exist_ok=True)
    save_config(cfg, paths.root / "config.yaml")
    if from_stage is not None:
        _forget(from_stage, paths, cfg)
    timings_file = paths.stages / "timings.json"
    timings_before = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    stop = STAGES.index(until) + 1 if until else len(STAGES)
    machine = "cuda" if resolve_device(cfg.device).type == "cuda" else "cpu"
    results: dict = {}
    done_seconds: dict = {}
    start = time.time()
    for index, stage in enumerate(STAGES[:stop]):
        marker = paths.stages / f"{stage}.json"
        header = f"[{index + 1}/{len(STAGES)}] {stage}"
        if marker.is_file():
            results[stage] = json.loads(marker.read_text())
            print(f"{header}: cached ({marker})", flush=True)
            continue
        left = _eta(done_seconds, list(STAGES[index:stop]), timings_before, machine)
        print(f"{header}: running (elapsed {time.time() - start:.0f} s, about {left / 60:.1f} min left)", flush=True)
        faults.point("stage-start", stage)
        t0 = time.time()
        results[stage] = STAGE_FUNCTIONS[stage](cfg, paths, results)
        done_seconds[stage] = time.time() - t0
        faults.point("stage-end", stage)
        _write_json(marker, results[stage])
        timings_before[stage] = done_seconds[stage]
        _write_json(timings_file, timings_before)
        print(f"{header}: done in {done_seconds[stage]:.0f} s", flush=True)
    print(f"finished in {time.time() - start:.0f} s; outputs in {paths.root}")
    if (paths.report / "report.md").is_file():
        print(f"report: {paths.report / 'report.md'}")
    return results
