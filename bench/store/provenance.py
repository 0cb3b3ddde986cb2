"""When a run or study was made and from what: its start, end and wall seconds, and the git state beside them.

Every run folder's env.json and every study's JSON (profile.json, gradient_flow.json, a scaling folder's
env.json, the overhead benchmark's JSON) carry the same fields, set by `stamp`:

- `start`, `end`: ISO 8601 times in UTC (`end` is null while the work is still going, or if it died unrecorded);
- `wall_s`: seconds of wall time, summed over the segments;
- `segments`: one entry per stretch of work, `{start, end, wall_s, command, outcome, git_commit, git_modified}`;
  a resumed run appends its own segment rather than overwriting the first;
- `git_commit` and `git_modified` (from `host_env`): the commit, and whether the tree differed from it
  (`git status --porcelain` non-empty outside results/).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.store.atomic import write_json

REPO = Path(__file__).resolve().parents[2]
RUNNING = "running"  # the outcome of a segment written at its start and not yet ended


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def command_line(argv: list[str] | None = None) -> str:
    return "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def git_state(root: Path = REPO) -> dict:
    """{"git_commit": the HEAD commit, "git_modified": whether any file outside results/ differs from it or is
    untracked}; both null outside a git checkout."""
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--", ".", ":(exclude)results") if commit is not None else None
    return {
        "git_commit": commit.strip() if commit is not None else None,
        "git_modified": bool(status.strip()) if status is not None else None,
    }


class Segment:
    """One stretch of work, timed from its creation: `open()` describes it while it runs, `closed()` at its end."""

    def __init__(self, command: str | None = None):
        self.start = now_iso()
        self._origin = time.monotonic()
        self.command = command if command is not None else command_line()
        self.git = git_state()

    def open(self) -> dict:
        return {"start": self.start, "end": None, "wall_s": None, "command": self.command, "outcome": RUNNING,
                **self.git}  # fmt: skip

    def closed(self, outcome: str = "completed") -> dict:
        wall = round(time.monotonic() - self._origin, 3)
        return {**self.open(), "end": now_iso(), "wall_s": wall, "outcome": outcome}


def stamp(env: dict, segment: dict) -> dict:
    """`env` with `segment` recorded: it replaces the segment of the same start (the open entry written when it
    began) or is appended after the others; then the totals: `start` (the first segment's, or an older env's
    `time`), `end` (the last segment's) and `wall_s` (the sum over the segments that ended)."""
    segments = [s for s in env.get("segments", []) if s.get("start") != segment["start"]] + [segment]
    ended = [s["wall_s"] for s in segments if s.get("wall_s") is not None]
    return {
        **env,
        "start": env.get("start") or env.get("time") or segments[0]["start"],
        "end": segment["end"],
        "wall_s": round(sum(ended), 3) if ended else None,
        "segments": segments,
    }


def wall_so_far(env: dict) -> float | None:
    """The wall seconds of `env`'s segments to now: the ended ones' and, where the last is still running (the
    report a run writes at its own end, before its segment closes), the time since it began. An earlier segment
    left running died unrecorded: its time is unknown and not counted. None with no segments."""
    total, found = 0.0, False
    segments = env.get("segments", [])
    for index, segment in enumerate(segments):
        if segment.get("wall_s") is not None:
            total, found = total + segment["wall_s"], True
        elif index == len(segments) - 1 and segment.get("outcome") == RUNNING and segment.get("start"):
            began = _dt.datetime.fromisoformat(segment["start"])
            total, found = total + (_dt.datetime.now(_dt.timezone.utc) - began).total_seconds(), True
    return round(total, 3) if found else env.get("wall_s")


class EnvFile:
    """A folder's env.json over one segment of work: written (atomically) with the segment open when made, and
    again with its end, wall time and outcome by `close`. An env.json already there (a resumed run) is kept, and
    the segment appended to it."""

    def __init__(self, path: Path, env: dict, command: str | None = None):
        self.path = Path(path)
        self.segment = Segment(command)
        self.before = self.path.read_bytes() if self.path.exists() else None
        self.env = json.loads(self.before) if self.before is not None else dict(env)
        self.env = stamp(self.env, self.segment.open())
        write_json(self.path, self.env)

    def undo(self) -> None:
        """Put env.json back as it was before this segment (bad input: the command changed nothing)."""
        if self.before is None:
            self.path.unlink(missing_ok=True)
            return
        temporary = self.path.with_name(f".{self.path.name}.undo")
        temporary.write_bytes(self.before)
        os.replace(temporary, self.path)

    def close(self, outcome: str = "completed") -> dict:
        self.env = stamp(self.env, self.segment.closed(outcome))
        write_json(self.path, self.env)
        return self.env


def outcome_of(code: int | None, error: BaseException | None = None) -> str:
    """A segment's outcome from a command's exit status, or from the exception that ended it."""
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            return "interrupted (KeyboardInterrupt)"
        return f"failed: {type(error).__name__}: {str(error)[:200]}".rstrip(": ")
    if code == 0:
        return "completed"
    if code is not None and code > 128:
        import signal

        try:
            return f"interrupted by {signal.Signals(code - 128).name} (exit {code})"
        except ValueError:
            pass
    return f"failed (exit {code})"


def timed(path: Path, env: dict, work) -> int:
    """Run `work()` (a command's body, returning its exit status) with `path` (an env.json) recording the segment:
    open at the start, closed with its end, wall time and outcome however it ends (also on Ctrl-C or a crash).
    Bad input found by `work` (a UsageError: exit 2) leaves env.json as it was."""
    from bench.config import UsageError

    record = EnvFile(path, env)
    try:
        code = work()
    except UsageError:
        record.undo()
        raise
    except BaseException as error:
        try:
            record.close(outcome_of(None, error))
        except OSError as closing:  # a full disk: the error that stopped the work is the one to report
            print(f"warning: {closing}; env.json keeps this segment open", file=sys.stderr)
        raise
    record.close(outcome_of(code))
    return code
