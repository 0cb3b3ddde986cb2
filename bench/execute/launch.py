"""Every child process of the harness is started here, and ended here with everything below it.

    start(python_module("bench.execute.worker", ...), stdin=..., stdout=...)   a child, registered
    run(command, timeout=...)                                                  start, wait, end its tree
    reap(process)                                                              end a child's whole tree

A child gets a session of its own (a Ctrl-C at the terminal reaches the harness alone, which then ends
its children itself) and PR_SET_PDEATHSIG=SIGKILL on Linux (the kernel kills it when its parent dies,
however the parent dies). Python children run through `python -m bench.execute.launch MODULE ARGS`, which
first installs the child-side guard: a thread that ends the process when its parent changes (an orphan)
or when the harness's root process is gone (CNN_BENCH_ROOT names it, for processes several levels
down: torchrun's ranks, a job started by submitit). Reaping walks /proc for the child's descendants by
parent PID, whatever sessions they made for themselves (torchrun starts its ranks as session leaders,
so its process group misses them), stops them all (so none can start another: torchrun goes on
starting ranks while it lives) and then kills them. The CLI reaps every live child on SIGTERM, SIGINT and SIGHUP (see
`stop_signals`), a timeout reaps the child that ran out of time, and an exit reaps whatever is left.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
ROOT_ENV = "CNN_BENCH_ROOT"  # "PID:START" of the harness's root process, inherited all the way down
PARENT_ENV = "CNN_BENCH_PARENT"  # the launcher's PID, read (and dropped) by the child's guard
LINUX = sys.platform.startswith("linux")
PR_SET_PDEATHSIG = 1

_live: dict[int, subprocess.Popen] = {}  # PID -> the children started here and not yet reaped
_lock = threading.Lock()


class Interrupted(BaseException):
    """SIGTERM or SIGHUP, raised where the harness is, so it stops as it does on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- /proc ---------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent PID, start time in clock ticks, state) of a process, None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19]), fields[0].decode()


def _table() -> dict[int, tuple[int, int, str]]:
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if name.isdigit():
            entry = _stat(int(name))
            if entry is not None:
                table[int(name)] = entry
    return table


def descendants(pid: int, table: dict | None = None) -> list[int]:
    """Every process below `pid` by parent PID (children, their children, ...), sessions regardless."""
    table = _table() if table is None else table
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, ())
    return found


def alive(pid: int) -> bool:
    entry = _stat(pid)
    return entry is not None and entry[2] not in ("Z", "X")


def _is(pid: int, identity: str) -> bool:
    """Whether `pid` is still the live process `identity` names (not a zombie, not a reused PID)."""
    entry = _stat(pid)
    return entry is not None and f"{pid}:{entry[1]}" == identity and entry[2] not in ("Z", "X")


def identity(pid: int) -> str | None:
    """The process as "PID:START" (START: clock ticks since boot), told apart from a later one with its PID."""
    entry = _stat(pid)
    return f"{pid}:{entry[1]}" if entry else None


# --- the child side -----------------------------------------------------------------------------

if LINUX:
    try:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, AttributeError):
        _libc = None
else:
    _libc = None


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGKILL when the parent dies."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def guard() -> None:
    """In a child: end this process when its parent dies or changes, or when the root process is gone."""
    _die_with_parent()  # again, for a process not started by `start` (a rank, a submitit job)
    parent = os.getppid()
    launcher = os.environ.pop(PARENT_ENV, "")  # the PID of whoever called `start` (not inherited further)
    if launcher.isdigit() and int(launcher) != parent and not alive(int(launcher)):
        os._exit(1)  # it died before this process could watch it (a live one is an ancestor further up)
    root = os.environ.get(ROOT_ENV, "")
    root_pid = int(root.split(":")[0]) if root[:1].isdigit() else None
    check_root = root_pid is not None and ":" in root and os.path.isdir("/proc/self")

    def orphaned() -> str | None:
        if os.getppid() != parent:
            return f"its parent (PID {parent}) is gone"
        if check_root and not _is(root_pid, root):
            return f"the harness (PID {root_pid}) is gone"
        return None

    def watch() -> None:
        while True:
            why = orphaned()
            if why:
                print(f"{Path(sys.argv[0]).name} (PID {os.getpid()}): {why}; exiting", file=sys.stderr, flush=True)
                os._exit(1)
            time.sleep(0.5)

    if orphaned():
        os._exit(1)
    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _child_main(argv: list[str]) -> None:
    """`python -m bench.execute.launch MODULE ARGS`: the guard, then MODULE as `python -m` would run it."""
    import runpy

    if not argv:
        raise SystemExit("usage: python -m bench.execute.launch MODULE [ARGS...]")
    guard()
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


# --- the parent side ----------------------------------------------------------------------------


