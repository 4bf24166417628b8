"""The `stagecrew demo` workload: a realistic mix of jobs run by real worker processes.

`stagecrew.demo.tasks` holds the demo's app and tasks; `workload` enqueues the
jobs and runs the workers; `summary` reads back what happened from the store.
"""
