"""Passive fill model: where our resting orders stand in the queue at their price, on MBP-10 rows.

An L2 (market-by-price) feed shows the total size at each price, not the orders in it, so where a
resting order of ours stands in its price's queue is estimated. The rules (issue 14, item 3):

- Join. An order joins the *back* of the queue at its price when it reaches the venue (after
  latency): the shares ahead of it (``ahead``) are the displayed size at that price in the book
  in force then; 0 at a price inside the displayed range where nothing is shown (a new level, we
  are first); unknown (``inf``) at a price deeper than the displayed levels, until it shows.
  The part of an order that crosses the book on arrival takes liquidity as an IOC would
  (``match_ioc``, at the levels' prices, kind ``"taker"``) and the rest rests.
- Our own size is part of the book we match against. The feed's sizes do not include our orders
  (they are simulated), so the queue at our price is ``ahead + ours + behind`` with
  ``ahead + behind`` the displayed size: a trade at our price of ``s`` shares eats ``ahead``
  first and then us, FIFO among our own orders at that price; it is never counted twice.
- Trades. A trade row (action ``T``) at our price whose aggressor is the other side (or not
  given, ``N``) takes the queue ahead of us first, then us. A trade *through* our price (a sell
  printed below our bid, a buy above our offer) means an aggressor would have reached us first:
  it fills us for up to its size, at our price. A book whose other side moves to or through our
  price (an ask at or below our bid) fills us, at our price, for up to the size shown there; what
  we took so from a level that stays crossed is remembered per side, so a crossed book that
  persists over rows is not taken twice.
- Size decreases at our price that are not trades (cancels, or the book's ``C``/``M`` rows that
  follow a trade print) move us up by the configured model:

  * ``conservative`` (default): no cancel is ahead of us. Only trades move us; ``ahead`` never
    exceeds the displayed size (if the level shrinks below it, those shares were ahead). This is
    hftbacktest's ``RiskAdverseQueueModel``.
  * ``proportional``: hftbacktest's ``ProbQueueModel`` with its power probability
    (``PowerProbQueueFunc``; after Rigtorp, "Estimating order queue position", 2013): a
    decrease of ``d`` shares at the level (net of the trades printed there since the level last
    changed, so a trade is not counted again when the book shows its effect) falls behind us with
    probability ``p = f(back) / (f(back) + f(front))``, ``f(x) = x ** power``, ``front = ahead``,
    ``back = displayed - ahead``. The part behind is capped at ``back``:
    ``ahead -= d - min(p * d, back)``, then ``ahead <= displayed``. ``power = 1`` is the uniform
    (literally proportional) case; a larger power puts more cancels behind us, as is the rule
    for orders that joined late.

- Order within a row: the displayed size first, then the row's print, then the crossing check.
  The book on a ``T`` row does not include that print (Databento: trades do not change the
  book; in real XNAS files the reduction shows on the *next* row, whatever its action), so the
  print's shares are netted from the next decrease at our price, never counted as a cancel.
- A clear row (action ``R``) carries no queue information: positions are kept until the book is
  rebuilt (the ``min`` with the displayed size then applies).

Pure and synchronous: arrays in, fills out; no clock, no I/O. The per-row event columns follow
``feeds.model.BookBatch`` (``action``, ``ev_side``, ``ev_px``, ``ev_sz``; ASCII codes as uint8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from agent.brokers.matching import match_ioc
from agent.errors import InternalViolation, ModelError
from agent.model import Side

__all__ = [
    "ACTION_ADD",
    "ACTION_CANCEL",
    "ACTION_CLEAR",
    "ACTION_FILL",
    "ACTION_MODIFY",
    "ACTION_TRADE",
    "FillKind",
    "PassiveFill",
    "QueueConfig",
    "QueueModel",
    "QueuePosition",
    "QueueRows",
    "passive_fill_problem",
]

ACTION_TRADE = ord("T")
ACTION_ADD = ord("A")
ACTION_CANCEL = ord("C")
ACTION_MODIFY = ord("M")
ACTION_FILL = ord("F")
ACTION_CLEAR = ord("R")
_SIDE_ASK = ord("A")
_SIDE_BID = ord("B")

FillKind = Literal["trade", "trade_through", "cross", "taker"]

_REL_PX_TOL = 1e-9  # prices equal within this relative tolerance (a tick is far larger)
_EPS = 1e-9


class QueueConfig(BaseModel):
    """How cancels at our price move us up the queue (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Literal["conservative", "proportional"] = "conservative"
    # n in f(x) = x**n (proportional model only); 1 = cancels uniform over the queue
    power: float = Field(default=1.0, gt=0.0)


@dataclass(frozen=True, slots=True)
class QueueRows:
    """Book rows for the queue model: each row's event and the book after it.

    Attributes:
        action: Event per row, uint8 ASCII (``T`` trade, ``A`` add, ``C`` cancel, ``M`` modify,
            ``F`` fill, ``R`` clear, 0 none), shape (n,).
        side: Event side, uint8 ASCII (``A`` ask, ``B`` bid, ``N`` none; on ``T`` rows the
            aggressor), shape (n,).
        px: Event price, shape (n,), NaN when none.
        sz: Event size in shares, shape (n,), 0 when none.
        bid_px: Bid prices after the row, shape (n, L), best first, NaN where empty.
        bid_sz: Bid sizes after the row, shape (n, L), 0 where empty.
        ask_px: Ask prices after the row, shape (n, L), best first, NaN where empty.
        ask_sz: Ask sizes after the row, shape (n, L), 0 where empty.
    """

    action: NDArray[np.uint8]
    side: NDArray[np.uint8]
    px: NDArray[np.float64]
    sz: NDArray[np.float64]
    bid_px: NDArray[np.float64]
    bid_sz: NDArray[np.float64]
    ask_px: NDArray[np.float64]
    ask_sz: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def slice(self, start: int, stop: int) -> QueueRows:
        """Return rows ``start:stop`` (views, no copy), e.g. up to the next decision time."""
        return QueueRows(
            self.action[start:stop],
            self.side[start:stop],
            self.px[start:stop],
            self.sz[start:stop],
            self.bid_px[start:stop],
            self.bid_sz[start:stop],
            self.ask_px[start:stop],
            self.ask_sz[start:stop],
        )

    @classmethod
    def from_batch(cls, batch: object) -> QueueRows:
        """Take the event columns and the book of a ``feeds.model.BookBatch``.

        Raises:
            ModelError: the batch has no event columns (``action`` is None): the feed cannot
                support a passive fill model.
        """
        action = getattr(batch, "action", None)
        if action is None:
            raise ModelError(
                f"book batch of {getattr(batch, 'symbol', '?')!r} has no event columns "
                "(action/ev_side/ev_px/ev_sz): passive fills need the MBP-10 trade rows; "
                "use an aggressive tactic on this feed"
            )
        return cls(
            np.asarray(action, dtype=np.uint8),
            np.asarray(getattr(batch, "ev_side"), dtype=np.uint8),  # noqa: B009
            np.asarray(getattr(batch, "ev_px"), dtype=np.float64),  # noqa: B009
            np.asarray(getattr(batch, "ev_sz"), dtype=np.float64),  # noqa: B009
            np.asarray(getattr(batch, "bid_px"), dtype=np.float64),  # noqa: B009
            np.asarray(getattr(batch, "bid_sz"), dtype=np.float64),  # noqa: B009
            np.asarray(getattr(batch, "ask_px"), dtype=np.float64),  # noqa: B009
            np.asarray(getattr(batch, "ask_sz"), dtype=np.float64),  # noqa: B009
        )


def passive_fill_problem(rows: QueueRows) -> str:
    """Return why these rows cannot support passive fills (``""`` when they can).

    A queue model without trade prints would invent fills from book changes alone, so rows with
    no ``T`` row are refused with a reason the caller can show.
    """
    if len(rows) == 0:
        return "no book rows"
    if not np.any(rows.action == ACTION_TRADE):
        return "no trade rows (action T) in the data: the queue model has nothing to fill on"
    return ""


@dataclass(slots=True)
class QueuePosition:
    """One resting order of ours and where it stands.

    Attributes:
        key: Our id for it (the client order id).
        side: Buy rests on the bids, sell on the asks.
        px: Its limit price.
        qty: Shares still resting, > 0.
        ahead: Displayed shares ahead of it at its price (our own orders excluded; ``inf`` while
            its price is deeper than the displayed levels).
        seq: Join order (FIFO among our orders at one price).
        level_sz: Displayed size at its price last seen (NaN while unknown).
        trade_since: Shares printed at its price since the level last changed (proportional).
    """

    key: str
    side: Side
    px: float
    qty: float
    ahead: float
    seq: int
    level_sz: float = math.nan
    trade_since: float = 0.0


@dataclass(frozen=True, slots=True)
class PassiveFill:
    """One fill of a resting order.

    Attributes:
        key: The order's key.
        row: Index of the row that filled it, in the rows given (-1 on arrival).
        qty: Shares, > 0.
        px: Price (our limit for resting fills, the level's price for ``taker``).
        kind: ``trade`` (a print at our price reached us), ``trade_through`` (a print through
            our price), ``cross`` (the other side of the book moved to or through our price),
            ``taker`` (the part that crossed on arrival).
        done: True when the order has nothing left resting after this fill.
    """

    key: str
    row: int
    qty: float
    px: float
    kind: FillKind
    done: bool


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_PX_TOL * max(1.0, abs(b))


def _level_sizes(
    side: Side, px: float, lv_px: NDArray[np.float64], lv_sz: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Return the displayed size at ``px`` on our side per row, shape (n,) from (n, L).

    0 where the price is inside the displayed range (or the side shows fewer than L levels) and
    absent; NaN where it is deeper than the displayed levels (unknown).
    """
    tol = _REL_PX_TOL * max(1.0, abs(px))
    with np.errstate(invalid="ignore"):
        hit = np.abs(lv_px - px) <= tol
        worst = lv_px[:, -1]
        inside = (px > worst) if side is Side.BUY else (px < worst)
    size = np.where(hit, lv_sz, 0.0).sum(axis=1)
    known = hit.any(axis=1) | ~np.isfinite(worst) | inside
    return np.where(known, size, np.nan)


def _crossing_sizes(
    side: Side, px: float, opp_px: NDArray[np.float64], opp_sz: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Return the other side's displayed size at or through our price per row, shape (n,)."""
    tol = _REL_PX_TOL * max(1.0, abs(px))
    with np.errstate(invalid="ignore"):
        through = (opp_px <= px + tol) if side is Side.BUY else (opp_px >= px - tol)
    size: NDArray[np.float64] = np.where(through, opp_sz, 0.0).sum(axis=1)
    return size


class QueueModel:
    """Resting orders of one symbol and their queue positions; fills from book rows.

    Usage: ``join`` an order when it reaches the venue (with the book in force then), feed the
    rows that follow with ``advance`` (fills out), ``cancel`` or ``reduce`` it when our cancel
    or replace reaches the venue. A replace that changes the price or raises the size loses
    priority: ``cancel`` then ``join`` again; one that lowers the size keeps it (``reduce``).

    Args:
        config: Which cancel model (default conservative).
    """

    def __init__(self, config: QueueConfig | None = None) -> None:
        self.config = config or QueueConfig()
        self._orders: dict[str, QueuePosition] = {}
        self._seq = 0
        # Shares our orders took from the other side's crossing levels, per side of ours, since
        # that side last stopped being crossed (so a persistent cross is not taken twice).
        self._cross_taken: dict[Side, float] = {Side.BUY: 0.0, Side.SELL: 0.0}

    # -- queries -------------------------------------------------------------------------------
    def position(self, key: str) -> QueuePosition | None:
        """Return the order's queue position (None when it is not resting)."""
        return self._orders.get(key)

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, key: object) -> bool:
        return key in self._orders

    # -- commands ------------------------------------------------------------------------------
    def join(
        self,
        key: str,
        side: Side,
        px: float,
        qty: float,
        bid_px: NDArray[np.float64],
        bid_sz: NDArray[np.float64],
        ask_px: NDArray[np.float64],
        ask_sz: NDArray[np.float64],
    ) -> list[PassiveFill]:
        """Rest an order arriving at the venue on this book (levels best first, shape (L,)).

        Returns:
            The fills of the part that crossed on arrival (kind ``taker``); the rest rests at
            the back of the queue at ``px``.

        Raises:
            InternalViolation: a key already resting, ``qty <= 0`` or a non-finite price.
        """
        if key in self._orders:
            raise InternalViolation(f"queue model: {key} is already resting")
        if not (qty > 0 and math.isfinite(px) and px > 0):
            raise InternalViolation(f"queue model: {key} with qty {qty} at px {px}")
        opp_px, opp_sz = (ask_px, ask_sz) if side is Side.BUY else (bid_px, bid_sz)
        take_qty, take_px = match_ioc(side, qty, px, opp_px, opp_sz)
        fills: list[PassiveFill] = []
        left = qty
        for q, p in zip(take_qty.tolist(), take_px.tolist(), strict=True):
            left -= q
            fills.append(PassiveFill(key, -1, q, p, "taker", left <= _EPS))
        if left <= _EPS:
            return fills
        # What we took on arrival is still shown by the feed: do not take it again as a cross.
        self._cross_taken[side] += float(take_qty.sum())
        own_px, own_sz = (bid_px, bid_sz) if side is Side.BUY else (ask_px, ask_sz)
        level = float(_level_sizes(side, px, own_px[None, :], own_sz[None, :])[0])
        self._seq += 1
        self._orders[key] = QueuePosition(
            key, side, px, left, math.inf if math.isnan(level) else level, self._seq, level
        )
        return fills

    def cancel(self, key: str) -> float:
        """Take the order off the book; return the shares that were resting (0 if none)."""
        pos = self._orders.pop(key, None)
        return 0.0 if pos is None else pos.qty

    def reduce(self, key: str, qty: float) -> None:
        """Lower the resting size to ``qty`` (> 0), keeping the order's place in the queue.

        Raises:
            InternalViolation: the order is not resting, or ``qty`` is not in (0, resting].
        """
        pos = self._orders.get(key)
        if pos is None or not (0 < qty <= pos.qty + _EPS):
            raise InternalViolation(
                f"queue model: reduce {key} to {qty} (resting {pos.qty if pos else 'nothing'}); "
                "a larger size loses priority: cancel and join again"
            )
        pos.qty = qty

    def advance(self, rows: QueueRows) -> list[PassiveFill]:
        """Apply the rows in order to every resting order; return the fills, in row order.

        Filled orders leave the model (their last fill has ``done=True``). The displayed size
        at each order's price and the size crossing it are computed for all rows at once; only
        rows where something can happen to one of our orders are visited one by one.
        """
        fills: list[PassiveFill] = []
        n = len(rows)
        if not self._orders or n == 0:
            return fills
        level: dict[str, NDArray[np.float64]] = {}
        cross: dict[str, NDArray[np.float64]] = {}
        busy = np.zeros(n, dtype=bool)
        is_trade = (rows.action == ACTION_TRADE) & (rows.sz > 0) & np.isfinite(rows.px)
        for o in self._orders.values():
            own = (rows.bid_px, rows.bid_sz) if o.side is Side.BUY else (rows.ask_px, rows.ask_sz)
            opp = (rows.ask_px, rows.ask_sz) if o.side is Side.BUY else (rows.bid_px, rows.bid_sz)
            lv = _level_sizes(o.side, o.px, *own)
            cx = _crossing_sizes(o.side, o.px, *opp)
            level[o.key], cross[o.key] = lv, cx
            prev_lv = np.concatenate(([o.level_sz], lv[:-1]))
            changed = ~((lv == prev_lv) | (np.isnan(lv) & np.isnan(prev_lv)))
            prev_cx = np.concatenate(([0.0], cx[:-1]))
            tol = _REL_PX_TOL * max(1.0, o.px)
            with np.errstate(invalid="ignore"):
                # A print can reach a buy at or below its price, a sell at or above.
                at_or_through = (
                    rows.px <= o.px + tol if o.side is Side.BUY else rows.px >= o.px - tol
                )
            busy |= changed | (cx > 0) | (cx != prev_cx) | (is_trade & at_or_through)
        busy &= rows.action != ACTION_CLEAR
        for r in np.flatnonzero(busy).tolist():
            if not self._orders:
                break
            # The book on a T row does not show its own print yet (the next row does), so the
            # displayed size is followed first and the print then eats the queue.
            self._depth(r, level)
            if is_trade[r] and self._orders:
                self._trade(r, int(rows.side[r]), float(rows.px[r]), float(rows.sz[r]), fills)
            self._cross(r, cross, fills)
        return fills

    # -- internals -----------------------------------------------------------------------------
    def _by_priority(self, side: Side) -> list[QueuePosition]:
        """Our orders on one side, best price first, then join order."""
        sign = -1.0 if side is Side.BUY else 1.0
        mine = (o for o in self._orders.values() if o.side is side)
        return sorted(mine, key=lambda o: (sign * o.px, o.seq))

    def _fill(
        self, o: QueuePosition, r: int, q: float, kind: FillKind, out: list[PassiveFill]
    ) -> None:
        o.qty -= q
        done = o.qty <= _EPS
        out.append(PassiveFill(o.key, r, q, o.px, kind, done))
        if done:
            del self._orders[o.key]

    def _trade(self, r: int, aggressor: int, px: float, sz: float, out: list[PassiveFill]) -> None:
        """A print of ``sz`` at ``px``: it reaches our orders on the side its aggressor hits."""
        for side, own_aggr in ((Side.BUY, _SIDE_BID), (Side.SELL, _SIDE_ASK)):
            if aggressor == own_aggr:
                continue  # a buyer lifting offers never reaches our bids (and vice versa)
            left = sz
            at_level: list[QueuePosition] = []
            for o in self._by_priority(side):
                if _same(px, o.px):
                    at_level.append(o)
                elif (px < o.px) if side is Side.BUY else (px > o.px):
                    # Through our price: the aggressor would have reached us first.
                    q = min(o.qty, left)
                    if q > _EPS:
                        left -= q
                        self._fill(o, r, q, "trade_through", out)
            for o in at_level:
                o.trade_since += sz  # the book will show this print's effect: not a cancel
            if at_level and left > _EPS:
                self._walk_queue(at_level, r, left, out)

    def _walk_queue(
        self, orders: list[QueuePosition], r: int, s: float, out: list[PassiveFill]
    ) -> None:
        """Let a print of ``s`` shares eat one price's queue: displayed shares ahead, then ours.

        The queue is ``ahead_1`` displayed, our order 1, ``ahead_2 - ahead_1`` displayed, our
        order 2, and so on; the print takes it front to back.
        """
        left = s
        eaten = 0.0  # displayed shares the print took so far
        prev_ahead = 0.0
        for o in orders:
            ahead = max(o.ahead, prev_ahead)  # FIFO among ours: a later order is never in front
            seg = min(left, ahead - prev_ahead)  # inf ahead (not visible): the print stops here
            left -= seg
            eaten += seg
            prev_ahead = ahead
            o.ahead = ahead - eaten
            if o.ahead <= _EPS:
                o.ahead = 0.0
                q = min(o.qty, left)
                if q > _EPS:
                    left -= q
                    self._fill(o, r, q, "trade", out)

    def _depth(self, r: int, level: dict[str, NDArray[np.float64]]) -> None:
        """Follow the displayed size at each order's price in the book after row ``r``."""
        for o in self._orders.values():
            lv = float(level[o.key][r])
            prev = o.level_sz
            if math.isnan(lv):
                o.level_sz = math.nan
                continue
            if prev == lv:
                continue
            if self.config.model == "proportional" and math.isfinite(prev):
                d = prev - lv - o.trade_since
                if d > 0 and math.isfinite(o.ahead) and o.ahead > 0:
                    front = o.ahead
                    back = max(prev - front, 0.0)
                    fb, ff = back**self.config.power, front**self.config.power
                    p = fb / (fb + ff) if fb + ff > 0 else 1.0
                    o.ahead = max(0.0, front - (d - min(p * d, back)))
            o.trade_since = 0.0
            o.level_sz = lv
            o.ahead = min(o.ahead, lv)

    def _cross(self, r: int, cross: dict[str, NDArray[np.float64]], out: list[PassiveFill]) -> None:
        """Fill our orders the other side of the book reaches (at or through our price)."""
        for side in (Side.BUY, Side.SELL):
            orders = self._by_priority(side)
            if not orders:
                continue
            best = float(cross[orders[0].key][r])
            if best <= _EPS:
                self._cross_taken[side] = 0.0
                continue
            taken = min(self._cross_taken[side], best)
            for o in orders:
                avail = float(cross[o.key][r]) - taken
                if avail <= _EPS:
                    break
                q = min(o.qty, avail)
                taken += q
                self._fill(o, r, q, "cross", out)
            self._cross_taken[side] = taken
