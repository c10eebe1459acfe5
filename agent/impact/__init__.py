"""impact package."""
