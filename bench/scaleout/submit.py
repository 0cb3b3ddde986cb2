"""Submit a sweep's shards as a job array through submitit (Slurm, or local processes), then merge them.

    python -m bench.scaleout.submit --shards 4 --out results/runs/my-sweep -- --preset gpu-default
    python -m bench.scaleout.submit --shards 2 --local --out /tmp/sweep -- --preset smoke

Each job runs `python -m bench run RUN_OPTIONS --shard I/N --out OUT/shard-I` on whatever node Slurm
gives it (`--partition`, `--gpus-per-node`, `--timeout-min` pass to submitit); when all have finished,
the shards are merged into OUT/merged (refused if they ran on different hardware, unless --force). A
shard that failed is resumed by running its command again with `--resume OUT/shard-I`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_shard(argv: list[str]) -> int:
    """One job: `bench run` of one shard. In a local job process it first takes the child guard, so it
    ends when the submitting process is gone (submitit's local jobs are meant to outlive it)."""
    import os

    from bench.cli import main
    from bench.launch import guard

    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        guard()
    return main(argv)


def submit_shards(run_args: list[str], shards: int, out: Path, executor) -> list[Path]:
    """Submit one job per shard with `executor`, wait for all, and return their run folders."""
    folders = [out / f"shard-{index}" for index in range(1, shards + 1)]
    argvs = [["run", *run_args, "--shard", f"{i}/{shards}", "--out", str(f), "--no-report"]
             for i, f in enumerate(folders, start=1)]  # fmt: skip
    jobs = executor.map_array(run_shard, argvs)
    codes = [job.result() for job in jobs]
    failed = [f"shard {i} (exit {code})" for i, code in enumerate(codes, start=1) if code != 0]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} failed; resume with python -m bench run --resume {out}/shard-I")
    return folders


def main(argv: list[str] | None = None) -> int:
    import submitit

    from bench.cli import main as bench_main

    argv = sys.argv[1:] if argv is None else argv
    own, run_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout.submit", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--local", action="store_true", help="run the jobs as local processes (no Slurm)")
    parser.add_argument("--partition")
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--timeout-min", type=int, default=120)
    parser.add_argument("--force", action="store_true", help="merge shards made on different hardware")
    args = parser.parse_args(own)
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    out = Path(args.out)
    return _submit(args, run_args, out, submitit, bench_main)


def _submit(args, run_args: list[str], out: Path, submitit, bench_main) -> int:
    """Submit, wait and merge, OUT locked. Ctrl-C, SIGTERM or SIGHUP end every local job with its shard
    runner and workers, then say, as `bench run` does, what is kept and how to continue."""
    import os

    from bench import folders, launch
    from bench.cli import interrupted
    from bench.config import UsageError

    try:
        folders.hold(out)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.local:  # the local jobs watch this process: they end when it is gone, however it ends
        os.environ[launch.ROOT_ENV] = launch.child_env()[launch.ROOT_ENV]
    shards = " ".join(str(out / f"shard-{i}") for i in range(1, args.shards + 1))
    merge = f"python -m bench merge {out / 'merged'} {shards}"
    try:
        with launch.stop_signals():
            return _submit_and_merge(args, run_args, out, submitit, bench_main)
    except (KeyboardInterrupt, launch.Interrupted) as stop:
        if not args.local:
            return interrupted(stop, f"the Slurm jobs go on (scancel stops them); when they have ended: {merge}")
        with launch.signals_ignored():
            launch.end_descendants()
        return interrupted(stop, f"the shards' records are kept in {shards}; continue each with python -m bench "
                                 f"run --resume SHARD, then: {merge}")  # fmt: skip
    finally:
        folders.release_all()


def _submit_and_merge(args, run_args: list[str], out: Path, submitit, bench_main) -> int:
    log_folder = out / "submitit"
    if args.local:
        executor = submitit.LocalExecutor(folder=log_folder)
        executor.update_parameters(timeout_min=args.timeout_min)
    else:
        executor = submitit.AutoExecutor(folder=log_folder)
        executor.update_parameters(timeout_min=args.timeout_min, slurm_partition=args.partition,
                                   gpus_per_node=args.gpus_per_node, tasks_per_node=1, nodes=1)  # fmt: skip
    folders = submit_shards(run_args, args.shards, out, executor)
    merge_args = ["merge", str(out / "merged"), *map(str, folders)] + (["--force"] if args.force else [])
    return bench_main(merge_args)


if __name__ == "__main__":
    sys.exit(main())
