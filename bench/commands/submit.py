"""Submit a sweep's shards as a job array through submitit (Slurm, or local processes), then merge them.

    python -m bench submit --shards 4 --out results/runs/my-sweep -- --preset gpu-default
    python -m bench submit --shards 2 --local --out /tmp/sweep -- --preset smoke

Each job runs `python -m bench run RUN_OPTIONS --shard I/N --out OUT/shard-I` on whatever node Slurm
gives it (`--partition`, `--gpus-per-node`, `--timeout-min` pass to submitit); when all have finished,
the shards are merged into OUT/merged (refused if they ran on different hardware, unless --force). A
shard that failed is resumed by running its command again with `--resume OUT/shard-I`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.config import UsageError

# `run` options that submit sets for each shard itself.
SET_BY_SUBMIT = ("out", "shard", "resume", "retry_errors")


class ShardsFailed(RuntimeError):
    """Some shards' jobs did not finish: each named with the command that continues it."""


def run_shard(argv: list[str]) -> int:
    """One job: `bench run` of one shard. In a local job process it first takes the child guard, so it
    ends when the submitting process is gone (submitit's local jobs are meant to outlive it)."""
    import os

    from bench.commands.cli import main
    from bench.execute.launch import guard

    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        guard()
    return main(argv)


def submit_shards(run_args: list[str], shards: int, out: Path, executor) -> list[Path]:
    """Submit one job per shard with `executor`, wait for all, and return their run folders."""
    folders = [out / f"shard-{index}" for index in range(1, shards + 1)]
    argvs = [["run", *run_args, "--shard", f"{i}/{shards}", "--out", str(f), "--no-report"]
             for i, f in enumerate(folders, start=1)]  # fmt: skip
    jobs = executor.map_array(run_shard, argvs)
    outcomes = []
    for job in jobs:
        try:
            code = job.result()
        except Exception as error:  # submitit's FailedJobError: a job that crashed or that Slurm killed
            last = (str(error).strip().splitlines() or [""])[-1]
            outcomes.append(f"{type(error).__name__}: {last}")
            continue
        outcomes.append(None if code == 0 else f"exit status {code}")
    failed = [(folder, outcome) for folder, outcome in zip(folders, outcomes) if outcome is not None]
    if failed:
        raise ShardsFailed(_failure_text(failed, folders, out))
    return folders


def _failure_text(failed: list[tuple[Path, str]], folders: list[Path], out: Path) -> str:
    lines = [f"{len(failed)} of {len(folders)} shard(s) did not finish:"]
    for folder, outcome in failed:
        if (folder / "plan.json").exists():
            lines.append(f"  {folder.name} ({outcome}): continue it with python -m bench run --resume {folder}")
        else:
            lines.append(
                f"  {folder.name} ({outcome}): it made no run folder; its job's log is under {out / 'submitit'}"
            )
    lines.append(f"then merge them: python -m bench merge {out / 'merged'} {' '.join(map(str, folders))}")
    return "\n".join(lines)


# --- the submission's options, checked before any job is submitted ----------------------------------


