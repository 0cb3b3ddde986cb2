"""The measuring layer, inside a worker: the clock and the alternating window order (timing), one
configuration's life from build to record (session), memory and utilisation monitors, and the statistics
derived from raw samples (stats)."""
