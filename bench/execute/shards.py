"""Shards of a sweep: a deterministic partition of the plan by cell, and the merge of their run folders.

Cells (the configurations that differ only by engine and layout) go to shards in turn, in plan order, so
every engine of a cell stays in one shard and stays paired. A shard is an ordinary run folder whose
plan.json names its index, the shard count and the whole plan's digest; it resumes like any run. `merge`
checks that its inputs are shards of one plan, made on the same hardware (or says so, with --force),
and writes one run folder: the whole plan, one record per configuration, and the report.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from bench.config import Plan, UsageError, order_configs
from bench.store.atomic import ensure_dir, write_bytes
from bench.store.records import Record, RunStore, current_records, hardware_of, read_results


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N (shard I of N, 1 <= I <= N), got {text!r}") from None
    if not 1 <= index <= count:
        raise UsageError(f"--shard takes I/N with 1 <= I <= N, got {text!r}")
    return index, count


def shard_plan(plan: Plan, index: int, count: int) -> Plan:
    """Shard `index` of `count`: every count-th cell of the plan, starting at the index-th."""
    from bench.execute.runner import cell_key

    order: dict[tuple, int] = {}
    for config in plan.configs:
        order.setdefault(cell_key(config), len(order))
    mine = tuple(c for c in plan.configs if order[cell_key(c)] % count == index - 1)
    # The whole plan's configurations travel with each shard: a merge of some shards still knows them all.
    shard = {"index": index, "count": count, "plan_digest": plan.digest(), "plan_configs": [c.to_dict() for c in plan.configs]}  # fmt: skip
    return replace(plan, configs=mine, shard=shard)


def whole_plan(plans: list[Plan]) -> tuple[Plan, str | None]:
    """The plan the shards were cut from (checked against its digest), and a warning when the shards
    come from a version that did not keep it (then the merged plan is the shards' configurations)."""
    from bench.config import Config

    first = plans[0]
    stored = first.shard.get("plan_configs")
    if stored is not None:
        whole = replace(first, configs=tuple(Config.from_dict(c) for c in stored), shard=None)
        if whole.digest() == first.shard["plan_digest"]:
            return whole, None
    configs = [c for p in plans for c in p.configs]
    interleave = bool(configs) and configs[0].device == "cpu"
    whole = replace(first, configs=tuple(order_configs(configs, interleave)), shard=None)
    return whole, ("the shards' plan.json do not hold the whole plan (an older version made them): the merged plan "
                   "is the given shards' configurations, so what the missing shards planned is not listed")  # fmt: skip


def merge(out: Path, shards: list[Path], force: bool = False) -> tuple[Plan, list[Record], list[str]]:
    """Merge shard run folders into `out` (a new run folder; the CLI gives a staging folder, renamed into
    place when complete); returns the whole plan, the records and warnings. The merged plan is the whole
    plan the shards were cut from, so the report lists what missing shards would have measured."""
    if not shards:
        raise UsageError("merge needs at least one shard run folder")
    plans = []
    for folder in shards:
        if not (folder / "plan.json").exists():
            raise UsageError(f"{folder} is not a run folder (no plan.json)")
        plan = Plan.read(folder / "plan.json")
        if not plan.shard:
            raise UsageError(f"{folder} is not a shard (its plan.json has no shard; run with --shard I/N)")
        plans.append(plan)
    digests = {p.shard["plan_digest"] for p in plans}
    counts = {p.shard["count"] for p in plans}
    if len(digests) > 1 or len(counts) > 1:
        raise UsageError("these folders are shards of different plans (plan digests or shard counts differ)")
    indices = [p.shard["index"] for p in plans]
    if len(set(indices)) != len(indices):
        raise UsageError(f"shard index given twice: {sorted(indices)}")
    warnings = []
    (count,) = counts
    missing = sorted(set(range(1, count + 1)) - set(indices))
    if missing:
        warnings.append(
            f"shard(s) {', '.join(map(str, missing))} of {count} not given: their configurations are missing"
        )
    machines = {json.dumps(hardware_of(folder), sort_keys=True): folder for folder in shards}
    if len(machines) > 1:
        described = "; ".join(f"{folder.name}: {key}" for key, folder in machines.items())
        if not force:
            raise UsageError(f"the shards ran on different hardware ({described}); their figures do not compare. "
                             "Merge anyway with --force (the report then says so)")  # fmt: skip
        warnings.append(f"merged from different hardware (--force): {described}")
    records: list[Record] = []
    for folder, plan in zip(shards, plans):
        results = read_results(folder / "results.jsonl")
        results.check(plan)
        if results.torn_tail:  # a shard that crashed mid-write: its last configuration has no record
            warnings.append(f"shard {plan.shard['index']} ({folder}): {results.torn_warning()}; that configuration "
                            f"is missing (continue the shard with python -m bench run --resume {folder})")  # fmt: skip
        records += current_records(results.records)
    whole, warning = whole_plan(plans)
    if warning:
        warnings.append(warning)
    rank = {c: i for i, c in enumerate(whole.configs)}
    records.sort(key=lambda r: rank[r.config])
    if (out / "results.jsonl").exists():
        raise UsageError(f"{out} already holds a run; give a new folder")
    ensure_dir(out)
    store = RunStore(out)
    store.write_json("plan.json", whole.to_dict())
    first_env = json.loads((shards[0] / "env.json").read_text()) if (shards[0] / "env.json").exists() else {}
    store.write_json("env.json", {
        **first_env,
        "merged_from": [{"folder": str(f), "shard": p.shard["index"], **hardware_of(f)} for f, p in zip(shards, plans)],
        "merge_warnings": warnings,
    })  # fmt: skip
    # results.jsonl last and whole: a merge stopped by a write error leaves no run to refuse a second try
    write_bytes(store.results, "".join(json.dumps(r.to_json()) + "\n" for r in records).encode("utf-8"))
    return whole, records, warnings
