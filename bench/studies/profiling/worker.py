"""One engine's part of a profile or gradient-flow study, in a process of its own.

    python -m bench.studies.profiling.worker ENGINE TASK REQUEST.json RESULT.json

TASK is "profile" or "gradient_flow". The engine's backend sets up the process (threads, TF32, memory
growth) as it does for the harness; the result is written as JSON, with the process's environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    engine, task, request_path, result_path = sys.argv[1:5]
    request = json.loads(Path(request_path).read_text())

    from bench.backends import get_backend
    from bench.config import Settings

    backend = get_backend(engine)
    env = backend.setup_process(Settings(threads=request.get("threads", 0), seed=request.get("seed", 0)))
    if engine == "torch":
        from bench.studies.profiling import torch_engine as module
    elif engine == "keras-tensorflow":
        from bench.studies.profiling import keras_engine as module
    elif engine == "keras-jax":
        from bench.studies.profiling import jax_engine as module
    else:
        raise SystemExit(f"{engine}: no profiling support")
    if not hasattr(module, task):
        raise SystemExit(f"{engine}: no {task.replace('_', '-')} support")
    result = getattr(module, task)(request)
    result["env"] = env
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
