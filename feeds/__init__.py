"""Limit-order-book feeds: replayed files and live websockets."""
