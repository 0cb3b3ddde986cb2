"""Running a plan: the worker process and its client, the sweep runner (pairing, resume, max-batch search),
the launcher of worker processes, shards of a sweep and their submission, and the time estimate."""
