"""Profiling: where a step's time, memory and gradients go, per stage and per operator, in every engine.

`python -m bench profile MODEL` times each stage of the lowered model as its own sub-model, splits a
training step into forward, backward and optimizer, reads each framework's own profiler into one set of
operator categories, and saves traces. Each engine runs its part (this module's engine files: profile,
gradient flow, the equal-work check) in a process of its own, through the one task entry
(bench/execute/tasks.py).
"""
