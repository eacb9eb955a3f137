"""Flows: versioned DAGs of steps, runs and step runs, the scheduler and its Celery tasks, traces."""
