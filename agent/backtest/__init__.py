"""Backtest and transaction-cost analysis (``exec-agent backtest``, issue 8).

Modules: ``config`` (the TOML file), ``data`` (a day's validated books and trades), ``broker``
(the resilient simulated broker), ``strategies`` (TWAP, VWAP, POV, Almgren-Chriss, the MPC
variants), ``engine`` (``run_one``: one strategy on one day, pure), ``tca`` (shortfall and its
parts), ``executor`` (a batch through local processes or Dask), ``report`` (JSON, markdown,
PNG), ``cli`` (the subcommand). Everything but ``cli`` is synchronous and does not log.
"""

__all__: list[str] = []
