"""Point a separately started engine process at an in-process ``SimCluster``.

The end-to-end test and ``tools/soak.py`` run the sim in their own process (so they can force
gaps and read the paper accounts) and start ``main.py run`` exactly as a user would: a config
file whose venue URLs are the sim's, and the paper keys in the environment.
"""
from __future__ import annotations

import copy

from karb.model import Venue
from karb.secrets import ENV_NAMES
from karb.sim.cluster import SimCluster


def engine_config_data(cluster: SimCluster, data: dict, live: bool = True) -> dict:
    """Return raw config ``data`` (parsed YAML) with venue URLs pointing at ``cluster``.

    ``live`` sets ``mode: live``: real orders, but only to the sim's paper accounts.
    """
    data = copy.deepcopy(data)
    if live:
        data["mode"] = "live"
    for venue in Venue:
        endpoints = cluster.endpoints(venue)
        data["venues"][venue.value].update(rest_url=endpoints.rest_url, ws_url=endpoints.ws_url)
    return data


def engine_env(cluster: SimCluster, base: dict[str, str]) -> dict[str, str]:
    """``base`` without any KARB_* key, plus the sim's paper keys."""
    env = {k: v for k, v in base.items() if not k.startswith("KARB_")}
    for venue in Venue:
        access_env, secret_env = ENV_NAMES[venue]
        credentials = cluster.credentials(venue)
        env[access_env], env[secret_env] = credentials.access_key, credentials.secret_key
    return env