def make_parser():
    from bench.commands.cli import _Parser
    from bench.config.options import span

    parser = _Parser(prog="python -m bench submit", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True,
                        help=f"jobs, {span('submit', 'shards')}: at most the plan's cells (engines of a cell "
                        "stay in one shard)")  # fmt: skip
    parser.add_argument("--out", required=True, help="the sweep's folder: OUT/shard-I for each shard, OUT/merged")
    parser.add_argument("--local", action="store_true", help="run the jobs as local processes (no Slurm)")
    parser.add_argument("--partition")
    parser.add_argument("--gpus-per-node", default="0", help=f"{span('submit', 'gpus_per_node')} (default 0)")
    parser.add_argument("--timeout-min", default="120",
                        help=f"minutes per job, {span('submit', 'timeout_min')} (default 120)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="merge shards made on different hardware")
    return parser


def check_submission(argv: list[str]) -> tuple[dict, list[str]]:
    """The submission's own options and the run options after `--`, every one checked as `run` checks
    them (the plan is built here), with the shard count against the plan's cells and the output folder
    against an earlier submission; UsageError (exit 2) before anything is submitted or written."""
    from bench.config import build_plan, check_output_dir
    from bench.config.options import check_command

    own, run_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    values = check_command("submit", vars(make_parser().parse_args(own)), local=False)
    # Where the jobs run on this machine (--local, or no Slurm here), its cores and GPUs bound the plan.
    plan = _run_plan(run_args, local=values["local"] or not _on_slurm(), build=build_plan)
    cells = _cell_count(plan)
    if values["shards"] > cells:
        raise UsageError(
            f"--shards {values['shards']} is more than this plan's {cells} cell(s) (a shard holds whole cells, so "
            f"every engine of a cell stays paired); give --shards from 1 to {cells}"
        )
    out = Path(values["out"])
    _check_earlier_submission(out)
    check_output_dir(out)
    return values, run_args


def _run_plan(run_args: list[str], local: bool, build):
    from bench.commands.cli import _options_from_args, make_parser

    run = make_parser().parse_args(["run", *run_args])
    given = [name for name in SET_BY_SUBMIT if getattr(run, name, None)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"submit sets {flags} for each shard itself: leave {flags} out of the run options")
    preset_name, options = _options_from_args(run, local=local)  # on Slurm the jobs' nodes, not this one, have the GPUs
    return build(options, preset=preset_name)


def _on_slurm() -> bool:
    try:
        import submitit
    except ImportError:
        return False
    return submitit.AutoExecutor.which() == "slurm"


def _cell_count(plan) -> int:
    from bench.execute.runner import cell_key

    return len({cell_key(config) for config in plan.configs})


def _check_earlier_submission(out: Path) -> None:
    merged = out / "merged"
    if (merged / "results.jsonl").exists():
        raise UsageError(f"{out} already holds a finished sweep ({merged}); give another --out")
    started = sorted(p for p in out.glob("shard-*") if (p / "plan.json").exists() or (p / "results.jsonl").exists())
    if started:
        raise UsageError(
            f"{out} holds the shards of an earlier submission ({', '.join(p.name for p in started)}); continue each "
            f"with python -m bench run --resume {started[0]} (and the others alike), then python -m bench merge "
            f"{merged} {' '.join(map(str, started))}; or give another --out"
        )


def main(argv: list[str] | None = None) -> int:
    from bench.commands.cli import main as bench_main

    argv = sys.argv[1:] if argv is None else argv
    try:
        values, run_args = check_submission(argv)
        try:
            import submitit
        except ImportError:
            raise UsageError("submit needs submitit: pip install submitit") from None
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(values["out"])
    return _submit(values, run_args, out, submitit, bench_main)


def _submit(values: dict, run_args: list[str], out: Path, submitit, bench_main) -> int:
    """Submit, wait and merge, OUT locked. Ctrl-C, SIGTERM or SIGHUP end every local job with its shard
    runner and workers, then say, as `bench run` does, what is kept and how to continue."""
    import os

    from bench.commands.cli import interrupted
    from bench.execute import launch
    from bench.store import folders

    try:
        folders.hold(out)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if values["local"]:  # the local jobs watch this process: they end when it is gone, however it ends
        os.environ[launch.ROOT_ENV] = launch.child_env()[launch.ROOT_ENV]
    shards = " ".join(str(out / f"shard-{i}") for i in range(1, values["shards"] + 1))
    merge = f"python -m bench merge {out / 'merged'} {shards}"
    try:
        with launch.stop_signals():
            return _submit_and_merge(values, run_args, out, submitit, bench_main)
    except (KeyboardInterrupt, launch.Interrupted) as stop:
        if not values["local"]:
            return interrupted(stop, f"the Slurm jobs go on (scancel stops them); when they have ended: {merge}")
        with launch.signals_ignored():
            launch.end_descendants()
        return interrupted(stop, f"the shards' records are kept in {shards}; continue each with python -m bench "
                                 f"run --resume SHARD, then: {merge}")  # fmt: skip
    finally:
        folders.release_all()


def _submit_and_merge(values: dict, run_args: list[str], out: Path, submitit, bench_main) -> int:
    log_folder = out / "submitit"
    if values["local"]:
        executor = submitit.LocalExecutor(folder=log_folder)
        executor.update_parameters(timeout_min=values["timeout_min"])
    else:
        executor = submitit.AutoExecutor(folder=log_folder)
        executor.update_parameters(timeout_min=values["timeout_min"], slurm_partition=values["partition"],
                                   gpus_per_node=values["gpus_per_node"], tasks_per_node=1, nodes=1)  # fmt: skip
    try:
        folders = submit_shards(run_args, values["shards"], out, executor)
    except ShardsFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    merge_args = ["merge", str(out / "merged"), *map(str, folders)] + (["--force"] if values["force"] else [])
    return bench_main(merge_args)


if __name__ == "__main__":
    sys.exit(main())
