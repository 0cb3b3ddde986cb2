"""Worker process: measures configurations of one framework, one at a time, on request.

Protocol: JSON lines. The runner writes {"cmd": "measure", "config": {...}} to stdin and reads
{"record": {...}} back. The protocol uses a private copy of stdout; the real stdout is pointed at
stderr, so whatever a framework prints can never corrupt it. Commands for stepwise use (the
pytest-benchmark suite): "setup", "step", "finish".
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

    from .backends import get_backend
    from .config import Config, Settings
    from .measure import run_config
    from .monitors import ProcessMemory

    settings = Settings(**json.loads(settings_json))
    backend = get_backend(framework)
    process_env = backend.setup_process(settings)
    process_env["framework"] = framework
    stepping = None

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    reply({"ready": True, "env": process_env})
    for line in sys.stdin:
        request = json.loads(line)
        command = request["cmd"]
        try:
            if command == "measure":
                chosen = Settings(**request["settings"]) if "settings" in request else settings
                reply({"record": run_config(backend, Config.from_dict(request["config"]), chosen, process_env)})
            elif command == "setup":
                config = Config.from_dict(request["config"])
                if request.get("disable_gc"):  # --benchmark-disable-gc, applied where the steps run
                    gc.collect()
                    gc.disable()
                memory = ProcessMemory()
                memory.reset()
                backend.reset_peak_memory(config)
                started = time.perf_counter()
                stepping = backend.prepare(config, settings)
                stepping.clock.start()
                stepping.step()
                stepping.clock.lap()
                reply({"first_step_s": time.perf_counter() - started, "params": stepping.params})
                cpu_start, wall_start = time.process_time(), time.perf_counter()
            elif command == "step":
                stepping.clock.start()
                stepping.step()
                stepping.clock.lap()
                reply({"seconds": stepping.clock.stop()[0]})
            elif command == "finish":
                peak, source = backend.peak_memory(config)
                if peak is None:
                    peak, source = memory.peak_above_baseline(), memory.source
                wall = time.perf_counter() - wall_start
                cores = (time.process_time() - cpu_start) / wall if wall else None
                stepping = None
                gc.enable()
                backend.release()
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
