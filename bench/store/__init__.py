"""What a run leaves: typed records and the run store (records), run folders (folders), the environment and
the code's provenance (provenance), and atomic writes under a lock (atomic)."""
