"""The execution core: pure, synchronous, sans-I/O.

Everything that decides lives here once, and both drivers run it: the daemon (``agent.daemon``,
an asyncio executor of the actions the core returns) and the backtest (``agent.backtest``, a
synchronous loop over the same objects). Nothing in this package imports asyncio, websockets or
structlog, reads the wall clock, or touches the filesystem: time arrives as an argument
(integer ns) and every effect leaves as a returned value. ``tests/unit/test_layering.py``
enforces it, following imports transitively.
"""
