"""Housekeeping that runs inside every worker process: rescuer and pruner."""
