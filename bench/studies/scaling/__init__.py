"""Scaling across replicas and workers: data-parallel replicas per engine, their timed steps and the scaling report."""
