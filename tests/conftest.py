"""Shared test set-up: quiet TensorFlow, import torch before TensorFlow, and the published figures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

try:  # torch first: with a CUDA build of torch, TensorFlow first then triton crashed the process
    import torch  # noqa: F401
except ImportError:
    pass
