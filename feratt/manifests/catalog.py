"""The render's bookkeeping: shard records, per-subject manifests, the run file and the index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from feratt import __version__
from feratt.errors import FerattError
from feratt.framing import render_record
from feratt.jsonfile import read_json, write_json
from feratt.manifests.plan import ShardTask
from feratt.manifests.shards import file_sha256

RUN_FILE = "render.json"
INDEX_FILE = "index.json"
INDEX_SCHEMA_VERSION = 1


def config_digest(run: dict[str, Any]) -> str:
    """The sha256 that identifies a render configuration; where the bank file lies does not count."""
    content = {key: value for key, value in run.items() if key != "bank"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def record_path(out: Path, task: ShardTask) -> Path:
    """Where a finished shard's record lies: beside the shard, same name, .json."""
    return out / Path(task.relpath).with_suffix(".json")


def write_record(out: Path, task: ShardTask, record: dict[str, Any]) -> None:
    """Write a shard's record; it exists only once the shard itself is complete."""
    write_json(record_path(out, task), record)


def finished_record(out: Path, task: ShardTask, config_sha256: str) -> dict[str, Any] | None:
    """The record of a complete shard whose bytes still match its checksum, else None."""
    path = record_path(out, task)
    shard = out / task.relpath
    if not path.is_file() or not shard.is_file():
        return None
    try:
        record = read_json(path)
    except FerattError:
        return None
    if record.get("config_sha256") != config_sha256 or record.get("samples") != len(task):
        return None
    if shard.stat().st_size != record.get("bytes") or file_sha256(shard) != record.get("sha256"):
        return None
    return record


def write_manifest(
    out: Path, subject: str, records: list[dict[str, Any]], classes: list[str]
) -> dict[str, Any]:
    """Write a subject's manifest: its shards with sizes and checksums, and counts per class; return it."""
    per_class = dict.fromkeys(classes, 0)
    for record in records:
        for name, count in record["class_counts"].items():
            per_class[name] += count
    manifest = {
        "subject": subject,
        "samples": sum(r["samples"] for r in records),
        "class_counts": per_class,
        "shards": [{k: r[k] for k in ("path", "samples", "bytes", "sha256")} for r in records],
    }
    folder = out / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{subject}.json", manifest)
    return manifest


def plan_tasks(run: dict[str, Any]) -> list[ShardTask]:
    """The plan's shard tasks as recorded in the run file."""
    return [ShardTask(s["subject"], s["index"], s["first_sample"], tuple(s["faces"])) for s in run["shards"]]


def finalize(
    out: Path, run: dict[str, Any], known: dict[str, dict[str, Any]] | None = None
) -> list[ShardTask]:
    """Write the manifest of every subject whose shards are all done, and the index once all are.

    `known` holds records already verified in this run, by shard key. Returns the shards still missing.
    """
    known = known or {}
    digest = run["config_sha256"]
    by_subject: dict[str, list[ShardTask]] = {}
    for task in plan_tasks(run):
        by_subject.setdefault(task.subject, []).append(task)
    missing: list[ShardTask] = []
    manifests: dict[str, dict[str, Any]] = {}
    skipped_backgrounds: dict[str, str] = dict(run.get("skipped_backgrounds", []))
    for subject, tasks in sorted(by_subject.items()):
        records = [known.get(task.key) or finished_record(out, task, digest) for task in tasks]
        absent = [t for t, r in zip(tasks, records, strict=True) if r is None]
        if absent:
            missing.extend(absent)
            continue
        manifests[subject] = write_manifest(out, subject, records, run["classes"])
        for record in records:
            skipped_backgrounds.update(dict(record.get("skipped_backgrounds", [])))
    if not missing:
        write_index(out, run, manifests, skipped_backgrounds)
    return missing


def write_index(
    out: Path, run: dict[str, Any], manifests: dict[str, dict[str, Any]], skipped: dict[str, str]
) -> None:
    """Write index.json: classes, subjects, totals, configuration, framing, seed and the bank's checksum."""
    per_class = dict.fromkeys(run["classes"], 0)
    for manifest in manifests.values():
        for name, count in manifest["class_counts"].items():
            per_class[name] += count
    index = {
        "schema_version": INDEX_SCHEMA_VERSION,
        "feratt_version": __version__,
        "classes": run["classes"],
        "subjects": {s: m["samples"] for s, m in sorted(manifests.items())},
        "totals": {
            "samples": sum(m["samples"] for m in manifests.values()),
            "shards": sum(len(m["shards"]) for m in manifests.values()),
            "subjects": len(manifests),
            "class_counts": per_class,
        },
        "render_config": run["config"],
        "framing": render_record(run["config"], run.get("bank")),  # how faces were framed, for inference
        "seed": run["seed"],
        "bank": run["bank"],
        "bank_sha256": run["bank_sha256"],
        "backgrounds": run["backgrounds"],
        "skipped_backgrounds": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
        "config_sha256": run["config_sha256"],
    }
    write_json(out / INDEX_FILE, index)
