"""Rebalancing: moving coin between the venues (``transfer``: the safe withdrawal path, its
journal ``records`` and ``config``). The planner that decides what to move comes later."""
