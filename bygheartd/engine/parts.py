"""What the stages of one engine share, held in one place.

The submit stage, the poller, delivery and endings all read the config, the client and the
plugins through one `EngineParts`; a reload replaces a field here once instead of patching
a copy in every stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from bygheartd.api.client import BygheartClient
from bygheartd.config import Config, LiveConfig
from bygheartd.engine.budget import Budget
from bygheartd.engine.pool import ServerPool
from bygheartd.engine.ticker import Ticker
from bygheartd.hooks.host import PluginHost
from bygheartd.store.boundary import JobStore


@dataclass
class EngineParts:
    live: LiveConfig
    store: JobStore
    client: BygheartClient
    plugins: PluginHost | None
    budget: Budget
    ticker: Ticker
    # Every server's client and health: polls and downloads go to the server of the task.
    pool: ServerPool
    # This engine on the store (its lease, the jobs it holds): it polls and delivers only
    # the jobs that name it, so engines sharing one store never act on one job.
    engine_id: str = ""
    # Set once the engine drains: no stage starts new work, and what is cut off resumes
    # from the store at the next start instead of failing.
    stopping: bool = False

    @property
    def config(self) -> Config:
        return self.live.current
