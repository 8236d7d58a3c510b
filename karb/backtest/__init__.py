"""Backtests: the engine's own decision code on a virtual clock, the oracle, and sweeps."""
