"""The async shell: moves books and order events between the feeds, the core and the broker.

Every decision is the execution core's (``agent.core``): one ``ParentCore`` per parent order
(policy, trackers, lot carry, periods, retries, gates) and one ``SymbolSession`` per symbol
that cuts each batch of books at the decision times. This module only executes the actions the
core returns, in order: the journal first (a child's intent is durable before it can reach the
venue), then the broker, the logs and the metrics. The backtest (``agent.backtest.engine``)
drives the same objects synchronously; ``tests/integration/test_equivalence.py`` checks that
both give the same children and fills.

One task per symbol reads that symbol's feed and drives every parent on it; one task per
broker pumps its order events into the parents. A TWAP benchmark leg runs beside every parent
on its own simulated venue (``strategy.benchmark``), as the benchmark in ``run.summary``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import structlog
from pydantic import ValidationError

from agent import accel
from agent.brokers.base import Broker
from agent.brokers.simulated import SimulatedBroker
from agent.config import AgentConfig, OrderConfig, RiskConfig, key_path
from agent.control import Control, ControlServer
from agent.core.estimator import CurveView
from agent.core.parent import (
    Action,
    Cancel,
    Decided,
    Env,
    Leg,
    Log,
    ParentCore,
    ParentParams,
    Record,
    Replace,
    Send,
    Summary,
)
from agent.core.plan import PeriodGrid
from agent.core.policy import StrategySpec, adaptive_forecaster, make_policy, tod_volume
from agent.core.queue import QueueConfig
from agent.core.risk import AggregateGates, RiskGates, RiskLimits
from agent.core.session import DecideAt, SymbolSession, VenueEvents
from agent.core.venue import SimVenue
from agent.errors import BrokerError, BrokerRejected, InvariantViolation, JournalUnavailable
from agent.faults import crash_point
from agent.impact.book_walk import BeyondDepth, DepthPolicy
from agent.impact.profile import IntradayProfile
from agent.journal import Journal, ParentHistory, make_run_tag
from agent.metrics import NullMetrics
from agent.model import OrderEvent, OrderRejected, OrderReplaceRejected, OrderStatus
from agent.orders.tracker import Transition
from agent.prior import packaged_prior
from feeds.base import BookFeed
from feeds.clock import Clock, WallClock
from feeds.model import BookBatch

__all__ = ["Control", "Daemon", "ParentRunner", "RunSummary", "run"]

_NS = 1_000_000_000
RunSummary = Summary

FeedFactory = Callable[[str], BookFeed]


def _level(name: str) -> int:
    return {"debug": 10, "info": 20, "warning": 30, "error": 40}[name]


def strategy_spec(cfg: AgentConfig) -> StrategySpec:
    """Return the core's strategy spec of the config's ``[strategy]``."""
    s = cfg.strategy
    return StrategySpec(
        kind=s.kind,
        model=s.model,
        solver=s.solver,
        risk_aversion=s.risk_aversion,
        pov_rate=s.pov_rate,
        scenario_weights=s.scenario_weights,
        on_solve_failure=s.on_solve_failure,
        forecast=s.forecast,
    )


def parent_params(order: OrderConfig, cfg: AgentConfig, id_tag: str = "") -> ParentParams:
    """Return the core's parameters of one ``[[orders]]`` entry."""
    cap_n = cfg.risk.max_children_per_parent
    if order.risk is not None and order.risk.max_children_per_parent:
        cap_n = min(x for x in (cap_n, order.risk.max_children_per_parent) if x)
    return ParentParams(
        parent_id=order.id,
        symbol=order.symbol,
        side=order.side,
        quantity=order.quantity,
        start_ns=order.start_ns,
        end_ns=order.end_ns,
        period_ns=int(order.period_s * _NS),
        lot=order.lot,
        max_child_qty=order.max_child_qty,
        collar_bps=cfg.broker.collar_bps,
        final_retry_s=cfg.strategy.final_retry_s,
        window_ns=int(cfg.estimation.window_s * _NS),
        max_window_rows=cfg.estimation.max_window_rows,
        max_children=cap_n,
        max_child_multiple=cfg.strategy.max_child_multiple,
        max_participation=cfg.strategy.max_participation,
        lead_ns=round(cfg.strategy.decision_lead_ms * 1e6),
        id_tag=id_tag,
    )


def build_core(
    order: OrderConfig,
    cfg: AgentConfig,
    profile: IntradayProfile,
    gates: RiskGates | None,
    *,
    benchmark: bool,
    id_tag: str = "",
    volume_profile: np.ndarray | None = None,
    session: SymbolSession | None = None,
    aggregate: AggregateGates | None = None,
) -> ParentCore:
    """Return the execution core of one parent as the config says.

    With ``session`` and ``estimation.incremental``, the window's cost curve comes from an
    incremental estimator shared by the session's parents with the same side and size grid.
    """
    p = parent_params(order, cfg, id_tag)
    est = cfg.estimation
    n = max(1, math.ceil((p.end_ns - p.start_ns) / p.period_ns))
    max_size = est.max_size or max(10 * order.lot, 3 * order.quantity / n)
    sizes = np.linspace(max_size / est.n_sizes, max_size, est.n_sizes)
    depth = DepthPolicy(BeyondDepth(est.beyond_depth), est.penalty_bps)
    estimator: CurveView | None = None
    if session is not None and est.incremental:
        # One walk of each book per side for every parent on the symbol, whatever its grid.
        estimator = session.curve_view(order.side.value, sizes, depth, p.window_ns, est.weighting)
    spec = strategy_spec(cfg)
    if order.risk_aversion is not None:  # this parent's urgency (Almgren-Chriss kappa)
        spec = dataclasses.replace(spec, risk_aversion=order.risk_aversion)
    ar = None
    if spec.kind == "mpc" and profile.is_flat and cfg.strategy.prior_profile:
        # No earlier day of this symbol: the prior from other symbols' days.
        prior = packaged_prior(order.symbol, order.side.value)
        if prior is not None:
            profile, ar = prior.profile, prior.ar
    forecaster = adaptive_forecaster(
        spec,
        order.side.value,
        p.start_ns,
        p.period_ns,
        p.window_ns,
        profile,
        ar,
        features=session.features(order.side.value) if session is not None else None,
    )
    policy = make_policy(
        spec,
        order.side.value,
        sizes,
        depth,
        profile,
        forecaster=forecaster,
        min_snapshots=est.min_snapshots,
        weighting=est.weighting,
        period_s=order.period_s,
        volume_profile=volume_profile,
        current_window_s=est.current_window_s,
    )
    order_gates = RiskGates(_limits(order.risk)) if order.risk is not None and gates else None
    core = ParentCore(
        p,
        policy,
        gates,
        order_gates,
        benchmark=benchmark,
        estimator=estimator,
        aggregate=aggregate,
    )
    if cfg.tactic.kind != "aggressive":  # the TWAP shadow stays aggressive: the benchmark
        core.set_tactic(cfg.tactic)
    return core


