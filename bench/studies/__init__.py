"""Studies built on the harness's steps: operator and stage profiles (profiling), gradient flow, scaling
across replicas and workers, harness overhead, TensorFlow's input signature and thread pools, and training on
real data (`python -m bench train`)."""
