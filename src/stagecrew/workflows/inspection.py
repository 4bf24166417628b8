"""`app.workflows`: read and cancel workflows by id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..backends.workflows import Workflow
from .handle import WorkflowHandle, require

if TYPE_CHECKING:
    from ..app import App


class Workflows:
    """`app.workflows.get(id)`, `.cancel(id)`, `.handle(id)`; each with an async form."""

    def __init__(self, app: App) -> None:
        self._app = app

    def handle(self, workflow_id: str) -> WorkflowHandle:
        return WorkflowHandle(self._app, workflow_id)

    def get(self, workflow_id: str) -> Workflow:
        """The workflow as a whole: status, current step, result, and its members' jobs."""
        return require(self._app.backend.get_workflow(workflow_id), workflow_id)

    async def get_async(self, workflow_id: str) -> Workflow:
        return require(await self._app.backend.get_workflow_async(workflow_id), workflow_id)

    def cancel(self, workflow_id: str) -> Workflow:
        return require(self._app.backend.cancel_workflow(workflow_id), workflow_id)

    async def cancel_async(self, workflow_id: str) -> Workflow:
        return require(await self._app.backend.cancel_workflow_async(workflow_id), workflow_id)