class ParentRunner:
    """Executes one parent's core actions: journal, broker, logs, metrics.

    Args:
        order: The parent order's config.
        core: Its execution core.
        broker: Where the ``mpc`` leg's children go.
        shadow: Simulated broker of the TWAP benchmark leg (None: no benchmark).
        clock: Clock of the acknowledgement watchdog: each mpc child's send time is read on
            it (default: the wall clock).
    """

    def __init__(
        self,
        order: OrderConfig,
        core: ParentCore,
        broker: Broker,
        shadow: Broker | None,
        journal: Journal | None = None,
        control: Control | None = None,
        metrics: NullMetrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.order = order
        self.core = core
        self.brokers: dict[str, Broker] = {"mpc": broker}
        if shadow is not None:
            self.brokers["twap"] = shadow
        self.journal = journal
        self.control = control or Control()
        self.metrics = metrics or NullMetrics()
        self.log = structlog.get_logger().bind(parent_id=order.id, symbol=order.symbol)
        self.clock: Clock = clock or WallClock()
        self.sent_at: dict[str, int] = {}  # client order id -> clock ns when sent (ack watchdog)
        self._trigger_recv_ns: int | None = None  # the book deciding now (``on_time``)

    # -- views of the core ----------------------------------------------------------------------
    @property
    def mpc(self) -> Leg:
        """Return the parent's own leg."""
        return self.core.mpc

    @property
    def twap(self) -> Leg | None:
        """Return the TWAP benchmark leg (None when off)."""
        return self.core.twap

    @property
    def done(self) -> bool:
        """Return True once the parent needs nothing more."""
        return self.core.done

    @done.setter
    def done(self, v: bool) -> None:
        self.core.done = v

    def next_time(self) -> int | None:
        """Return the core's next decision time."""
        return self.core.next_time()

    def in_doubt(self) -> list[str]:
        """Return the mpc children sent but not closed."""
        return self.core.in_doubt()

    def leg_for(self, client_order_id: str) -> Leg | None:
        """Return the leg that owns a client order id."""
        return self.core.leg_for(client_order_id)

    def summary(self) -> Summary:
        """Return the parent's outcome so far."""
        return self.core.summary()

    def status(self) -> dict[str, Any]:
        """Return the parent's state for ``exec-agent status``."""
        c = self.core
        t = c.mpc.tracker
        s = c.summary()
        return {
            "parent_id": self.order.id,
            "symbol": self.order.symbol,
            "side": c.side.value,
            "strategy": c.mpc.policy.spec.name,
            "quantity": t.parent_qty,
            "filled_qty": t.filled_qty,
            "open_qty": t.open_qty,
            "remaining_qty": t.remaining_qty,
            "avg_px": None if not math.isfinite(t.avg_px) else t.avg_px,
            "shortfall_bps": None if not math.isfinite(s.shortfall_bps) else s.shortfall_bps,
            "children": c.mpc.n_sent,
            "periods_decided": min(c.k_next, c.grid.n),
            "n_periods": c.grid.n,
            "state": s.status if c.done else "working",
        }

    # -- executing actions ----------------------------------------------------------------------
    def _env(self) -> Env:
        b = self.brokers["mpc"]
        return Env(self.control.halted, bool(getattr(b, "available", True)), b.name)

    def _emit(self, a: Log, **extra: Any) -> None:
        self.log.log(_level(a.level), a.event, **a.fields, **extra)
        if a.event == "risk.blocked":
            self.metrics.blocked(str(a.fields["gate"]))

    def _sync(self, actions: list[Action]) -> None:
        """Execute the actions that need no await (logs, journal records of events)."""
        for a in actions:
            if isinstance(a, Log):
                self._emit(a)
            elif isinstance(a, Record):
                if self.journal is not None:
                    self.journal.event(self.order.id, a.leg, a.event)
                    crash_point("event_applied")
            elif isinstance(a, Decided):
                step = self.core.steps[-1][1] if self.core.steps else None
                if step is not None and step.decision.solve_ms:
                    self.metrics.solve_time(step.decision.solve_ms / 1e3)
                if self.journal is not None:
                    self.journal.decision(self.order.id, a.k, a.arrival_mid, a.carry)
                    crash_point("decided")

    async def execute(self, actions: list[Action]) -> None:
        """Execute the core's actions in order (journal first, then the broker)."""
        for a in actions:
            if isinstance(a, Send):
                await self._send(a)
            elif isinstance(a, Cancel):
                await self._cancel(a)
            elif isinstance(a, Replace):
                await self._replace(a)
            else:
                self._sync([a])

    async def _cancel(self, a: Cancel) -> None:
        """Send a cancel; the tactic's requests are already in the tracker and the journal
        (their ``Record`` came first), and carry their time to a broker that takes it."""
        broker = self.brokers[a.leg]
        try:
            send = getattr(broker, "cancel_request", None)
            if a.request is not None and send is not None:
                await send(a.request)
            else:
                await broker.cancel(a.client_order_id)
            crash_point("requested")
        except BrokerError as e:
            self.log.error("order.cancel_failed", client_order_id=a.client_order_id, error=str(e))

    async def _replace(self, a: Replace) -> None:
        """Send a cancel/replace (recorded and journaled before); a broker without replace
        answers it as rejected, so the tracker drops the pending replace and nothing hangs."""
        broker = self.brokers[a.leg]
        req = a.request
        send = getattr(broker, "replace", None)
        leg = self.core.leg(a.leg)
        if send is None:
            self.log.warning("order.replace_unsupported", client_order_id=req.client_order_id)
            if leg is not None:
                self.apply(
                    leg, OrderReplaceRejected(req.client_order_id, req.ts_event_ns, "unsupported")
                )
            return
        if self.journal is not None:
            try:
                # The new ClOrdID durable before it can reach the venue (as an intent is): a
                # restart that did not know it could not take the venue's reports under it.
                await self.journal.flush()
            except JournalUnavailable as e:
                self.control.halt(f"journal unavailable: {e}")
                if leg is not None:
                    self.apply(
                        leg,
                        OrderReplaceRejected(req.client_order_id, req.ts_event_ns, "journal"),
                    )
                return
        try:
            await send(req)
            crash_point("requested")
        except BrokerRejected as e:
            # Refused before it left: the order stands as it was, the pending replace drops.
            self.log.warning("order.replace_rejected", client_order_id=req.client_order_id)
            if leg is not None:
                self.apply(
                    leg, OrderReplaceRejected(req.client_order_id, req.ts_event_ns, e.reason)
                )
        except BrokerError as e:
            self.log.error(
                "order.replace_failed", client_order_id=req.client_order_id, error=str(e)
            )

    async def _send(self, a: Send) -> None:
        child = a.child
        coid = child.client_order_id
        leg = self.core.leg(a.leg)
        if leg is None:
            raise InvariantViolation(f"the core sent on an unknown leg {a.leg!r}")
        if self.journal is not None and a.leg == "twap":
            # The shadow never reaches a venue (its own simulated one, in this process): its
            # intent is queued, written in order before its events, and not waited for.
            self.journal.queue_intent(a.leg, child)
        elif self.journal is not None:
            try:
                await self.journal.intent(a.leg, child)  # durable before it can reach the venue
            except JournalUnavailable as e:
                # No durable intent, so it is not sent: its shares are free again, and the
                # kill switch stops everything else (cancels what is open).
                self.control.halt(f"journal unavailable: {e}")
                self.apply(leg, OrderRejected(coid, child.ts_created_ns, "journal_unavailable"))
                return
            crash_point("intent_durable")
        if a.log is not None and a.leg == "mpc" and self._trigger_recv_ns is not None:
            # Receipt of the triggering book to the child handed to the broker, as measured here.
            self._emit(a.log, trigger_recv_ns=self._trigger_recv_ns, submitted_ns=time.time_ns())
        elif a.log is not None:
            self._emit(a.log)
        if a.leg == "mpc":
            self.sent_at[coid] = self.clock.now_ns()
            self.metrics.order_sent(self.order.id)
        try:
            await self.brokers[a.leg].submit(child)
            crash_point("submitted")
        except BrokerRejected as e:
            # Refused before it reached the book: nothing executed, the quantity is free again.
            reason = e.reason or str(e)
            self.log.warning("order.submit_rejected", client_order_id=coid, reason=reason)
            self.apply(leg, OrderRejected(coid, child.ts_created_ns, reason))
        except BrokerError as e:
            # In doubt: it may have reached the venue. It stays open (never re-sent as new);
            # its fate comes from the venue's reports or a status query.
            self.log.error(
                "order.in_doubt", client_order_id=coid, error=str(e), retryable=e.retryable
            )

    # -- inputs ---------------------------------------------------------------------------------
    def restore(self, h: ParentHistory) -> None:
        """Resume from the journal: replay intents and events into fresh trackers."""
        self._sync(self.core.restore(h.items, h.periods, h.arrival_mid, h.carry))

    async def on_time(
        self, t_ns: int, now_ns: int | None = None, recv_ns: int | None = None
    ) -> None:
        """Act at decision time ``t_ns`` (the core decides, this executes); ``recv_ns`` is the
        receive time of the book that proved the instant, logged with the children it sends."""
        self._trigger_recv_ns = recv_ns
        try:
            await self.execute(self.core.on_time(t_ns, now_ns, self._env()))
        finally:
            self._trigger_recv_ns = None

    def apply(self, leg: Leg, event: OrderEvent) -> Transition:
        """Apply a broker event to the core and execute what follows (logs, journal)."""
        tr, actions = self.core.on_event(leg, event)
        self._sync(actions)
        if tr.applied and leg is self.core.mpc:
            if tr.fill_qty:
                self.metrics.fill(self.order.id, tr.fill_qty)
            if isinstance(event, OrderRejected):
                self.metrics.reject(self.order.id)
            self.metrics.remaining(self.order.id, leg.tracker.remaining_qty)
        return tr

    async def cancel_open(self, reason: str) -> int:
        """Ask the broker to cancel every open mpc child; return how many were asked."""
        actions = self.core.cancel_open(reason)
        await self.execute(actions)
        return sum(isinstance(a, Cancel) for a in actions)

    def cancel_parent(self, reason: str) -> None:
        """Stop working this parent: no new child from now on (open ones: see cancel_open)."""
        self._sync(self.core.cancel_parent(reason))


class _Router:
    """Route broker events to the parent runner that owns the client order id."""

    def __init__(
        self, runners: list[ParentRunner], on_violation: Callable[[str], object] | None = None
    ) -> None:
        self.runners = runners
        self.on_violation = on_violation
        self.log = structlog.get_logger()
        self._owner: dict[str, ParentRunner] = {}  # client order id -> its runner, once found

    def _candidates(self, coid: str) -> list[ParentRunner]:
        r = self._owner.get(coid)
        return [r, *self.runners] if r is not None else self.runners

    def route(self, event: OrderEvent) -> None:
        # Many parents: the runner that owned the id last time is asked first, not all of them.
        for r in self._candidates(event.client_order_id):
            leg = r.leg_for(event.client_order_id)
            if leg is not None:
                self._owner[event.client_order_id] = r
                try:
                    r.apply(leg, event)
                except InvariantViolation as e:
                    # A report we cannot apply (an overfill, say): the venue and we disagree.
                    # Keep the report in the log and journal, stop trading, call a human.
                    self.log.error(
                        "order.invariant_violation",
                        parent_id=r.order.id,
                        client_order_id=event.client_order_id,
                        error=str(e),
                        culprit=e.culprit,
                        detail=repr(event),
                    )
                    if r.journal is not None:
                        r.journal.anomaly(r.order.id, leg.name, event, str(e))
                    if self.on_violation is not None:
                        self.on_violation(f"invariant violation on {event.client_order_id}: {e}")
                return
        # Never drop a fill silently: an execution we cannot attribute needs a human.
        self.log.error(
            "order.unknown_event",
            client_order_id=event.client_order_id,
            event_type=type(event).__name__,
            detail=repr(event),
        )


async def _pump_events(broker: Broker, router: _Router) -> None:
    async for event in broker.events():
        router.route(event)


async def _settle() -> None:
    # Let the event pumps apply what a broker just queued (a simulated venue's immediate
    # reject, say) before the next decision.
    for _ in range(2):
        await asyncio.sleep(0)


def _hold_until(session: SymbolSession) -> int | None:
    """Return the event time up to which new rows cannot make ``session`` act, or None.

    The next decision time of its parents: a row at or before it is only observed, a later one
    proves that instant complete and triggers the decision. None (every row may matter) when a
    parent's tactic reacts to the rows themselves or a simulated venue has orders resting or
    waiting on the symbol.
    """
    t: int | None = None
    for p in list(session.parents):
        if p.done:
            continue
        if p.tactic is not None and p.tactic.live:
            return None
        n = p.next_time()
        if n is not None and (t is None or n < t):
            t = n
    if any(v.active(session.symbol) for v in session.venues):
        return None
    return t


async def _run_symbol(
    symbol: str,
    feed: BookFeed,
    session: SymbolSession,
    runners: list[ParentRunner],
    router: _Router,
    control: Control,
    keep_running: bool = False,
    metrics: NullMetrics | None = None,
    clock: Clock | None = None,
    grace_ns: int = 0,
    live_feeds: list[Any] | None = None,
) -> None:
    """Drive every parent on ``symbol`` from its feed, through the core's ``SymbolSession``.

    With a ``clock`` (live), decision times more than ``grace_ns`` in its past are taken on
    every batch, the feed's empty heartbeat batches included, without waiting for a book.
    A feed that can hold rows (``hold``, the live feed) is told the next decision time after
    each batch: rows before it come in fewer, larger batches, a row past it at once. When every
    such feed of the daemon (``live_feeds``, shared by the symbols' tasks) is ``idle``, nothing
    waits to be read or decided anywhere: the session folds the rows observed into the estimates
    (``SymbolSession.settle``) instead of leaving that work to the next decision.

    ``runners`` (and the session's parents) may grow while this runs (a parent submitted on
    the control channel). It ends when the feed ends, on a stop request, or once every parent
    is done (unless ``keep_running``: a service waiting for more parents).
    """
    log = structlog.get_logger().bind(symbol=symbol)
    by_core = {id(r.core): r for r in runners}
    last_event: int | None = None
    last_recv = 0
    feeds = live_feeds if live_feeds is not None else []
    if getattr(feed, "idle", None) is not None:
        feeds.append(feed)
    try:
        updates: AsyncIterator[BookBatch] = feed.updates()
        metrics = metrics or NullMetrics()
        is_stale = getattr(feed, "is_stale", None)
        hold: Callable[[int | None], None] | None = getattr(feed, "hold", None)
        async for batch in updates:
            if control.stop:
                break
            if len(batch) and clock is not None:
                # Feed lag is the wall clock against event time: live only (a replay's event
                # times are another day's, and its "lag" would be months).
                metrics.feed_batch(symbol, int(batch.ts_event_ns[-1]))
            if is_stale is not None:
                metrics.feed_stale(symbol, bool(is_stale()))
            items: list[Iterator[VenueEvents | DecideAt]] = [session.feed(batch, control.stop)]
            if len(batch):
                last_event, last_recv = int(batch.ts_event_ns[-1]), int(batch.ts_recv_ns[-1])
            if clock is not None and not control.stop:
                # Live: the wall clock moves decisions on even when no book comes. Market time
                # runs on from the last book's event time at the wall clock's rate (a feed
                # replayed faster than real time keeps its own pace); before any book, it is
                # the wall clock itself.
                now = clock.now_ns()
                market = now if last_event is None else last_event + (now - last_recv)
                items.append(session.tick(market - grace_ns))
            for item in itertools.chain.from_iterable(items):
                if isinstance(item, VenueEvents):
                    for e in item.events:
                        router.route(e)
                    continue
                for core in item.parents:
                    r = by_core.get(id(core))
                    if r is None:  # submitted since: refresh the map
                        by_core = {id(x.core): x for x in runners}
                        r = by_core[id(core)]
                    await r.on_time(item.t_ns, now_ns=item.now_ns, recv_ns=item.recv_ns)
                await _settle()
            if session.done and not keep_running:
                break
            if hold is not None:
                hold(None if control.stop else _hold_until(session))
            if feed in feeds and all(f.idle() for f in feeds):
                # Nothing to read on any feed: fold what came in now, so the next decision walks
                # only the rows that arrive with its trigger (live feeds; a replay never waits),
                # and no symbol's trigger waits behind another's settling.
                session.settle()
        # Data ended, every order is past its deadline, or a stop was requested: orders already
        # sent execute against the last book; nothing new is sent.
        for item in session.end():
            for e in item.events:
                router.route(e)
        await _settle()
        for r in runners:
            if not r.done and control.stop:
                r.done = True
                log.warning(
                    "order.stopped_before_deadline",
                    parent_id=r.order.id,
                    periods_decided=r.core.k_next,
                    n_periods=r.core.grid.n,
                    remaining_qty=r.mpc.tracker.remaining_qty,
                )
            if not r.done:
                log.warning(
                    "feed.ended_before_deadline",
                    parent_id=r.order.id,
                    periods_decided=r.core.k_next,
                    n_periods=r.core.grid.n,
                    remaining_qty=r.mpc.tracker.remaining_qty,
                )
                r.done = True
    finally:
        if feed in feeds:
            feeds.remove(feed)  # a closed feed is never idle again: it must not block the rest
        await feed.aclose()
        stats = getattr(feed, "stats", None)
        log.info("feed.closed", **(_stats_fields(stats)))


def _stats_fields(stats: Any) -> dict[str, Any]:
    if stats is None:
        return {}
    if hasattr(stats, "as_dict"):
        return dict(stats.as_dict())
    if hasattr(stats, "__dataclass_fields__"):
        return {k: getattr(stats, k) for k in stats.__dataclass_fields__}
    return {"stats": repr(stats)}


async def _reconcile(
    runners: list[ParentRunner], broker: Broker, timeout_s: float, at: str = "start"
) -> None:
    """Before anything new is sent: ask the broker about every child in doubt, and wait.

    The answers (``OrderStatus``) arrive through the event pump and close each child, with any
    execution the journal missed applied exactly once. A resting child (day, GTC) the venue
    answers as working is resolved too: it is known there and tracked here (its fills and its
    cancel come as reports). One the venue does not know (a venue restart that forgot it) is
    closed with nothing more filled. Children still unresolved at the timeout stay open with
    their shares reserved: never re-sent, never forgotten.
    """
    log = structlog.get_logger()
    pending = {coid: r for r in runners for coid in r.in_doubt()}
    if not pending:
        return
    ask = getattr(broker, "request_status", None)
    if ask is None:
        log.error("reconcile.unsupported", at=at, broker=broker.name, in_doubt=sorted(pending))
        return
    asked = {coid: _n_status(r, coid) for coid, r in pending.items()}
    log.info("reconcile.started", at=at, n_in_doubt=len(pending), client_order_ids=sorted(pending))
    for coid in sorted(pending):
        try:
            await ask(coid)
        except BrokerError as e:
            log.error("reconcile.query_failed", at=at, client_order_id=coid, error=str(e))

    def unresolved() -> list[str]:
        return sorted(
            c
            for c, r in pending.items()
            if c in r.in_doubt() and not (_rests(r, c) and _n_status(r, c) > asked[c])
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if not unresolved():
            resting = sorted(c for c, r in pending.items() if c in r.in_doubt())
            log.info("reconcile.finished", at=at, n_resolved=len(pending), still_resting=resting)
            return
        await asyncio.sleep(0.01)
    log.error("reconcile.timeout", at=at, still_in_doubt=unresolved(), timeout_s=timeout_s)


def _n_status(r: ParentRunner, coid: str) -> int:
    c = r.mpc.tracker.child(coid)
    return c.n_status if c is not None else 0


def _rests(r: ParentRunner, coid: str) -> bool:
    c = r.mpc.tracker.child(coid)
    return c is not None and c.order.rests


async def _ack_watchdog(
    runners: list[ParentRunner],
    broker: Broker,
    clock: Clock,
    timeout_s: float,
    until: asyncio.Event,
    max_queries: int = 3,
    on_unresolved: Callable[[str], object] | None = None,
) -> None:
    """Query the status of any MPC child left without a final report for ``timeout_s``.

    A lost acknowledgement or fill report (a venue fault, a report lost beyond what the
    session layer recovers) would otherwise keep the child's shares reserved forever; the
    answer closes it with what the venue really executed. One query per child per timeout;
    a child still unresolved after ``max_queries`` engages the kill switch (``on_unresolved``):
    its shares stay reserved, nothing new is sent, and a human decides.

    Time is ``clock``'s, the clock the runners stamp their sends with: the wall clock in
    service; a test's ``ManualClock`` makes a timeout pass when it is advanced, never by waiting.
    """
    ask = getattr(broker, "request_status", None)
    if ask is None:
        return
    timeout_ns = int(timeout_s * _NS)
    poll_ns = max(int(min(0.25, timeout_s / 4) * _NS), 1)
    asked: dict[str, int] = {}
    n_asked: dict[str, int] = {}
    log = structlog.get_logger()
    stop = asyncio.ensure_future(until.wait())
    next_at = clock.now_ns()  # a first look at once
    try:
        while True:
            tick = asyncio.ensure_future(clock.sleep_until(next_at))
            try:
                await asyncio.wait((stop, tick), return_when=asyncio.FIRST_COMPLETED)
            finally:
                tick.cancel()
            if until.is_set():
                return
            now = clock.now_ns()
            # The next look: the first child's timeout, or a poll for children sent since. It
            # is counted from this look's start, so a clock advanced while a query was being
            # sent is seen at once.
            next_at = now + poll_ns
            # Copies: a child sent (or a parent submitted) while a query is awaited must not
            # break the iteration.
            for r in list(runners):
                for coid, c in list(r.mpc.tracker.children.items()):
                    if c.state.terminal or n_asked.get(coid, 0) > max_queries:
                        continue
                    since = asked.get(coid, r.sent_at.get(coid, now))
                    if now - since < timeout_ns:
                        next_at = min(next_at, since + timeout_ns)
                        continue
                    if n_asked.get(coid, 0) == max_queries:
                        log.error("order.unresolved", client_order_id=coid, queries=max_queries)
                        if on_unresolved is not None:
                            on_unresolved(f"{coid} unresolved after {max_queries} status queries")
                        n_asked[coid] = max_queries + 1
                        continue
                    n_asked[coid] = n_asked.get(coid, 0) + 1
                    asked[coid] = now
                    next_at = min(next_at, now + timeout_ns)
                    log.warning("order.status_query", client_order_id=coid, waited_s=timeout_s)
                    try:
                        await ask(coid)
                    except BrokerError as e:
                        log.warning("order.status_query_failed", client_order_id=coid, error=str(e))
    finally:
        stop.cancel()


def _limits(r: RiskConfig) -> RiskLimits:
    return RiskLimits(
        r.max_child_qty,
        r.max_child_notional,
        r.max_collar_bps,
        r.max_depth_share,
        r.max_orders_per_min,
        r.stale_book_s,
    )


class Daemon:
    """The running service: parents, their symbol tasks, the broker pumps and the operators.

    Built by ``run``; the control channel calls ``command``.
    """

    def __init__(
        self,
        cfg: AgentConfig,
        feed_factory: FeedFactory,
        broker: Broker | None,
        profiles: dict[tuple[str, str], IntradayProfile] | None,
        journal: Journal | None,
        control: Control | None,
        metrics: NullMetrics | None = None,
        history_trades: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        clock: Clock | None = None,
        ack_clock: Clock | None = None,
        *,
        freeze_gc: bool = False,
    ) -> None:
        self.cfg = cfg
        self.history_trades = history_trades or {}
        # Live, the wall clock moves decisions and deadlines on (replay: event time alone).
        live = cfg.feed.kind == "websocket" and cfg.feed.wall_clock
        self.clock = clock or (WallClock() if live else None)
        # The acknowledgement timeout is wall-clock time even in a replay (a venue answers in
        # real time); tests inject a ManualClock to make it pass without waiting.
        self.ack_clock: Clock = ack_clock or self.clock or WallClock()
        self.metrics = metrics or NullMetrics()
        self.feed_factory = feed_factory
        self.journal = journal
        self.log = structlog.get_logger()
        b = cfg.broker
        latency_ns = int(b.latency_ms * 1e6)
        queue = QueueConfig(model=b.queue_model, power=b.queue_power)
        venue = (latency_ns, "simulated", b.half_life_s, b.beyond_depth, b.penalty_bps, queue)
        self.main = broker if broker is not None else SimulatedBroker(*venue)
        self.shadow = (
            SimulatedBroker(latency_ns, "twap-shadow", *venue[2:])
            if cfg.strategy.benchmark
            else None
        )
        self.id_tag = ""  # set per start in run() (the journal's run tag, or a fresh one)
        self.profiles = profiles or {}
        self.control = control or Control(journal)
        self.gates = RiskGates(_limits(cfg.risk))
        self.aggregate = AggregateGates(cfg.risk.aggregate_limits())
        if journal is not None and journal.on_fault is None:
            # A journal that cannot write engages the kill switch (the runner sets the same).
            journal.on_fault = lambda e: self.control.halt(f"journal unavailable: {e}")
        self.runners: list[ParentRunner] = []
        self.router = _Router(self.runners, self.control.halt)
        self.venues: list[SimVenue] = []
        if isinstance(self.main, SimulatedBroker):
            self.venues.append(self.main.venue)
        if self.shadow is not None:
            self.venues.append(self.shadow.venue)
        self.by_symbol: dict[str, list[ParentRunner]] = {}
        self.sessions: dict[str, SymbolSession] = {}
        self.sym_tasks: dict[str, asyncio.Task[None]] = {}
        self._live_feeds: list[Any] = []  # the symbols' feeds that can say they are idle
        self.freeze_gc = freeze_gc  # see run()
        self._tg: asyncio.TaskGroup | None = None
        self._symbol_started = asyncio.Event()

    # -- parents ------------------------------------------------------------------------------
    def _add(self, order: OrderConfig, restore: bool = True) -> ParentRunner:
        res = self.aggregate.check_parent(order.id, order.quantity)
        if not res.ok:
            raise ValueError(f"parent {order.id!r} refused by risk.{res.gate}: {res.detail}")
        profile = self.profiles.get((order.symbol, order.side.value), IntradayProfile.flat())
        volume = None
        hist = self.history_trades.get(order.symbol)
        if self.cfg.strategy.kind == "vwap" and hist is not None:
            grid = PeriodGrid(order.start_ns, order.end_ns, int(order.period_s * _NS))
            starts = grid.starts()  # the core's periods, as the backtest's
            ends = np.minimum(starts + grid.period_ns, order.end_ns)
            volume = tod_volume(hist[0], hist[1], starts, ends)
        session = self.sessions.get(order.symbol)
        if session is None:
            session = self.sessions[order.symbol] = SymbolSession(order.symbol, [], self.venues)
        core = build_core(
            order,
            self.cfg,
            profile,
            self.gates,
            benchmark=self.shadow is not None,
            id_tag=self.id_tag,
            volume_profile=volume,
            session=session,
            aggregate=self.aggregate,
        )
        core.timer = time.perf_counter  # solve times for the logs and metrics
        r = ParentRunner(
            order,
            core,
            self.main,
            self.shadow,
            self.journal,
            self.control,
            self.metrics,
            self.ack_clock,
        )
        if restore and self.journal is not None:
            h = self.journal.load(order.id)
            r.restore(h)
            if h.conflict:
                # An old journal reused client order ids: never send under this parent again.
                r.cancel_parent(f"journal conflict: {h.conflict}")
            if r.twap is not None:
                # The shadow's simulated venue died with the last process: what it had open
                # is closed as unknown (it never trades for real).
                for coid, c in list(r.twap.tracker.children.items()):
                    if not c.state.terminal:
                        r.apply(r.twap, OrderStatus(coid, 0, "unknown", 0.0, 0.0, "restart"))
        self.runners.append(r)
        self.by_symbol.setdefault(order.symbol, []).append(r)
        session.parents.append(core)
        self.aggregate.record_parent(order.id, order.quantity)
        return r

    def _start_symbol(self, symbol: str) -> None:
        task = self.sym_tasks.get(symbol)
        if task is not None and not task.done():
            return  # the running task picks the new parent up at its next batch
        assert self._tg is not None
        self.sym_tasks[symbol] = self._tg.create_task(
            _run_symbol(
                symbol,
                self.feed_factory(symbol),
                self.sessions[symbol],
                self.by_symbol[symbol],
                self.router,
                self.control,
                self.cfg.control.keep_running,
                self.metrics,
                self.clock,
                int(self.cfg.feed.clock_grace_s * _NS),
                self._live_feeds,
            )
        )
        self._symbol_started.set()

    async def submit_parent(self, raw: dict[str, Any]) -> ParentRunner:
        """Add a parent order while running (journaled first, so a restart keeps it)."""
        order = OrderConfig.model_validate(raw)
        if any(r.order.id == order.id for r in self.runners):
            raise ValueError(f"parent id {order.id!r} is already in use")
        if self.cfg.feed.kind == "replay" and order.symbol not in self.cfg.feed.files:
            raise ValueError(f"no feed for symbol {order.symbol!r} in [feed].files")
        if self.cfg.feed.kind == "websocket" and order.symbol not in self.cfg.feed.urls:
            raise ValueError(f"no feed for symbol {order.symbol!r} in [feed].urls")
        if self.journal is not None:
            await self.journal.add_parent(order.model_dump(mode="json"))
        r = self._add(order, restore=False)
        self.log.info(
            "order.parent_submitted",
            parent_id=order.id,
            symbol=order.symbol,
            side=order.side.value,
            quantity=order.quantity,
        )
        self._start_symbol(order.symbol)
        return r

    async def cancel_parent(self, parent_id: str, reason: str = "operator") -> ParentRunner:
        """Stop a parent: no new child, open children cancelled (journaled: survives restarts)."""
        r = next((x for x in self.runners if x.order.id == parent_id), None)
        if r is None:
            raise ValueError(f"no parent order {parent_id!r}")
        if self.journal is not None:
            await self.journal.cancel_parent(parent_id, reason)
        r.cancel_parent(reason)
        await r.cancel_open(reason="parent_cancelled")
        return r

    async def halt(self, reason: str) -> int:
        """Kill switch: HALTED (durable); return how many open children get a cancel.

        The cancels are sent by ``_on_halt``, the one place every path to the kill switch
        (signal, command, unresolved child) goes through. Killing a daemon already halted
        sends the cancels again, on purpose.
        """
        n = sum(len(r.in_doubt()) for r in self.runners)
        if not self.control.halt(reason):
            return await self._cancel_all("halt")
        return n

    async def _cancel_all(self, reason: str) -> int:
        n = 0
        for r in list(self.runners):
            n += await r.cancel_open(reason)
        return n

    # -- control channel ------------------------------------------------------------------------
    async def command(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one control command (see ``agent.control``)."""
        cmd = req["cmd"]
        if cmd == "status":
            return {
                "ok": True,
                "halted": self.control.halted,
                "stopping": self.control.stop,
                "broker": self.main.name,
                "halt_reason": self.control.reason or None,
                "parents": [r.status() for r in self.runners],
                "risk": self.aggregate.usage(time.time_ns()),
                "journal": self.journal.health() if self.journal is not None else None,
            }
        if cmd == "kill":
            n = await self.halt(str(req.get("reason") or "control command"))
            return {"ok": True, "halted": True, "cancel_requested": n}
        if cmd == "resume":
            changed = self.control.resume(str(req.get("reason") or "control command"))
            self.metrics.halted(False)
            return {"ok": True, "halted": False, "changed": changed}
        if cmd == "stop":
            self.control.request_stop("control command")
            return {"ok": True, "stopping": True}
        if cmd == "submit":
            order = req.get("order")
            if not isinstance(order, dict):
                return {"ok": False, "error": 'submit needs "order": {...} (an [[orders]] table)'}
            try:
                r = await self.submit_parent(order)
            except ValidationError as e:
                err = e.errors()[0]
                return {"ok": False, "error": f"order.{key_path(tuple(err['loc']))}: {err['msg']}"}
            except ValueError as e:
                return {"ok": False, "error": str(e)}
            return {"ok": True, "parent": r.status()}
        if cmd == "cancel":
            pid = req.get("parent_id")
            if not isinstance(pid, str):
                return {"ok": False, "error": 'cancel needs "parent_id"'}
            try:
                r = await self.cancel_parent(pid, str(req.get("reason") or "control command"))
            except ValueError as e:
                return {"ok": False, "error": str(e)}
            return {"ok": True, "parent": r.status()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # -- the run ------------------------------------------------------------------------------
    async def _on_halt(self) -> None:
        # Cancels the open children the moment the kill switch is engaged by any path (signal,
        # command, API), not at the next book.
        while True:
            await self.control.halt_event.wait()
            self.control.halt_event.clear()  # set again only by the next halt after a resume
            self.metrics.halted(True)
            await self._cancel_all("halt")

    async def _on_stop(self) -> None:
        await self.control.stop_event.wait()
        if self.cfg.control.on_stop == "cancel":
            n = await self._cancel_all("shutdown")
            self.log.info("daemon.shutdown_cancel", cancel_requested=n)
        else:
            open_ids = [c for r in self.runners for c in r.in_doubt()]
            self.log.warning("daemon.shutdown_left_open", client_order_ids=open_ids)
        # A feed that is silent would not see the stop until its next message: end it.
        await asyncio.sleep(1.0)
        for t in self.sym_tasks.values():
            if not t.done():
                t.cancel()

    async def run(self) -> list[RunSummary]:
        """Work every parent to its deadline (or until stopped); return the summaries."""
        log = self.log
        if self.control.halted:
            log.error(
                "daemon.halted",
                reason="halted before this start (journal)",
                hint="resume on purpose: exec-agent resume, or exec-agent run --resume",
            )
        # Client order ids carry a run tag unique per start (per journal when there is one):
        # unique for ever on a journal, and across restarts and days towards a venue.
        if self.journal is not None:
            self.id_tag = await self.journal.start_run(time.time_ns())
            self.gates.forbid_ids(self.journal.client_order_ids())
            rep = self.journal.report()
            if not rep.ok:
                log.error(
                    "journal.duplicates",
                    duplicate_parents=list(rep.duplicate_parents),
                    duplicate_client_order_ids=list(rep.duplicate_client_order_ids)[:20],
                )
        else:
            self.id_tag = make_run_tag(time.time_ns())
        submitted, cancelled = self.journal.parents() if self.journal is not None else ([], {})
        known = {o.id for o in self.cfg.orders}
        todo = [*self.cfg.orders]
        todo += [OrderConfig.model_validate(raw) for raw in submitted if raw["id"] not in known]
        for o in todo:
            try:
                self._add(o)
            except ValueError as e:
                log.error("order.refused", parent_id=o.id, reason=str(e))
        if self.journal is not None:
            for r in self.runners:
                if r.order.id in cancelled:
                    r.cancel_parent(cancelled[r.order.id])
        self.metrics.halted(self.control.halted)
        for r in self.runners:
            self.metrics.remaining(r.order.id, r.mpc.tracker.remaining_qty)
        # The compiled kernels load (or compile, the first time) now, not in the first decision.
        t_warm = time.perf_counter()
        n_kernels = accel.warm()
        if self.freeze_gc:
            # A full collection of the start-up heap (the libraries, numba's compiler) takes
            # 50 to 70 ms here: a stall mid-period, which the reader answers by conflating.
            # Frozen, the collector skips what lives for the whole run (unfrozen at the end).
            gc.collect()
            gc.freeze()
        log.info(
            "daemon.started",
            jit=accel.status(),
            kernels=n_kernels,
            warm_s=round(time.perf_counter() - t_warm, 3),
            gc_frozen=gc.get_freeze_count(),
            n_orders=len(self.runners),
            symbols=sorted(self.by_symbol),
            broker=self.main.name,
            halted=self.control.halted,
        )
        server: ControlServer | None = None
        if self.cfg.control.socket is not None:
            server = await ControlServer(self.cfg.control.socket, self.command).start()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                brokers = [self.main] if self.shadow is None else [self.main, self.shadow]
                pumps = [tg.create_task(_pump_events(b, self.router)) for b in brokers]
                await _reconcile(self.runners, self.main, self.cfg.broker.reconcile_timeout_s)
                stop_watchdog = asyncio.Event()
                helpers = [
                    tg.create_task(
                        _ack_watchdog(
                            self.runners,
                            self.main,
                            self.ack_clock,
                            self.cfg.broker.ack_timeout_s,
                            stop_watchdog,
                            self.cfg.broker.max_status_queries,
                            self.control.halt,
                        )
                    ),
                    tg.create_task(self._on_halt()),
                    tg.create_task(self._on_stop()),
                ]
                for sym in list(self.by_symbol):
                    self._start_symbol(sym)
                while True:
                    pending = [t for t in self.sym_tasks.values() if not t.done()]
                    if pending:
                        await asyncio.wait(pending)
                        continue
                    if self.cfg.control.keep_running and not self.control.stop:
                        await _first(self.control.stop_event.wait(), self._new_task())
                        continue
                    break
                await _settle()
                # Children still without a final report: ask, and wait for the answers before exit.
                await _reconcile(
                    self.runners, self.main, self.cfg.broker.reconcile_timeout_s, at="exit"
                )
                stop_watchdog.set()
                for h in helpers[1:]:
                    h.cancel()
                await helpers[0]
                for b in brokers:
                    await b.aclose()
                await asyncio.gather(*pumps)
        finally:
            if server is not None:
                await server.aclose()
            if self.freeze_gc:
                gc.unfreeze()
        if self.journal is not None:
            with contextlib.suppress(JournalUnavailable):  # said at error level already
                await self.journal.flush()
        summaries = [r.summary() for r in self.runners]
        for s, r in zip(summaries, self.runners, strict=True):
            if r.mpc.tracker.n_open:
                log.error(
                    "run.open_orders_at_exit",
                    parent_id=s.parent_id,
                    open_qty=r.mpc.tracker.open_qty,
                )
            if r.mpc.tracker.orphan_fills:
                log.error(
                    "run.orphan_fills", parent_id=s.parent_id, n=len(r.mpc.tracker.orphan_fills)
                )
            log.log(20 if s.status == "completed" else 30, "run.summary", **s.as_log())
        return summaries

    async def _new_task(self) -> None:
        # Returns once a symbol task is started again (a parent was submitted).
        self._symbol_started.clear()
        await self._symbol_started.wait()


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def run(
    cfg: AgentConfig,
    feed_factory: FeedFactory,
    *,
    broker: Broker | None = None,
    profiles: dict[tuple[str, str], IntradayProfile] | None = None,
    journal: Journal | None = None,
    control: Control | None = None,
    metrics: NullMetrics | None = None,
    history_trades: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    clock: Clock | None = None,
    ack_clock: Clock | None = None,
    freeze_gc: bool = False,
) -> list[RunSummary]:
    """Work every parent order of ``cfg`` to its deadline and return the summaries.

    Args:
        cfg: Validated config.
        feed_factory: Opens the book feed of a symbol.
        broker: Where MPC children go; a ``SimulatedBroker`` per the config when None.
        profiles: Intraday liquidity profile per (symbol, side) (flat when missing).
        journal: Crash-safe journal; parents found in it resume where they stopped, and parents
            submitted on the control channel come back.
        control: Stop and kill-switch state (a fresh one, HALTED if the journal says so).
        metrics: Prometheus metrics (None: off).
        history_trades: Per symbol, the trades ``(ts_ns, qty)`` of earlier days (VWAP's
            volume profile; ``runner.build_history_trades``).
        clock: Wall clock of live mode (default: ``WallClock`` for a websocket feed, none in
            replay); tests inject a ``ManualClock``.
        ack_clock: Clock of the acknowledgement watchdog (``broker.ack_timeout_s``; default:
            ``clock``, else the wall clock, replay included); tests inject a ``ManualClock``.
        freeze_gc: Freeze the garbage collector's view of the start-up heap for the run (the
            ``exec-agent run`` process: no full collection of it mid-period).
    """
    d = Daemon(
        cfg,
        feed_factory,
        broker,
        profiles,
        journal,
        control,
        metrics,
        history_trades,
        clock,
        ack_clock,
        freeze_gc=freeze_gc,
    )
    return await d.run()
