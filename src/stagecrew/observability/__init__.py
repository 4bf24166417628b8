"""Observability: what the workers and the store say about themselves (see docs/metrics.md).

- `metrics`: the worker's per-process metrics (jobs by outcome, wait and run time, slots).
- `host_metrics`: one endpoint per host, summing a supervisor's worker processes.
- `store_metrics`: fleet-wide gauges read from the store (`stagecrew metrics serve`).
- `metrics_server`: the HTTP endpoint both serve.
"""
