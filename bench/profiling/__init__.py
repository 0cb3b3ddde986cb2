"""Profiling: where a step's time, memory and gradients go, per stage and per operator, in every engine.

`python -m bench profile MODEL` times each stage of the lowered model as its own sub-model, splits a
training step into forward, backward and optimizer, reads each framework's own profiler into one set of
operator categories, and saves traces; `python -m bench gradient-flow` records per-layer gradient norms
of plain and residual CIFAR nets. Each engine runs in its own worker process (`worker.py`).
"""
