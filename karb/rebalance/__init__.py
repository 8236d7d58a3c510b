"""Rebalancing: moving inventory back between the venues. ``plan`` (what to move, what it
costs, worth it or not), ``rebalancer`` (the ``rebalance`` thread), ``transfer`` (the safe
withdrawal path), its journal ``records`` and ``config``."""
