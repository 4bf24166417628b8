"""Observability: what the workers and the store say about themselves.

- `metrics`: the worker's per-process metrics (jobs by outcome, wait and run time, slots).
- `host_metrics`: one endpoint per host, summing a supervisor's worker processes.
- `store_metrics`: fleet-wide gauges read from the store (`stagecrew metrics serve`).
- `metrics_server`: the HTTP endpoint both serve (docs/metrics.md).
- `presence`: a worker's record in the worker registry and its process title.
- `history`: a worker's counts of finished attempts, added to the store's history.
- `unserved`: the producer's warning about a queue no live worker serves.
- `alerts`, `alert_config`: alert rules, in code or a file; their one evaluation per interval
  fleet-wide is maintenance work of the workers (`maintenance/alert_evaluation.py`,
  docs/alerts.md).
- `tracing`: OpenTelemetry spans for enqueue and execution (docs/tracing.md).
"""
