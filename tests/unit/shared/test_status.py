from peon.shared import status as st


def dep(ready=1, replicas=1, gen=2, observed=2):
    return {"metadata": {"generation": gen},
            "status": {"observedGeneration": observed, "replicas": replicas,
                       "updatedReplicas": replicas, "readyReplicas": ready}}


def pod(node="kwok-node-0", host_ip="127.0.0.1", deleting=False):
    meta = {"name": "p"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node},
            "status": {"phase": "Running", "hostIP": host_ip}}


def test_phases():
    assert st.server_phase(True, None, [])[0] == "Pending"
    assert st.server_phase(True, dep(), [pod()])[0] == "Running"
    assert st.server_phase(True, dep(ready=0), [pod()])[0] == "Starting"
    assert st.server_phase(True, dep(observed=1), [pod()])[0] == "Starting"  # not rolled out yet
    assert st.server_phase(False, dep(replicas=0, ready=0), [pod(deleting=True)])[0] == "Stopping"
    assert st.server_phase(False, dep(replicas=0, ready=0), [])[0] == "Stopped"


def test_unschedulable_pod_says_why():
    p = {"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "message": "0/2 nodes: Insufficient cpu"}]}}
    phase, why = st.server_phase(True, dep(ready=0), [p])
    assert phase == "Pending" and "Insufficient cpu" in why


def test_endpoints_by_service_type():
    ports = [{"name": "game", "containerPort": 2456, "protocol": "UDP"}]
    lb = {"spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.5",
                   "ports": [{"name": "game", "port": 2456, "nodePort": 31000, "protocol": "UDP"}]},
          "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}
    assert st.endpoints(lb, [pod()], False, ports) == [
        {"name": "game", "address": "203.0.113.7", "port": 2456, "protocol": "UDP"}]
    lb["status"] = {}
    assert st.endpoints(lb, [pod()], False, ports)[0]["port"] == 31000  # no LB yet: node port
    lb["spec"]["type"] = "ClusterIP"
    assert st.endpoints(lb, [], False, ports)[0]["address"] == "10.0.0.5"
    assert st.endpoints(lb, [pod(host_ip="192.0.2.1")], True, ports)[0] == {
        "name": "game", "address": "192.0.2.1", "port": 2456, "protocol": "UDP"}
    assert st.summary_endpoint(st.endpoints(lb, [], False, ports)) == "10.0.0.5:2456"


def test_condition_transition_time_kept_while_status_unchanged():
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "T0"}]
    same = st.merge_conditions(old, [st.condition("Ready", True, "Running", "up", 3)], "T1")
    assert same[0]["lastTransitionTime"] == "T0"
    flipped = st.merge_conditions(old, [st.condition("Ready", False, "Stopped", "down", 3)], "T1")
    assert flipped[0]["lastTransitionTime"] == "T1"


def test_status_differs_treats_removed_and_absent_alike():
    old = {"uptime": {"running": True, "reason": "AlwaysOn"}}
    assert not st.status_differs(old, {"uptime": {"running": True, "reason": "AlwaysOn",
                                                  "sessionEnd": None}})
    assert st.status_differs(old, {"uptime": {"running": False, "reason": "Idle"}})



def test_a_transitional_phase_is_held_until_it_has_lasted():
    from peon.shared.status import SETTLE_SECONDS, settle_wait
    assert settle_wait("Running", 100.0, 100.1) is None  # final phases: at once
    assert settle_wait("Error", None, 5.0) is None
    assert settle_wait("Pending", 100.0, 100.5) == SETTLE_SECONDS - 0.5
    assert settle_wait("Starting", 100.0, 100.0 + SETTLE_SECONDS) is None
    assert settle_wait("Stopping", 100.0, 103.0) is None


# --- the world's seed (the game pod's init step) -------------------------------------------------

def seed_pod(state=None, last=None):
    p = pod()
    c = {"name": "seed"}
    for k, end in (("state", state), ("lastState", last)):
        if end:
            c[k] = {"terminated": end}
    p["status"]["initContainerStatuses"] = [c]
    return p


SEEDED = {"exitCode": 0, "finishedAt": "2026-12-06T12:00:00Z",
          "message": '{"seeded": "' + "ab" * 32 + '", "time": "2026-12-06T09:15:00Z"}'}
FAILED = {"exitCode": 1, "finishedAt": "2026-12-06T12:00:00Z",
          "message": '{"error": "cannot open the repository: the encryption password does not open it"}'}
BUILT = st.Built(game_uid="valheim", ports=[], image="i:1", want_running=True, host_ports=False)


def test_a_seeded_world_is_in_the_status_and_said_once():
    new, conds = st.built_status(2, BUILT, dep(), None, [seed_pod(SEEDED)])
    assert new["seed"] == {"snapshot": "ab" * 32, "snapshotTime": "2026-12-06T09:15:00Z",
                           "seededAt": "2026-12-06T12:00:00Z"}
    new["conditions"] = conds
    [(kind, reason, msg)] = st.seed_events({}, new)
    assert (kind, reason) == ("Normal", "Seeded")
    assert "abababab" in msg and "2h45m" in msg
    assert st.seed_events(new, new) == []


def test_a_kept_world_says_nothing():
    kept = {"exitCode": 0, "message": '{"kept": "the world holds data"}'}
    new, conds = st.built_status(2, BUILT, dep(), None, [seed_pod(kept)])
    assert "seed" not in new and st.seed_events({}, {**new, "conditions": conds}) == []


def test_a_failed_seed_is_the_ready_reason_and_a_warning_once_per_message():
    # The step failed and waits to be retried: its end is in lastState.
    new, conds = st.built_status(2, BUILT, dep(ready=0), None,
                                 [seed_pod(None, FAILED)])
    ready = next(c for c in conds if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "SeedFailed"
    assert "encryption password" in ready["message"]
    new["conditions"] = conds
    [(kind, reason, msg)] = st.seed_events({}, new)
    assert (kind, reason) == ("Warning", "SeedFailed") and msg == ready["message"]
    assert st.seed_events(new, new) == []
    other = {**FAILED, "message": '{"error": "the store cannot be reached"}'}
    again, conds2 = st.built_status(2, BUILT, dep(ready=0), None, [seed_pod(other)])
    assert [e[1] for e in st.seed_events(new, {**again, "conditions": conds2})] == ["SeedFailed"]


def test_a_status_that_records_a_stop_or_a_start_is_not_held_back_with_its_phase():
    from peon.shared.status import records_a_decision
    running = {"uptime": {"running": True, "reason": "InSession", "sessionStart": "2026-12-07T14:14:10Z"}}
    stopped = {"uptime": {"running": False, "reason": "Idle", "sessionEnd": "2026-12-07T14:30:10Z",
                          "endReason": "Idle"}}
    assert records_a_decision(running, stopped)  # the idle stop: written at once (Stopping)
    assert records_a_decision(stopped, running)  # a start after it
    # The same decision, looked at again (a later nextChange, a new message): may wait.
    assert not records_a_decision(running, {"uptime": {**running["uptime"], "nextChange": "x"}})
    # A new server's first decision waits with its Pending phase (one status write, not two).
    assert not records_a_decision({}, running)
    assert not records_a_decision({"phase": "Pending"}, running)
