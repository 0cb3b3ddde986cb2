"""Studies that train networks on real data through the backends' own training steps (`python -m bench train`)."""
