"""Imported first by the fork server (see `supervisor.WORKER_MODULES`): it ignores SIGTERM.

A service manager signals every process of the service at once, and the workers' exit codes
reach the supervisor through the fork server, so it must outlive their graceful stop. Each
worker sets its own handlers as it starts (`supervisor.run_child`). Done here rather than by
starting the server with SIGTERM ignored, which would leave the supervisor ignoring a SIGTERM
that arrives meanwhile on any of its threads.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
