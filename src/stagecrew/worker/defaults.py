"""The worker's out-of-the-box settings, shared by `Worker`, the supervisor and the CLI.

`CONCURRENCY` is how many jobs one worker process runs at once, and so also the most it claims
in one call and the size of its sync job threads (started only as they are needed). 32 keeps
an I/O-bound process busy (a 10 ms job: up to 3,200 jobs/s per process) and lets the store
take claims and outcomes in batches large enough that its own cost per job stays small,
while a fleet of a few processes still spreads slow jobs over its members. CPU-bound work
gains nothing past one running job per core: use `--processes` for it (docs/worker.md,
"Tuning").
"""

CONCURRENCY = 32
