"""Engines, their aliases and lazy imports: importing this package needs no framework.

An engine is a model library on a backend: `torch` (PyTorch), `keras-tensorflow` (Keras 3 on
TensorFlow) and `keras-jax` (Keras 3 on JAX). The two Keras engines build the same Keras models;
Keras picks its backend once per process (KERAS_BACKEND), so a process holds one Keras engine.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

FRAMEWORKS = ("torch", "keras-tensorflow", "keras-jax")
KERAS_ENGINES = {"keras-tensorflow": "tensorflow", "keras-jax": "jax"}  # engine -> KERAS_BACKEND
ALIASES = {
    "torch": "torch",
    "pytorch": "torch",
    "keras-tensorflow": "keras-tensorflow",
    "tensorflow": "keras-tensorflow",
    "tf": "keras-tensorflow",
    "keras": "keras-tensorflow",
    "keras-jax": "keras-jax",
    "jax": "keras-jax",
}
_EXTRAS = {"torch": "torch", "keras-tensorflow": "tensorflow", "keras-jax": "jax"}
_MODULES = {"torch": ("torch",), "keras-tensorflow": ("tensorflow", "keras"), "keras-jax": ("jax", "keras")}


class FrameworkNotInstalledError(ImportError):
    """Raised when an engine is asked for but not importable; the message names the extra to install."""


def canonical_framework(name: str) -> str:
    try:
        return ALIASES[str(name).lower()]
    except KeyError:
        raise ValueError(
            f"unknown framework {name!r}; valid frameworks: {', '.join(FRAMEWORKS)} "
            "(aliases: pytorch; tensorflow, tf, keras; jax)"
        ) from None


def is_installed(framework: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in _MODULES[canonical_framework(framework)])


def _select_keras_backend(framework: str) -> None:
    """Point Keras at the engine's backend before Keras is first imported; refuse a second backend."""
    backend = KERAS_ENGINES[framework]
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != backend:
            raise RuntimeError(
                f"this process imported Keras with the {current!r} backend; {framework} needs {backend!r} "
                "(KERAS_BACKEND is process-wide: run each Keras engine in its own process)"
            )
        return
    os.environ["KERAS_BACKEND"] = backend


def require(framework: str, torch_first: bool = True):
    """Import and return the engine's framework module (torch, tensorflow or jax), or say which extra
    installs it. For a Keras engine, Keras's backend is set first.

    TensorFlow is imported after torch whenever torch is installed: with a CUDA build of torch,
    importing TensorFlow first and then anything that loads triton crashed the process. A process that
    will never use torch (the harness's TensorFlow worker) passes torch_first=False and saves the import.
    """
    framework = canonical_framework(framework)
    if not is_installed(framework):
        raise FrameworkNotInstalledError(
            f"{framework} is not installed; install it with: pip install 'cnn-bench[{_EXTRAS[framework]}]'"
        )
    if framework in KERAS_ENGINES:
        _select_keras_backend(framework)
    if framework == "keras-tensorflow" and torch_first and importlib.util.find_spec("torch") is not None:
        importlib.import_module("torch")
    return importlib.import_module(_MODULES[framework][0])
