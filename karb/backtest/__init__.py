"""Backtests: the live decision code on simulated time (``karb backtest``), the oracle, sweeps.

``run`` drives the engine's own parts synchronously, ``venue`` is the execution model,
``sources`` the book streams (the sim's generator, or recorded frames), ``runner`` the
synchronous leg path; ``config`` is the ``backtest:`` config section; ``sweep`` runs a grid
of settings on worker processes.
"""
