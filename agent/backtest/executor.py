"""Run a batch of backtest runs through a ``concurrent.futures`` executor.

Local processes by default (``ProcessPoolExecutor``, spawn start method: workers import the
package afresh, no state is inherited from the parent's threads); a Dask distributed cluster
when given a scheduler address (``distributed.Client(address).get_executor()``, the optional
``[distributed]`` extra). ``run_one`` is a pure function of its spec, so the results do not
depend on where they ran; they are returned in the order of the specs.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from typing import Any

from agent.backtest.engine import RunResult, RunSpec, run_one

__all__ = ["default_workers", "run_batch", "scheduler_address"]


def default_workers() -> int:
    """Return min(2, cpus): the batch should not take over a shared machine by default."""
    return max(1, min(2, os.cpu_count() or 1))


def scheduler_address(cli_value: str | None) -> str | None:
    """Return the Dask scheduler address: ``--dask``, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    if cli_value:
        return cli_value
    env = os.environ.get("DASK_SCHEDULER_ADDRESS", "").strip()
    return env or None


def run_batch(
    specs: Sequence[RunSpec],
    *,
    dask_address: str | None = None,
    dask_client: Any = None,
    max_workers: int | None = None,
    progress: bool | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run every spec and return the results in the order of ``specs``.

    Args:
        specs: The runs.
        dask_address: Scheduler address (``tcp://host:8786``): run on that Dask cluster.
        dask_client: An existing ``distributed.Client`` (tests: a ``LocalCluster``'s).
        max_workers: Local processes (None: ``default_workers()``; 1 still uses one worker
            process, so a crash in a run cannot take the caller down).
        progress: tqdm bar; None shows it only on a terminal.
        on_result: Called in the caller's process with each result as it completes.

    Raises:
        ImportError: A Dask address was given but ``distributed`` is not installed (the
            message says which extra to install).
    """
    from tqdm import tqdm

    client = dask_client
    own_client = False
    if client is None and dask_address:
        try:
            from distributed import Client
        except ImportError as e:
            raise ImportError(
                "--dask needs the distributed extra: pip install 'exec-agent[distributed]'"
            ) from e
        client = Client(dask_address)  # type: ignore[no-untyped-call]
        own_client = True
    executor: Executor
    if client is not None:
        executor = client.get_executor()
    else:
        executor = ProcessPoolExecutor(
            max_workers=max_workers or default_workers(),
            mp_context=multiprocessing.get_context("spawn"),
        )
    out: list[RunResult | None] = [None] * len(specs)
    bar = tqdm(
        total=len(specs),
        disable=None if progress is None else not progress,
        desc="backtest",
        unit="run",
    )
    try:
        futures: dict[Future[RunResult], int] = {
            executor.submit(run_one, s): i for i, s in enumerate(specs)
        }
        for fut in as_completed(futures):
            r = fut.result()
            out[futures[fut]] = r
            if on_result is not None:
                on_result(r)
            bar.update(1)
    finally:
        bar.close()
        executor.shutdown(wait=True)
        if own_client:
            client.close()
    return [r for r in out if r is not None]
