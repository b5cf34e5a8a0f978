"""The context `kubectl peon`'s commands run in (the API as the user, the clock, the output),
and how what goes wrong becomes a message and an exit code. Tests give their own Ctx."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TextIO

from peon.shared import clock

FIELD_MANAGER = "kubectl-peon"


class Usage(Exception):
    """Bad usage that argparse cannot see (exit 2)."""


class Failure(Exception):
    """What the cluster said no to, or a wait that failed (exit 1)."""


@dataclass
class Ctx:
    kube: Any
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    now: Callable[[], dt.datetime] = clock.now  # the operator's clock (PEON_CLOCK_FILE in tests)
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    default_namespace: Callable[[], str] = lambda: current_namespace()
    # (namespace, pod, container, follow, tail, previous) -> chunks of the log
    pod_logs: Callable[..., Iterable[bytes]] | None = None

    def print(self, text: str = "") -> None:
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl takes it."""
    import kubernetes
    try:
        _, ctx = kubernetes.config.list_kube_config_contexts()
        return (ctx.get("context") or {}).get("namespace") or "default"
    except (kubernetes.config.ConfigException, OSError, TypeError):
        return "default"


def make_kube(api_client: Any = None):
    """The API as this command's user (their kubeconfig), writing as `kubectl-peon`."""
    from peon.shared.kube import Kube
    return Kube(api_client, agent=FIELD_MANAGER)


def live_pod_logs(api_client: Any) -> Callable[..., Iterable[bytes]]:
    def read(namespace: str, pod: str, container: str, follow: bool, tail: int | None,
             previous: bool) -> Iterable[bytes]:
        from kubernetes.client import CoreV1Api
        kw: dict[str, Any] = {"container": container, "follow": follow, "previous": previous,
                              "_preload_content": False}
        if tail is not None and tail >= 0:
            kw["tail_lines"] = tail
        resp = CoreV1Api(api_client).read_namespaced_pod_log(pod, namespace, **kw)
        try:
            yield from resp.stream(64 * 1024)  # as the kubelet sends it (chunked), not held back
        finally:
            resp.release_conn()
    return read


def live_ctx() -> Ctx:
    kube = make_kube()
    return Ctx(kube=kube, pod_logs=live_pod_logs(kube.api))


def api_message(e: Any) -> str:
    try:
        msg = json.loads(e.body or "{}").get("message")
    except (ValueError, AttributeError, TypeError):
        msg = None
    return msg or f"{e.status} {e.reason}".strip()


def entry(command: Callable[[argparse.Namespace, Ctx], int]) -> Callable[..., int]:
    """The argparse fn: runs `command` with a live Ctx (or the one a test gives) and turns
    what goes wrong into `error: ...` on stderr and an exit code."""
    def run(args: argparse.Namespace, ctx: Ctx | None = None) -> int:
        from peon.shared import actions
        from kubernetes.client.rest import ApiException
        from kubernetes.config import ConfigException
        import urllib3
        err = ctx.err if ctx else sys.stderr
        try:
            ctx = ctx or live_ctx()
            return command(args, ctx)
        except (Usage, actions.BadRequest) as e:
            print(f"error: {e}", file=err)
            return 2
        except Failure as e:
            print(f"error: {e}", file=err)
            return 1
        except ApiException as e:
            print(f"error: {api_message(e)}", file=err)
            return 1
        except ConfigException as e:
            print(f"error: no cluster to talk to: {e}", file=err)
            return 1
        except urllib3.exceptions.HTTPError as e:
            print(f"error: cannot reach the API server: {e}", file=err)
            return 1
        except BrokenPipeError:  # `kubectl peon logs x | head`
            return 0
        except KeyboardInterrupt:
            return 130
    run.__name__ = command.__name__
    run.takes_ctx = True  # type: ignore[attr-defined]
    return run


def namespace_of(args: argparse.Namespace, ctx: Ctx) -> str | None:
    if getattr(args, "all_namespaces", False):
        return None
    return args.namespace or ctx.default_namespace()


def get_server(ctx: Ctx, ns: str, name: str) -> dict:
    gs = ctx.kube.get("GameServer", ns, name)
    if gs is None:
        raise Failure(f'gameserver "{name}" not found in namespace "{ns}"')
    return gs


def annotate(ctx: Ctx, gs: Mapping[str, Any], patch: dict[str, Any]) -> dict:
    # The one write a verb makes: metadata only, as a JSON merge patch. Never spec.
    if set(patch) != {"metadata"}:
        raise AssertionError(f"kubectl peon writes a GameServer's metadata only, not {sorted(patch)}")
    meta = gs["metadata"]
    return ctx.kube.merge_patch("GameServer", meta["namespace"], meta["name"], patch)


