"""Beyond one device and one machine: sweeps split into shards that run anywhere and merge into one run."""
