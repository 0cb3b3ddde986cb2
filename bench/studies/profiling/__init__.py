"""Profiling: where a step's time, memory and gradients go, per stage and per operator, in every engine.

`python -m bench profile MODEL` times each stage of the lowered model as its own sub-model, splits a
training step into forward, backward and optimizer, reads each framework's own profiler into one set of
operator categories, and saves traces; gradient flow (bench.studies.gradient_flow) runs in its
workers. Each engine runs in its own worker process (`worker.py`).
"""
