"""Verify a render folder: all a reader relies on, from index.json through the manifests to each shard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from feratt.artifacts.render_records import (
    INDEX_FILE,
    INDEX_SCHEMA_VERSION,
    RUN_FILE,
    SHARDS,
    manifest_relpath,
    record_relpath,
)
from feratt.artifacts.shard import file_sha256, open_shard, schema_problems
from feratt.codec import JSONObject
from feratt.errors import FerattError
from feratt.jsonfile import read_json
from feratt.manifests.plan import ShardTask
from feratt.progress import Progress, no_progress

#: The fields of each JSON file a reader relies on, with their types.
RECORD_FIELDS = {
    "path": str,
    "subject": str,
    "samples": int,
    "bytes": int,
    "sha256": str,
    "class_counts": dict,
}
MANIFEST_FIELDS = {"subject": str, "samples": int, "class_counts": dict, "shards": list}
ENTRY_FIELDS = {"path": str, "samples": int, "bytes": int, "sha256": str}
INDEX_FIELDS = {
    "schema_version": int,
    "classes": list,
    "subjects": dict,
    "totals": dict,
    "config_sha256": str,
    "bank_sha256": str,
}
TOTALS_FIELDS = {"samples": int, "shards": int, "subjects": int, "class_counts": dict}


def _load(path: Path, name: str, problems: list[str]) -> JSONObject | None:
    """The JSON object in `path`; None, with a problem, when it is missing or not a JSON object."""
    if not path.is_file():
        problems.append(f"{name}: missing")
        return None
    try:
        value = read_json(path)
    except FerattError:
        problems.append(f"{name}: not valid JSON")
        return None
    if not isinstance(value, dict):
        problems.append(f"{name}: not a JSON object")
        return None
    return value


def _size(run: JSONObject) -> int | None:
    """The side of the render's images, as its run file says (None when it says nothing usable)."""
    config = run.get("config")
    size = config.get("size") if isinstance(config, dict) else None
    return size if _typed(size, int) else None


