"""check_sendable: a broker refuses, before sending, an order it would have to alter."""

from __future__ import annotations

import math

import pytest

from agent.brokers.base import IOC_ONLY, check_sendable
from agent.errors import BrokerError, BrokerRejected
from agent.model import ChildOrder, Side


def _child(qty: float = 100.0, px: float = 10.5, tif: str = "ioc") -> ChildOrder:
    return ChildOrder("P-1", "P", "SYM", Side.BUY, qty, px, 0, tif=tif)


def test_a_whole_ioc_order_at_a_price_passes():
    check_sendable(_child())
    check_sendable(_child(qty=1.0, px=0.0001))


@pytest.mark.parametrize("tif", ["day", "gtc"])
def test_a_resting_order_is_refused_by_an_ioc_only_broker(tif):
    with pytest.raises(BrokerRejected, match=f"'{tif}'") as e:
        check_sendable(_child(tif=tif), IOC_ONLY)
    assert e.value.reason == "unsupported_tif"
    assert not e.value.retryable
    check_sendable(_child(tif=tif), {"ioc", "day", "gtc"})  # a broker that can rest it


@pytest.mark.parametrize("qty", [0.0, -100.0, 100.5, 0.4, math.nan, math.inf])
def test_a_qty_the_wire_would_round_or_that_is_no_qty_is_refused(qty):
    with pytest.raises(BrokerRejected, match="qty must be a whole number") as e:
        check_sendable(_child(qty=qty))
    assert e.value.reason == "invalid_qty"
    assert isinstance(e.value, BrokerError)


@pytest.mark.parametrize("px", [0.0, -1.0, math.nan, math.inf])
def test_a_price_that_is_no_price_is_refused(px):
    with pytest.raises(BrokerRejected, match="limit_px must be a finite price") as e:
        check_sendable(_child(px=px))
    assert e.value.reason == "invalid_price"
