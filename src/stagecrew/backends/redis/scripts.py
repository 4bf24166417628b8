"""The engine's Lua scripts, read from `lua/*.lua` and composed with `lua/_lib.lua`.

Each script file starts with its `#!lua` line (Redis 7 script flags), then a header naming every
key it touches and every argument. The loader inserts the shared helpers of `_lib.lua` that the
script uses right after that first line. How they are sent (by SHA, loaded again on NOSCRIPT):
see driver.py.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_LUA_DIR = resources.files("stagecrew.backends.redis") / "lua"
_FUNCTION = re.compile(r"^local function (\w+)\(")
_CALL = re.compile(r"\b(\w+)\(")


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    text: str
    sha: str

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:10]}>"


@functools.cache
def _library() -> tuple[str, dict[str, str]]:
    """`_lib.lua` split into its preamble and its `local function` blocks, by name."""
    preamble: list[str] = []
    blocks: dict[str, str] = {}
    current: list[str] | None = None
    pending: list[str] = []  # comment lines just above a function
    for line in (_LUA_DIR / "_lib.lua").read_text(encoding="utf-8").splitlines(keepends=True):
        match = _FUNCTION.match(line)
        if match:
            current = [*pending, line]
            pending = []
            blocks[match.group(1)] = ""
            name = match.group(1)
        elif current is not None:
            current.append(line)
            if line.rstrip() == "end":
                blocks[name] = "".join(current)
                current = None
            continue
        elif line.startswith("--"):
            pending.append(line)
        elif line.strip():
            preamble.extend(pending)
            pending = []
            preamble.append(line)
    return "".join(preamble), blocks


def _helpers_for(body: str) -> str:
    """The helpers `body` calls, with the helpers they call, in `_lib.lua`'s order.

    Only what a script uses is sent, because Redis builds every local function of a script
    on each call.
    """
    preamble, blocks = _library()
    wanted: set[str] = set()
    frontier = [body]
    while frontier:
        for name in set(_CALL.findall(frontier.pop())):  # one pass over the text
            if name in blocks and name not in wanted:
                wanted.add(name)
                frontier.append(blocks[name])
    return preamble + "".join(block for name, block in blocks.items() if name in wanted)


@functools.cache
def script(name: str) -> Script:
    """The script `lua/<name>.lua`, ready to send."""
    source = (_LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")
    shebang, _, body = source.partition("\n")
    if not shebang.startswith("#!lua"):
        raise RuntimeError(f"lua/{name}.lua must start with a #!lua line (Redis 7 script flags)")
    text = f"{shebang}\n{_helpers_for(body)}\n{body}"
    return Script(name, text, hashlib.sha1(text.encode("utf-8")).hexdigest())


ENQUEUE = "enqueue"
CLAIM = "claim"
CLAIM_CAPPED = "claim_capped"
PEEK = "peek"
HEARTBEAT = "heartbeat"
ACK = "ack"
RESCUE = "rescue"
RELEASE_WORKER = "release_worker"
CANCEL = "cancel"
REQUEUE = "requeue"
PURGE = "purge"
PRUNE = "prune"
AGE_PRIORITIES = "age_priorities"
SUMMARY = "summary"
LIST_PAGE = "list_page"
FIRE_SCHEDULE = "fire_schedule"
SCHEDULE_PAUSED = "schedule_paused"
QUEUE_CONTROL = "queue_control"
STORE_STEP = "store_step"
ENQUEUE_WORKFLOW = "enqueue_workflow"
CANCEL_WORKFLOW = "cancel_workflow"
READ_LIMITS = "read_limits"
SWAP_LIMITS = "swap_limits"
LIST_LIMITS = "list_limits"
PRUNE_LIMITS = "prune_limits"
RECORD_WORKER = "record_worker"
LIST_WORKERS = "list_workers"
PRUNE_WORKERS = "prune_workers"
ADD_COUNTS = "add_counts"
READ_COUNTS = "read_counts"
PRUNE_COUNTS = "prune_counts"

ALL_SCRIPTS = (
    ENQUEUE,
    CLAIM,
    CLAIM_CAPPED,
    PEEK,
    HEARTBEAT,
    ACK,
    RESCUE,
    RELEASE_WORKER,
    CANCEL,
    REQUEUE,
    PURGE,
    PRUNE,
    AGE_PRIORITIES,
    SUMMARY,
    LIST_PAGE,
    FIRE_SCHEDULE,
    SCHEDULE_PAUSED,
    QUEUE_CONTROL,
    STORE_STEP,
    ENQUEUE_WORKFLOW,
    CANCEL_WORKFLOW,
    READ_LIMITS,
    SWAP_LIMITS,
    LIST_LIMITS,
    PRUNE_LIMITS,
    RECORD_WORKER,
    LIST_WORKERS,
    PRUNE_WORKERS,
    ADD_COUNTS,
    READ_COUNTS,
    PRUNE_COUNTS,
)