def _typed(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _field_problems(document: JSONObject, fields: dict[str, type], name: str) -> list[str]:
    """A problem for each field of `fields` that `document` lacks or holds with the wrong type."""
    problems = []
    for field, kind in fields.items():
        if field not in document:
            problems.append(f"{name}: {field} missing")
        elif not _typed(document[field], kind):
            problems.append(f"{name}: {field} is not {'an' if kind is int else 'a'} {kind.__name__}")
    return problems


def _compare(problems: list[str], name: str, what: str, found: Any, expected: Any) -> None:
    if found != expected:
        problems.append(f"{name}: {what} is {_short(found)}, expected {_short(expected)}")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _plan(run: JSONObject | None, problems: list[str]) -> list[ShardTask] | None:
    """The shard tasks of a run file; None, with a problem, when it does not describe a render."""
    if run is None:
        return None
    try:
        tasks = [
            ShardTask(t["subject"], t["index"], t["first_sample"], tuple(t["faces"])) for t in run["shards"]
        ]
        valid = (
            all(isinstance(task.subject, str) and task.subject for task in tasks)
            and all(_typed(t.index, int) and _typed(t.first_sample, int) for t in tasks)
            and isinstance(run["classes"], list)
            and all(isinstance(name, str) for name in run["classes"])
            and isinstance(run["config_sha256"], str)
        )
    except (KeyError, TypeError):
        valid = False
    if not valid:
        problems.append(f"{RUN_FILE}: not a feratt render file")
        return None
    return tasks


def verify_folder(target: Path, progress: Progress | None = None) -> list[str]:
    """One line per problem of a render folder, naming the file; empty when sound.

    `progress(done, total)` counts the shards of the plan checked so far.
    """
    report = progress or no_progress
    problems: list[str] = []
    if not target.is_dir():
        raise FerattError(f"not found: {target}")
    run = _load(target / RUN_FILE, RUN_FILE, problems)
    tasks = _plan(run, problems)
    if run is None or tasks is None:
        shards = sorted((target / SHARDS).glob("*/shard-*.h5"))
        if not shards:
            raise FerattError(f"{target} holds no shards (looked for shards/<subject>/shard-*.h5)")
        for shard in shards:
            problems.extend(f"{shard.relative_to(target)}: {p}" for p in schema_problems(shard))
        return problems
    by_subject: dict[str, list[ShardTask]] = {}
    for task in tasks:
        by_subject.setdefault(task.subject, []).append(task)
    class_counts: dict[str, int] | None = dict.fromkeys(run["classes"], 0)
    checked = 0
    report(checked, len(tasks))
    for subject, subject_tasks in sorted(by_subject.items()):
        counts = _verify_subject(target, run, subject, subject_tasks, problems)
        checked += len(subject_tasks)
        report(checked, len(tasks))
        if counts is None or class_counts is None:
            class_counts = None  # a shard is missing or unreadable: the totals cannot be checked
            continue
        for name, count in counts.items():
            class_counts[name] = class_counts.get(name, 0) + count
    _verify_index(target, run, by_subject, class_counts, problems)
    return problems


def verify_shard_file(shard: Path) -> list[str]:
    """The schema of one shard, and its sidecar record beside it if there is one."""
    problems = [f"{shard}: {p}" for p in schema_problems(shard)]
    sidecar = shard.with_suffix(".json")
    if sidecar.is_file():
        record = _load(sidecar, str(sidecar), problems)
        if record is not None:
            problems.extend(_field_problems(record, RECORD_FIELDS, str(sidecar)))
            _compare(problems, str(sidecar), "sha256", record.get("sha256"), file_sha256(shard))
    return problems


def _verify_subject(
    target: Path, run: JSONObject, subject: str, tasks: list[ShardTask], problems: list[str]
) -> dict[str, int] | None:
    """Check a subject's manifest and shards; return its samples per class read from the shards."""
    name = manifest_relpath(subject)
    manifest = _load(target / name, name, problems)
    listed: dict[str, JSONObject] | None = None
    if manifest is not None:
        problems.extend(_field_problems(manifest, MANIFEST_FIELDS, name))
        _compare(problems, name, "subject", manifest.get("subject"), subject)
        listed = {}
        for entry in manifest.get("shards") if isinstance(manifest.get("shards"), list) else []:
            if not isinstance(entry, dict) or _field_problems(entry, ENTRY_FIELDS, name):
                problems.append(f"{name}: a shard entry is not valid: {_short(entry)}")
                continue
            listed[entry["path"]] = entry
        for extra in sorted(set(listed) - {task.relpath for task in tasks}):
            problems.append(f"{name}: lists {extra}, which the plan does not hold")
    counts = dict.fromkeys(run["classes"], 0)
    complete = True
    for task in tasks:
        entry = None if listed is None else listed.get(task.relpath)
        if listed is not None and entry is None:
            problems.append(f"{task.relpath}: not in {name}")
        shard_counts = _verify_shard(target, run, task, entry, problems)
        if shard_counts is None:
            complete = False
            continue
        for label, count in shard_counts.items():
            counts[label] = counts.get(label, 0) + count
    if manifest is not None and complete:
        _compare(problems, name, "samples", manifest.get("samples"), sum(len(t) for t in tasks))
        _compare(problems, name, "class_counts", manifest.get("class_counts"), counts)
    return counts if complete else None


def _verify_shard(
    target: Path, run: JSONObject, task: ShardTask, entry: JSONObject | None, problems: list[str]
) -> dict[str, int] | None:
    """Check one shard against its manifest entry, its sidecar record and the plan; its samples per class."""
    shard = target / task.relpath
    if not shard.is_file():
        problems.append(f"{task.relpath}: missing")
        return None
    size, digest = shard.stat().st_size, file_sha256(shard)
    if entry is not None:
        if entry["sha256"] != digest:
            problems.append(f"{task.relpath}: corrupted (sha256 differs from its manifest)")
            return None
        _compare(problems, task.relpath, "its manifest's byte count", entry["bytes"], size)
        _compare(problems, task.relpath, "its manifest's sample count", entry["samples"], len(task))
    schema = schema_problems(shard, _size(run), len(run["classes"]))
    problems.extend(f"{task.relpath}: {p}" for p in schema)
    counts = None if schema else _shard_counts(shard, run, task, problems)
    _verify_record(target, run, task, (size, digest), counts, problems)
    return counts


def _shard_counts(
    shard: Path, run: JSONObject, task: ShardTask, problems: list[str]
) -> dict[str, int] | None:
    """The samples per class of a shard of the right layout, after checking its contents against the plan."""
    name = task.relpath
    classes = run["classes"]
    with open_shard(shard) as h5:
        labels = h5["labels"][()]
        sample_index = h5["sample_index"][()]
        attrs = dict(h5.attrs)
    _compare(problems, name, "the number of samples", len(labels), len(task))
    expected = np.arange(task.first_sample, task.first_sample + len(task))
    if len(sample_index) != len(expected) or (sample_index != expected).any():
        problems.append(f"{name}: sample_index does not match the plan")
    _compare(problems, name, "the subject", str(attrs.get("subject")), task.subject)
    try:
        names = json.loads(attrs.get("class_names", ""))
    except (TypeError, ValueError):
        names = None
    _compare(problems, name, "class_names", names, classes)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        problems.append(f"{name}: labels outside 0..{len(classes) - 1}")
        return None
    counts = np.bincount(labels.astype(np.int64), minlength=len(classes))
    return {label: int(count) for label, count in zip(classes, counts, strict=True)}


def _verify_record(
    target: Path,
    run: JSONObject,
    task: ShardTask,
    stat: tuple[int, str],
    counts: dict[str, int] | None,
    problems: list[str],
) -> None:
    """Check a shard's sidecar record: what `render` and `feratt index` trust of a finished shard."""
    path = target / record_relpath(task)
    name = str(path.relative_to(target))
    record = _load(path, name, problems)
    if record is None:
        return
    fields = _field_problems(record, RECORD_FIELDS, name)
    problems.extend(fields)
    if fields:
        return
    size, digest = stat
    _compare(problems, name, "path", record["path"], task.relpath)
    _compare(problems, name, "subject", record["subject"], task.subject)
    _compare(problems, name, "samples", record["samples"], len(task))
    _compare(problems, name, "bytes", record["bytes"], size)
    if record["sha256"] != digest:
        problems.append(f"{name}: sha256 differs from the shard's")
    _compare(problems, name, "config_sha256", record.get("config_sha256"), run["config_sha256"])
    if counts is not None:
        _compare(problems, name, "class_counts", record["class_counts"], counts)


def _verify_index(
    target: Path,
    run: JSONObject,
    by_subject: dict[str, list[ShardTask]],
    class_counts: dict[str, int] | None,
    problems: list[str],
) -> None:
    """Check index.json against the plan and the shards: classes, subjects, totals, checksums."""
    name = INDEX_FILE
    index = _load(target / name, name, problems)
    if index is None:
        return
    fields = _field_problems(index, INDEX_FIELDS, name)
    problems.extend(fields)
    if fields:
        return
    subjects = {subject: sum(len(t) for t in tasks) for subject, tasks in sorted(by_subject.items())}
    _compare(problems, name, "schema_version", index["schema_version"], INDEX_SCHEMA_VERSION)
    _compare(problems, name, "classes", index["classes"], run["classes"])
    _compare(problems, name, "subjects", index["subjects"], subjects)
    _compare(problems, name, "config_sha256", index["config_sha256"], run["config_sha256"])
    _compare(problems, name, "bank_sha256", index["bank_sha256"], run.get("bank_sha256"))
    totals = index["totals"]
    fields = _field_problems(totals, TOTALS_FIELDS, f"{name} totals")
    problems.extend(fields)
    if fields:
        return
    _compare(problems, name, "totals.samples", totals["samples"], sum(subjects.values()))
    _compare(problems, name, "totals.shards", totals["shards"], sum(len(t) for t in by_subject.values()))
    _compare(problems, name, "totals.subjects", totals["subjects"], len(subjects))
    if class_counts is not None:
        _compare(problems, name, "totals.class_counts", totals["class_counts"], class_counts)
