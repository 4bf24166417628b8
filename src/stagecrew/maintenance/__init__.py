"""Housekeeping that runs inside every worker process: rescuer, pruner and scheduler."""
