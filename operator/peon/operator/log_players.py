"""Players from the game container's log (a Game with `spec.query.protocol: log`): the I/O half
of players.LogTally, run by the prober in place of a network query.

Each ask reads the container's log through the API server's pods/log, bounded: at most
LOG_CHUNK bytes a request (limitBytes), from the second of the last line read (sinceTime, with
timestamps=true; lines already counted are passed over by their timestamps), within
LOG_TIMEOUT seconds, at most LOG_CHUNKS requests an ask. The answer is None (unknown, never
"nobody is on") until the log has been read to its end once. A new container (its id changes:
a restart, a new pod) starts from nothing and is read from its start; so is every container
after an operator restart, bounded the same way (the kubelet serves the current log file only:
a join before the kubelet rotated the file is not seen, and that player is not counted until a
line names them again)."""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote, urlencode

import urllib3
from kubernetes.client.rest import ApiException
from dataclasses import dataclass, field
from typing import Callable, Hashable

from peon.shared.players import LogPosition, LogRules, LogTally, Players

log = logging.getLogger(__name__)

LOG_CHUNK = 256 * 1024   # bytes a request reads at most (limitBytes)
LOG_CHUNKS = 4           # requests an ask makes at most (1 MiB an ask)
LOG_TIMEOUT = 10.0       # seconds a request may take


@dataclass
class _Reading:
    tally: LogTally
    position: LogPosition = field(default_factory=LogPosition)
    caught_up: bool = False


ReadLog = Callable[[str, str, str, "str | None", int, float], bytes]


def api_read_log(kube) -> ReadLog:
    """pods/log through the operator's client (its pool, its bearer token, as Kube._call sends):
    (namespace, pod, container, sinceTime, limit, timeout) -> at most `limit` bytes, read as
    they come (never more held), within `timeout` seconds a read. The client's
    read_namespaced_pod_log takes no sinceTime."""
    def read(ns: str, pod: str, container: str, since: str | None, limit: int,
             timeout: float) -> bytes:
        api, cfg = kube.api, kube.api.configuration
        query = [("container", container), ("timestamps", "true"), ("limitBytes", str(limit))]
        if since:
            query.append(("sinceTime", since))
        headers = {**api.default_headers, "Accept": "*/*"}
        for auth in cfg.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[auth["key"]] = auth["value"]
        url = (f"{cfg.host}/api/v1/namespaces/{quote(ns)}/pods/{quote(pod)}/log?"
               + urlencode(query, quote_via=quote))
        resp = api.rest_client.pool_manager.request(
            "GET", url, headers=headers, preload_content=False,
            timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout))
        try:
            if not 200 <= resp.status <= 299:
                raise ApiException(status=resp.status, reason=resp.reason)
            out = b""
            while len(out) < limit:
                piece = resp.read(limit - len(out))
                if not piece:
                    break
                out += piece
            return out
        finally:
            resp.release_conn()
    return read


class LogPlayers:
    def __init__(self, read_log: ReadLog | None):
        self.read_log = read_log
        self._readings: dict[Hashable, _Reading] = {}

    def forget(self, keep: set) -> None:
        """Drop the readings of containers no longer asked about."""
        for k in [k for k in self._readings if k not in keep]:
            del self._readings[k]

    async def ask(self, ns: str, pod: str, container: str, container_id: str,
                  rules: LogRules) -> Players | None:
        if self.read_log is None:
            return None
        key = (ns, pod, container, container_id, rules)
        reading = self._readings.get(key)
        if reading is None:
            self.forget({k for k in self._readings if k[:2] != (ns, pod) or k[2] != container})
            reading = self._readings[key] = _Reading(LogTally(rules))
        for _ in range(LOG_CHUNKS):
            chunk = await asyncio.to_thread(self.read_log, ns, pod, container,
                                            reading.position.since(), LOG_CHUNK, LOG_TIMEOUT)
            full = len(chunk) >= LOG_CHUNK
            before = (reading.position.last, reading.position.at_last)
            for line in reading.position.new_lines(chunk, full):
                reading.tally.feed(line)
            if not full:
                reading.caught_up = True
                break
            if (reading.position.last, reading.position.at_last) == before:
                # A whole chunk of lines within one second, all read before: go on from the
                # next second (the rest of that second's lines are not counted).
                reading.position.pass_second()
                log.warning("%s/%s: more than %d bytes of log in one second; passed over",
                            ns, pod, LOG_CHUNK)
        return reading.tally.players() if reading.caught_up else None