def python_module(module: str, *args: str) -> list[str]:
    """The command that runs `python -m MODULE ARGS` in a child under the guard."""
    return [sys.executable, "-m", "bench.execute.launch", module, *map(str, args)]


def child_env(base: dict | None = None, **extra: str) -> dict:
    """The environment of a child: the repository on PYTHONPATH, TensorFlow quiet, the root named."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else ROOT
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault(ROOT_ENV, identity(os.getpid()) or str(os.getpid()))
    env.update(extra)
    return env


def start(command: list[str], *, env: dict | None = None, **popen) -> subprocess.Popen:
    """Start a child in a session of its own, killed by the kernel if this process dies; registered
    until `reap`. Keyword arguments go to subprocess.Popen (stdin, stdout, stderr, cwd, text)."""
    env = child_env() if env is None else dict(env)
    env[PARENT_ENV] = str(os.getpid())
    with _lock:
        process = subprocess.Popen(
            command, env=env, start_new_session=True, preexec_fn=_die_with_parent if _libc else None, **popen
        )
        _live[process.pid] = process
    return process


def _stop_tree(pid: int) -> dict[int, int]:
    """SIGSTOP `pid` and every descendant, again until no new process appears; {PID: start time}."""
    stopped: dict[int, int] = {}
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        table = _table()
        found = ([pid] if pid in table else []) + descendants(pid, table)
        new = [p for p in found if p not in stopped and p != os.getpid() and table[p][2] not in ("Z", "X")]
        if not new:
            # every stop signal delivered? a process still running may fork once more before it stops
            if all((_stat(p) or (0, 0, "T"))[2] in ("T", "t", "Z", "X") for p in stopped):
                break
            time.sleep(0.01)
            continue
        for p in new:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGSTOP)
                stopped[p] = table[p][1]
    return stopped


def kill_tree(pid: int) -> list[int]:
    """SIGKILL `pid` and all its descendants (stopped first, so none escapes by forking); the PIDs."""
    if not os.path.isdir("/proc/self"):  # no /proc: the process group is what can be reached
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        return [pid]
    stopped = _stop_tree(pid)
    for p, started in stopped.items():
        entry = _stat(p)
        if entry is not None and entry[1] == started:  # the same process, not a reused PID
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
    return list(stopped)


def reap(process: subprocess.Popen) -> int:
    """End `process` and its whole tree, wait for it and forget it; its exit status."""
    if process.poll() is None:
        kill_tree(process.pid)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): leave it, say so
        print(f"warning: child PID {process.pid} did not end within 30 s of SIGKILL", file=sys.stderr)
        code = -signal.SIGKILL
    with _lock:
        _live.pop(process.pid, None)
    return code


def reap_all() -> None:
    """End every child started here that is still registered, with its tree."""
    with _lock:
        processes = list(_live.values())
    for process in processes:
        reap(process)


def end_descendants() -> list[int]:
    """End every process below this one, started here or not (submitit's job processes); the PIDs."""
    reap_all()
    ended = []
    for child in [p for p, (parent, _, _) in _table().items() if parent == os.getpid()]:
        ended += kill_tree(child)
        with contextlib.suppress(ChildProcessError, OSError):
            for _ in range(300):  # collect it (it is our child), so it leaves no zombie
                if os.waitpid(child, os.WNOHANG)[0]:
                    break
                time.sleep(0.01)
    return ended


def run(command: list[str], *, timeout: float | None = None, env: dict | None = None, **popen):
    """Start `command`, wait for it (at most `timeout` s: then its tree is ended and TimeoutExpired
    raised), and end its tree; a CompletedProcess. An exception or signal while waiting ends it too."""
    process = start(command, env=env, **popen)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:  # TimeoutExpired, KeyboardInterrupt, Interrupted, ...
        reap(process)
        raise
    code = reap(process)
    return subprocess.CompletedProcess(command, code, stdout, stderr)


atexit.register(reap_all)


# --- signals ------------------------------------------------------------------------------------


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals():
    """Within: SIGTERM and SIGHUP raise Interrupted as Ctrl-C raises KeyboardInterrupt (a signal already
    ignored, as under nohup, stays ignored). Only the main thread can set handlers; elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: signal.signal(sig, _raise_interrupted)
        for sig in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def signals_ignored():
    """Within: SIGINT, SIGTERM and SIGHUP are ignored (the clean-up after an interruption, which a
    second Ctrl-C must not cut short into a traceback)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def signal_name(stop: BaseException) -> tuple[str, int]:
    """The signal behind an interruption (KeyboardInterrupt is SIGINT): (name, number)."""
    signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
    return signal.Signals(signum).name, int(signum)


if __name__ == "__main__":
    from bench.execute.launch import _child_main as main  # the module's own copy, not this __main__ one

    main(sys.argv[1:])
