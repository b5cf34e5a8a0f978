"""How many players are on: asked of the server itself, by the protocol its Game names.

    a2s        Steam's A2S_INFO query (python-a2s), on the game's query port
    minecraft  the Minecraft server-list ping (mcstatus)

A failed query is never read as "nobody is on": it returns None and the caller retries.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Players:
    online: int
    max: int


async def query(protocol: str, host: str, port: int, timeout: float = 2.0) -> Players | None:
    """One query, with the libraries' async calls (the prober runs them on the event loop)."""
    try:
        if protocol == "a2s":
            import a2s
            info = await a2s.ainfo((host, port), timeout=timeout)
            return Players(int(info.player_count), int(info.max_players))
        if protocol == "minecraft":
            from mcstatus import JavaServer
            status = await JavaServer(host, port, timeout=timeout).async_status()
            return Players(int(status.players.online), int(status.players.max))
    except Exception as e:  # timeouts, refused connections, garbled answers: unknown
        log.debug("player query %s %s:%s failed: %s", protocol, host, port, e)
    return None
