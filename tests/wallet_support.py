"""The sim with one market (KRW-XRP) and a wallet, on a ManualClock, for the wallet,
transfer and rebalancer tests."""
from __future__ import annotations

from contextlib import contextmanager

import yaml

from karb.cli import REPO_CONFIG
from karb.clock import ManualClock
from karb.config import parse_config
from karb.exchanges.factory import make_client
from karb.model import Venue


@contextmanager
def xrp_wallet_sim(minimum: str = "5"):
    """Yield ``(cluster, clients, clock, config)``: XRP withdrawals cost 0.4 XRP, need at least
    ``minimum`` and are credited 300 s (of ``clock``) after they are sent."""
    from karb.sim.cluster import SimCluster
    data = yaml.safe_load((REPO_CONFIG / "sim.yaml").read_text())
    data["markets"] = ["KRW-XRP"]
    data["sim"]["markets"] = {"KRW-XRP": data["sim"]["markets"]["KRW-XRP"]}
    data["sim"]["wallet"] = {"confirm_s": 300, "networks": {"XRP": {"fee": "0.4", "minimum": minimum}}}
    data["log"] = {"file": None}
    config = parse_config(data)
    clock = ManualClock()
    with SimCluster.from_config(config, clock=clock).start() as cluster:
        config = cluster.apply_to(config)
        clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
        try:
            yield cluster, clients, clock, config
        finally:
            for c in clients.values():
                c.close()
