"""Tasks the benchmarks run: no-ops, sync and async."""

from stagecrew import App

app = App()


@app.task(max_attempts=3)
async def noop(i: int) -> None:
    return None


@app.task(max_attempts=3)
def noop_sync(i: int) -> None:
    return None
