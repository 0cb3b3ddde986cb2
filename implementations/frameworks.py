"""Framework names, aliases and lazy imports: importing this package needs neither framework."""

from __future__ import annotations

import importlib
import importlib.util

FRAMEWORKS = ("torch", "tensorflow")
_ALIASES = {"torch": "torch", "pytorch": "torch", "tensorflow": "tensorflow", "tf": "tensorflow", "keras": "tensorflow"}
_EXTRAS = {"torch": "torch", "tensorflow": "tensorflow"}
_MODULES = {"torch": "torch", "tensorflow": "tensorflow"}


class FrameworkNotInstalledError(ImportError):
    """Raised when a framework is asked for but not importable; the message names the extra to install."""


def canonical_framework(name: str) -> str:
    try:
        return _ALIASES[str(name).lower()]
    except KeyError:
        raise ValueError(
            f"unknown framework {name!r}; valid frameworks: {', '.join(FRAMEWORKS)} (aliases: pytorch, tf, keras)"
        ) from None


def is_installed(framework: str) -> bool:
    return importlib.util.find_spec(_MODULES[canonical_framework(framework)]) is not None


def require(framework: str, torch_first: bool = True):
    """Import and return the framework's module, or say which extra installs it.

    TensorFlow is imported after torch whenever torch is installed: with a CUDA build of torch,
    importing TensorFlow first and then anything that loads triton crashed the process. A process that
    will never use torch (the harness's TensorFlow worker) passes torch_first=False and saves the import.
    """
    framework = canonical_framework(framework)
    if not is_installed(framework):
        raise FrameworkNotInstalledError(
            f"{framework} is not installed; install it with: pip install 'cnn-bench[{_EXTRAS[framework]}]'"
        )
    if framework == "tensorflow" and torch_first and is_installed("torch"):
        importlib.import_module("torch")
    return importlib.import_module(_MODULES[framework])
