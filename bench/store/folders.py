"""One writer per output folder, and folders that appear whole.

`hold(folder)` takes an advisory fcntl.flock on FOLDER/.lock for the life of the process (or until
`release_all`): a second writer of the same folder (run, resume, merge, scale, profile, gradient-flow)
stops at once with exit status 2, naming the holder's PID and command line, which the holder wrote into
the lock file. The kernel frees a flock when its holder dies, however it dies; a lock file whose lock is
free was left by a dead process and is taken over, with a note.

`Staged(folder)` builds a folder that is written whole at the end (a merge, a profile, a gradient-flow
study) in PARENT/.building/NAME.PID, and `commit()` renames it into place: an interruption, even
SIGKILL, never leaves a folder that looks finished but holds part of its files. A stale build of the
same folder (its process died) is removed by the next writer, which holds the folder's lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

from bench.config import UsageError

LOCK_NAME = ".lock"
BUILDING = ".building"

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None


class FolderBusy(UsageError):
    """Another live process holds the folder's lock (exit status 2)."""


def _command_line() -> str:
    """This process's command line as it was typed (`python -m bench run ...`), the interpreter's path cut."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return " ".join(shlex.quote(part) for part in [Path(argv[0]).name, *argv[1:]])


def _holder(descriptor: int) -> dict:
    try:
        os.lseek(descriptor, 0, os.SEEK_SET)
        text = os.read(descriptor, 1 << 16).decode("utf-8", "replace")
        data = json.loads(text) if text.strip() else {}
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that has not yet written its PID"
    return f"PID {holder.get('pid', '?')} ({holder.get('command', 'command line unknown')})"


class FolderLock:
    """The flock on one folder's .lock, held by this process."""

    def __init__(self, folder: Path, descriptor: int, created: bool = False):
        self.folder = Path(folder)
        self.descriptor = descriptor
        self.created = created  # made for this command: removed on release when nothing was written

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def moved(self, folder: Path) -> None:
        """The lock file went with a renamed folder (its inode, and so the lock, are the same)."""
        self.folder = Path(folder)

    def release(self) -> None:
        if self.descriptor < 0:
            return
        with contextlib.suppress(OSError):  # only our own lock file: a later holder's is another inode
            if os.stat(self.path).st_ino == os.fstat(self.descriptor).st_ino:
                os.unlink(self.path)
        os.close(self.descriptor)  # closing the last descriptor frees the flock
        self.descriptor = -1
        if self.created:
            with contextlib.suppress(OSError):  # only if empty (refused, or interrupted before any write)
                self.folder.rmdir()


_held: dict[Path, FolderLock] = {}


def hold(folder: Path, say=None, created: bool | None = None) -> FolderLock:
    """Take FOLDER/.lock (the folder is created if need be) for this process; FolderBusy when a live
    process holds it (this one too, through another descriptor: a folder has one writer). A folder made
    for the command (`created`: by this call unless told) is removed on release if it is still empty."""
    folder = Path(folder)
    created = not folder.exists() if created is None else created
    path = folder / LOCK_NAME
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    for _ in range(20):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"output directory {str(folder)!r} is not writable: {error.strerror or error}") from None
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed by a holder that released it meanwhile
            continue
        except OSError as error:
            raise UsageError(f"output directory {str(folder)!r} is not writable: {error.strerror or error}") from None
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(descriptor)
                for _ in range(20):  # the holder writes its PID right after it takes the lock
                    if holder:
                        break
                    time.sleep(0.05)
                    holder = _holder(descriptor)
                os.close(descriptor)
                raise FolderBusy(
                    f"{folder} is being written by {_describe(holder)}; one process writes a folder at a time: "
                    "wait for it to end, or give another folder"
                ) from None
        try:  # released and unlinked (or replaced) between our open and our lock: take the new file
            same = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(descriptor)
            continue
        previous = _holder(descriptor)
        if previous:
            say(f"note: {path} was left by {_describe(previous)}, which is no longer running; taken over")
        record = {
            "pid": os.getpid(),
            "command": _command_line(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(descriptor)
        lock = FolderLock(folder, descriptor, created)
        _held[folder.resolve()] = lock
        return lock
    raise UsageError(f"could not take {path}: it keeps being replaced")


def held(folder: Path) -> FolderLock | None:
    return _held.get(Path(folder).resolve())


def held_now() -> set[Path]:
    return set(_held)


def release_all(keep: set[Path] = frozenset()) -> None:
    """Free every lock this process holds but those in `keep` (the end of a command run within another,
    whose locks stay); the process's exit frees them anyway."""
    for key in [k for k in _held if k not in keep]:
        _held.pop(key).release()


# --- folders written whole at the end ------------------------------------------------------------


class Staged:
    """A folder built elsewhere and renamed into place when complete; the folder's lock must be held."""

    def __init__(self, folder: Path, marker: str):
        self.folder = Path(folder)
        self.marker = marker  # the file that makes the folder look finished: moved last if moved one by one
        self.lock = held(self.folder)
        if self.lock is None:
            raise RuntimeError(f"Staged({folder}): hold the folder's lock first")
        building = self.folder.parent / BUILDING
        building.mkdir(exist_ok=True)
        mine = re.compile(re.escape(self.folder.name) + r"\.\d+")
        for entry in building.iterdir():  # builds of this folder (we hold its lock), or of any by a dead process
            pid = entry.name.rpartition(".")[2]
            if mine.fullmatch(entry.name) or (pid.isdigit() and not _running(int(pid))):
                shutil.rmtree(entry, ignore_errors=True)
        self.path = building / f"{self.folder.name}.{os.getpid()}"
        self.path.mkdir()

    def commit(self) -> Path:
        """Put the built folder in place: one rename when the folder is empty but for its lock (the
        lock file moves inside first, so the lock stays held), else entry by entry, the marker last."""
        others = [e for e in self.folder.iterdir() if e.name != LOCK_NAME]
        if not others:
            os.rename(self.folder / LOCK_NAME, self.path / LOCK_NAME)
            try:
                os.rename(self.path, self.folder)  # replaces the empty folder
            except OSError:
                os.rename(self.path / LOCK_NAME, self.folder / LOCK_NAME)
                raise
        else:
            entries = sorted(self.path.iterdir(), key=lambda e: e.name == self.marker)
            for entry in entries:
                target = self.folder / entry.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(entry, target)
            self.path.rmdir()
        self.lock.moved(self.folder)
        _fsync_dir(self.folder.parent)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()  # .building, when no other build is under way
        return self.folder

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
