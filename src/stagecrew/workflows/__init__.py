"""Workflows: `chain`, `group`, `chord` of task signatures, with their state in the store.

See docs/workflows.md; the store side is `backends/workflows.py`.
"""

from __future__ import annotations

from ..backends.workflows import OnFailure, Workflow, WorkflowStatus
from .canvas import Chain, Chord, Group, Signature, chain, chord, group
from .handle import WorkflowHandle

__all__ = [
    "Chain",
    "Chord",
    "Group",
    "OnFailure",
    "Signature",
    "Workflow",
    "WorkflowHandle",
    "WorkflowStatus",
    "chain",
    "chord",
    "group",
]
