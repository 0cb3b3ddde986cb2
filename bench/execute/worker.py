"""Worker process: the worker side of the protocol, one framework, configurations held as sessions.

Protocol: JSON lines on a private copy of stdout (the real stdout is pointed at stderr, so whatever a
framework prints can never corrupt it). The runner (runner.WorkerClient, the client side) writes requests to
stdin and reads one reply per request:

  {"cmd": "prepare", "id": K, "config": {...}}   -> {"prepared": {"steps_per_window": N, ...}} or {"record": failure}
  {"cmd": "window", "id": K, "discard": false}   -> {"window": {"seconds": s, "steps": N}} or {"record": failure}
  {"cmd": "explain_chunk", "id": K}              -> {"chunk": {"seconds": s, "steps": N}} or {"record": failure}
  {"cmd": "finish", "id": K, "cell": {...}}      -> {"record": {...}}
  {"cmd": "probe", "config": {...}}              -> {"probe": {"status": "ok", ...}} or {"record": failure}
  {"cmd": "setup" | "step" | "steps_end"}        stepwise use by the pytest-benchmark suite
  {"cmd": "exit"}
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
import traceback


def _exit_when_orphaned(parent: int) -> None:
    """A worker never outlives its runner: when the parent is gone, stop at once, even mid-step."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def main() -> int:
    framework = sys.argv[1]
    settings_json = sys.argv[2]
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()

    from bench.backends import get_backend
    from bench.config import Config, Settings
    from bench.measure.monitors import ProcessMemory
    from bench.measure.session import Session
    from bench.measure.timing import timed_step
    from bench.store.records import Record

    settings = Settings(**json.loads(settings_json))
    backend = get_backend(framework)
    process_env = backend.setup_process(settings)
    process_env["framework"] = framework
    backend.warm_framework()
    if settings.explain:
        backend.warm_profiler()  # the explain pass's profiler: in the baseline, not in a configuration's peak
    memory = ProcessMemory()
    memory.set_baseline()  # after the framework's start-up: what every configuration is measured above
    sessions: dict = {}
    stepping = None

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message, default=Record.to_json) + "\n")  # a record travels as its JSON
        protocol.flush()

    def session_call(key, action):
        """Run one stage of a session; a failure ends the session and becomes its record."""
        session = sessions[key]
        try:
            return action(session)
        except Exception as error:
            sessions.pop(key, None)
            return {"record": session.failure(error)}

    reply({"ready": True, "env": process_env})
    for line in sys.stdin:
        request = json.loads(line)
        command = request["cmd"]
        try:
            if command == "prepare":
                key = request["id"]
                sessions[key] = Session(backend, Config.from_dict(request["config"]), settings, process_env, memory)
                reply(session_call(key, lambda s: {"prepared": s.prepare()}))
            elif command == "window":
                discard = bool(request.get("discard"))
                reply(session_call(request["id"], lambda s, discard=discard: {"window": s.window(discard)}))
            elif command == "explain_chunk":  # one unprofiled run of the explain pass, in the cell's alternation
                reply(session_call(request["id"], lambda s: {"chunk": s.explain_chunk()}))
            elif command == "finish":
                key, cell = request["id"], request.get("cell")
                reply(session_call(key, lambda s, cell=cell: {"record": s.finish(cell)}))
                sessions.pop(key, None)
            elif command == "probe":  # does one step fit? the model kept from the last probe is reused
                sessions["probe"] = Session(backend, Config.from_dict(request["config"]), settings, process_env, memory)

                def one_step(session):
                    build_s, first_s = session.build(keep_model=True)
                    session.prepared = None
                    return {"probe": {"status": "ok", "first_step_s": build_s + first_s}}

                reply(session_call("probe", one_step))
                sessions.pop("probe", None)
            elif command == "setup":
                if request.get("disable_gc"):  # --benchmark-disable-gc, applied where the steps run
                    gc.collect()
                    gc.disable()
                stepping = Session(backend, Config.from_dict(request["config"]), settings, process_env, memory)
                build_s, first_s = stepping.build()
                # One more step with the peak sampled, then none beside the steps pytest-benchmark times.
                timed_step(stepping.ready.step, stepping.ready.sync)
                memory.hold()
                reply({"first_step_s": build_s + first_s, "params": stepping.prepared.params})
                cpu_start, wall_start = time.process_time(), time.perf_counter()
            elif command == "step":
                reply({"seconds": timed_step(stepping.prepared.step, stepping.prepared.sync)})
            elif command == "steps_end":
                peak, source = stepping.peak_memory()
                wall = time.perf_counter() - wall_start
                cores = (time.process_time() - cpu_start) / wall if wall else None
                stepping = None
                gc.enable()
                reply({"peak_memory_bytes": peak, "memory_source": source, "cpu_util_cores": cores, "env": process_env})
            elif command == "exit":
                return 0
            else:
                reply({"error": f"unknown command {command!r}"})
        except Exception as error:
            reply({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
