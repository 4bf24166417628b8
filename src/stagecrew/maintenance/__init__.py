"""Housekeeping that runs inside every worker process: rescuer, pruner, scheduler, priority
aging and alert evaluation."""
