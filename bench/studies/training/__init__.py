"""The degradation study: plain and residual CIFAR nets trained on real data in every engine (`python -m bench train`)."""
