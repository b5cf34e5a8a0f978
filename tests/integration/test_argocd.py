"""The Argo CD health check on live GameServers in each state."""
import pytest

from argocd_health import health
from gs_helpers import apply_as_user, gameserver, wait_phase

pytestmark = pytest.mark.usefixtures("operator")


def test_health_of_real_gameservers(kube, namespace):
    apply_as_user(kube, gameserver("up", namespace))
    apply_as_user(kube, gameserver("down", namespace, state="Stopped"))
    apply_as_user(kube, gameserver("broken", namespace, gameUid="tetris"))
    assert health(wait_phase(kube, namespace, "up", "Running"))[0] == "Healthy"
    assert health(wait_phase(kube, namespace, "down", "Stopped"))[0] == "Suspended"
    status, msg = health(wait_phase(kube, namespace, "broken", "Error"))
    assert status == "Degraded" and "tetris" in msg
    # A server whose pod cannot be scheduled stays Pending: Progressing.
    apply_as_user(kube, gameserver("huge", namespace, resources={"requests": {"cpu": "500"}}))
    g = wait_phase(kube, namespace, "huge", "Pending")
    status, msg = health(g)
    assert status == "Progressing" and "Insufficient cpu" in msg
