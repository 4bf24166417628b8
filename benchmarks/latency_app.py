"""Tasks the latency benchmark runs: each appends its argument and the time it started to the
file named by STAGECREW_BENCH_STAMPS, one line per job."""

import os
import time

from stagecrew import App

app = App()


def _stamp(i: int) -> None:
    started = time.time()
    with open(os.environ["STAGECREW_BENCH_STAMPS"], "a") as out:
        out.write(f"{i} {started!r}\n")


@app.task(max_attempts=1)
async def stamp(i: int) -> None:
    _stamp(i)


@app.task(max_attempts=1)
def stamp_sync(i: int) -> None:
    _stamp(i)
