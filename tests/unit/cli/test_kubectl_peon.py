"""`kubectl peon`: the pure parts (ages, tables, rows, the status text, the command line) on
their own, and the commands through an in-memory API (fake_kube.FakeKube). Every verb writes a
GameServer's metadata only; nothing may write its spec."""
import copy
import datetime as dt
import io
import json
import pathlib
import tomllib

import pytest
import yaml

from fake_kube import FakeKube, api_error, selects
from fixtures import gameserver

from peon.cli import context, decisions, kubectl_peon as kp, main as cli_main, text as cli_text, views
from peon.cli.argv import normalize_argv
from peon.shared.actions import BadRequest
from peon.cli.main import build_parser
from peon.cli.peon import cmd_backup

ROOT = pathlib.Path(__file__).resolve().parents[3]
NOW = dt.datetime(2026, 11, 29, 18, 0, 0, tzinfo=dt.timezone.utc)


def ago(**delta) -> str:
    return (NOW - dt.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def server(name="vikings", ns="games", state=None, **status):
    gs = gameserver()
    gs["metadata"].update(name=name, namespace=ns, uid=f"uid-{name}", generation=3,
                          creationTimestamp=ago(days=3, hours=4))
    if state:
        gs["spec"]["state"] = state
    if status:
        gs["status"] = status
    return gs


RUNNING = dict(phase="Running", observedGeneration=3, endpoint="203.0.113.7:2456",
               endpoints=[{"name": "game", "address": "203.0.113.7", "port": 2456, "protocol": "UDP"},
                          {"name": "query", "address": "203.0.113.7", "port": 2457, "protocol": "UDP"}],
               players={"online": 3, "max": 10},
               uptime={"running": True, "reason": "InWindow",
                       "message": "inside the uptime window until 2026-11-30 02:00 CET",
                       "nextChange": "2026-11-30T01:00:00Z"},
               backup={"lastSuccessful": "vikings-nightly", "lastSuccessfulTime": ago(hours=14)},
               conditions=[{"type": "Valid", "status": "True", "reason": "Resolved",
                            "message": "the spec resolves"},
                           {"type": "Ready", "status": "True", "reason": "Running",
                            "message": "the server is running"},
                           {"type": "Updated", "status": "True", "reason": "UpToDate",
                            "message": "it runs the\nimage it should"}])


def backup_run(name, gs="vikings", ns="games", phase="Succeeded", done=None, created=None,
               size=None, reason="Scheduled"):
    b = {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServerBackup",
         "metadata": {"name": name, "namespace": ns, "creationTimestamp": created or done or ago(days=1),
                      "labels": {"peon.dev/gameserver": gs}},
         "spec": {"gameServer": gs, "reason": reason}, "status": {"phase": phase}}
    if done:
        b["status"]["completionTime"] = done
    if size is not None:
        b["status"]["size"] = size
    return b


def event(reason, message, when, type_="Normal", name="vikings", uid="uid-vikings", count=1,
          first=None):
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name}.{reason}.{when}", "namespace": "games"},
            "involvedObject": {"kind": "GameServer", "name": name, "namespace": "games", "uid": uid},
            "type": type_, "reason": reason, "message": message, "count": count,
            "firstTimestamp": first or when, "lastTimestamp": when}


# --- ages, sizes, tables ----------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"),
    (125, "2m5s"), (599, "9m59s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
    (3 * 3600 + 5 * 60, "3h5m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
    (50 * 3600, "2d2h"), (8 * 86400, "8d"), (400 * 86400, "400d"), (730 * 86400, "2y"),
    (735 * 86400, "2y5d"), (9 * 365 * 86400, "9y")])
def test_ages_read_as_kubectl_prints_them(seconds, text):
    assert cli_text.human_duration(dt.timedelta(seconds=seconds)) == text


def test_age_of_a_time_and_of_nothing():
    assert cli_text.age(ago(minutes=5), NOW) == "5m"
    assert cli_text.age(NOW - dt.timedelta(hours=26), NOW) == "26h"
    assert cli_text.age(None, NOW) == cli_text.age("garbage", NOW) == "<unknown>"
    assert cli_text.until(NOW + dt.timedelta(hours=5), NOW) == "2026-11-29T23:00:00Z (in 5h)"
    assert cli_text.until(NOW - dt.timedelta(minutes=3), NOW) == "2026-11-29T17:57:00Z (3m ago)"


@pytest.mark.parametrize("n, text", [(0, "0B"), (1023, "1023B"), (1536, "1.5KiB"),
                                     (734003200, "700.0MiB"), (5 * 2**40, "5.0TiB"),
                                     (None, "<none>"), (-1, "<none>"), (True, "<none>")])
def test_sizes(n, text):
    assert cli_text.human_size(n) == text


def test_a_table_is_aligned_as_kubectl_aligns_its_own():
    # The README's `kubectl get pgs` sample, printed by kubectl itself (PLAYERS empty there).
    out = cli_text.table(("NAME", "GAME", "STATE", "PHASE", "ENDPOINT", "PLAYERS", "WHY", "AGE"),
                   [("vikings", "valheim", "Running", "Running", "127.0.0.1:30178", "", "AlwaysOn",
                     "2s")])
    assert out == (
        "NAME      GAME      STATE     PHASE     ENDPOINT          PLAYERS   WHY        AGE\n"
        "vikings   valheim   Running   Running   127.0.0.1:30178   <none>    AlwaysOn   2s\n")
    assert all(not line.endswith(" ") for line in out.splitlines())
    assert cli_text.table(("A", "B"), [], indent="  ") == "  A         B\n"


# --- ls ---------------------------------------------------------------------------------------------

def test_an_ls_row_from_a_server_and_its_backups():
    runs = [backup_run("vikings-old", done=ago(days=2)),
            backup_run("vikings-nightly", done=ago(hours=14)),
            backup_run("vikings-broken", phase="Failed", done=ago(hours=1)),
            backup_run("vikings-now", phase="Running", created=ago(minutes=2))]
    row = views.ls_row(server(**RUNNING), runs, NOW)
    assert row == ["vikings", "valheim", "Running", "Running", "203.0.113.7:2456", "3/10",
                   "InWindow", "14h", "3d4h"]


def test_an_ls_row_of_a_new_stopped_server_says_none_where_nothing_is_known():
    gs = server(state="Stopped", phase="Stopped", uptime={"reason": "Stopped"},
                players={"online": 0})
    assert views.ls_row(gs, [], NOW) == ["vikings", "valheim", "Stopped", "Stopped", "<none>", "0",
                                      "Stopped", "<none>", "3d4h"]
    assert views.ls_row(server(), [], NOW)[2:8] == ["Running", "<none>", "<none>", "<none>",
                                                 "<none>", "<none>"]


def test_without_leave_to_list_backups_the_last_one_comes_from_status():
    assert views.ls_row(server(**RUNNING), None, NOW)[7] == "14h"
    assert views.ls_row(server(), None, NOW)[7] == "<none>"


def test_the_ls_table_sorts_and_groups_backups_by_server_and_namespace():
    servers = [server("vikings", **RUNNING), server("blocks", phase="Starting"),
               server("vikings", ns="other", phase="Stopped")]
    runs = [backup_run("vikings-nightly", done=ago(hours=14)),
            backup_run("other-vikings", ns="other", done=ago(minutes=30)),
            backup_run("blocks-1", gs="blocks", phase="Failed", done=ago(hours=1))]
    out = views.ls_table(servers, runs, NOW, all_namespaces=True)
    assert out.splitlines() == [
        "NAMESPACE   NAME      GAME      STATE     PHASE      ADDRESS            PLAYERS   WHY"
        "        LAST-BACKUP   AGE",
        "games       blocks    valheim   Running   Starting   <none>             <none>    <none>"
        "     <none>        3d4h",
        "games       vikings   valheim   Running   Running    203.0.113.7:2456   3/10      InWindow"
        "   14h           3d4h",
        "other       vikings   valheim   Running   Stopped    <none>             <none>    <none>"
        "     30m           3d4h"]


def test_the_backups_table():
    runs = [backup_run("b2", done=ago(hours=1), size=734003200, reason="Manual"),
            backup_run("b1", done=ago(days=2), size=1536),
            backup_run("b3", phase="Running", created=ago(seconds=30), reason="BeforeUpdate")]
    assert views.backups_table(runs, NOW).splitlines() == [
        "NAME      SERVER    REASON         PHASE       SIZE       AGE",
        "b1        vikings   Scheduled      Succeeded   1.5KiB     2d",
        "b2        vikings   Manual         Succeeded   700.0MiB   60m",
        "b3        vikings   BeforeUpdate   Running     <none>     30s"]


# --- status -------------------------------------------------------------------------------------

STATUS_SAMPLE = """\
Name:          vikings
Namespace:     games
Game:          valheim
State:         Running
Phase:         Running
Why:           InWindow: inside the uptime window until 2026-11-30 02:00 CET
Stops:         2026-11-30T01:00:00Z (in 7h)
Address:       203.0.113.7:2456
Endpoints:     game 203.0.113.7:2456/UDP
               query 203.0.113.7:2457/UDP
Players:       3/10
Last backup:   vikings-nightly (14h ago)
Age:           3d4h
Conditions:
  TYPE      STATUS    REASON     MESSAGE
  Valid     True      Resolved   the spec resolves
  Ready     True      Running    the server is running
  Updated   True      UpToDate   it runs the image it should
Events:
  TYPE      REASON         AGE                  MESSAGE
  Normal    Event3         49m                  event 3
  Normal    Event4         48m                  event 4
  Normal    Event5         47m                  event 5
  Normal    Event6         46m                  event 6
  Normal    Event7         45m                  event 7
  Normal    Event8         44m                  event 8
  Normal    Event9         43m                  event 9
  Normal    Event10        42m                  event 10
  Warning   BackupFailed   20m (x3 over 120m)   the Job failed: no space left on device
  Normal    AutoStart      5m                   inside the uptime window
"""


def sample_events():
    evs = [event(f"Event{i}", f"event {i}", ago(minutes=52 - i)) for i in range(11)]
    evs += [event("AutoStart", "inside the uptime window", ago(minutes=5)),
            event("BackupFailed", "the Job failed: no space left on device", ago(minutes=20),
                  type_="Warning", count=3, first=ago(hours=2)),
            event("Other", "someone else's", ago(minutes=1), name="blocks", uid="uid-blocks"),
            event("Gone", "an earlier vikings", ago(minutes=1), uid="uid-old")]
    return list(reversed(evs))


def test_status_says_why_where_who_conditions_and_the_last_ten_events_newest_last():
    assert views.status_text(server(**RUNNING), sample_events(), NOW) == STATUS_SAMPLE


def test_status_of_a_server_nothing_is_known_of_yet():
    out = views.status_text(server(), [], NOW)
    assert "Phase:         <none>\n" in out and "Why:           <none>\n" in out
    assert out.endswith("Conditions:    <none>\nEvents:        <none>\n")


def test_status_shows_a_stop_asked_for_and_a_status_behind_its_spec():
    gs = server(**{**RUNNING, "observedGeneration": 2})
    gs["metadata"]["annotations"] = {"peon.dev/sleep": "2026-11-29T23:00:00Z"}
    out = views.status_text(gs, [], NOW)
    assert "Stops:         2026-11-29T23:00:00Z (in 5h)\n" in out
    assert "Next change:   2026-11-30T01:00:00Z (in 7h)\n" in out
    assert "status is for generation 2; the spec is at 3" in out


def test_status_shows_the_offsite_loss_window_and_says_when_it_is_overdue():
    gs = server(**{**RUNNING, "backup": {"lastSuccessful": "vikings-nightly",
                                         "lastSuccessfulTime": "2026-11-29T04:00:00Z",
                                         "lastOffsite": "vikings-weekly",
                                         "lastOffsiteTime": "2026-11-26T18:00:00Z",
                                         "offsiteOverdue": True}})
    out = views.status_text(gs, [], NOW)
    assert "Off-site:      vikings-weekly (3d ago); OVERDUE: older than the schedule promised\n" in out
    gs["status"]["backup"] = {"offsiteOverdue": True}
    assert "Off-site:      none yet; OVERDUE: the schedule promised one\n" in views.status_text(gs, [], NOW)


def test_status_says_which_snapshot_a_world_was_seeded_from_and_how_old_it_was():
    gs = server(**{**RUNNING, "seed": {"snapshot": "4f1c2d3e5a6b7c8d", "snapshotTime": "2026-11-29T04:00:00Z",
                                       "seededAt": "2026-11-29T07:30:00Z"}})
    assert "Seeded:        from snapshot 4f1c2d3e, taken 3h30m before it was seeded\n" in \
        views.status_text(gs, [], NOW)



def test_status_says_a_server_was_moved_off_a_lost_node_and_what_it_left_behind():
    msg = ("rebuilt from snapshot 4f1c2d3e taken 12m before node real-node-0 was lost: play since "
           "then is not in this world")
    gs = server(**{**RUNNING, "recovery": {
        "claim": "vikings-world-r1", "fromClaim": "vikings-world", "lostNode": "real-node-0",
        "message": msg,
        "leftBehind": [{"claim": "vikings-world", "node": "real-node-0",
                        "since": "2026-11-29T04:00:00Z", "replacedBy": "vikings-world-r1"}]}})
    out = views.status_text(gs, [], NOW)
    assert f"Recovered:     {msg}\n" in out
    assert ("Left behind:   claim vikings-world on node real-node-0 (unused; replaced by "
            "vikings-world-r1): delete it when it is no longer wanted\n") in out
    assert "Recovered" not in views.status_text(server(**RUNNING), [], NOW)

# --- decisions ----------------------------------------------------------------------------------

def test_a_start_of_a_server_whose_spec_says_stopped_is_refused_with_the_reason():
    msg = decisions.start_refusal(server(state="Stopped"))
    assert "spec.state: Stopped, which wins" in msg and "will not run until its spec" in msg
    assert decisions.start_refusal(server()) is None and decisions.start_refusal(server(state="Running")) is None


def test_points_in_time_are_epochs_or_rfc3339_and_in_the_future():
    assert decisions.parse_when("1796000400", NOW) == dt.datetime.fromtimestamp(1796000400, dt.timezone.utc)
    assert decisions.parse_when("2026-11-29T23:00:00Z", NOW) == NOW + dt.timedelta(hours=5)
    for bad in ("tomorrow", "2026-11-29T17:00:00Z", "1000000000"):
        with pytest.raises(BadRequest):
            decisions.parse_when(bad, NOW)


def test_run_outcomes():
    assert decisions.run_outcome(backup_run("b")) == (True, True, "")
    failed = backup_run("b", phase="Failed")
    failed["status"]["message"] = "the Job failed:\n disk full"
    assert decisions.run_outcome(failed) == (True, False, "the Job failed: disk full")
    assert decisions.run_outcome(backup_run("b", phase="Running"))[0] is False
    assert decisions.run_outcome({"metadata": {"name": "b"}}) == (False, False, "")


# --- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["ls"], ["ls"]),
    (["-n", "games", "ls"], ["ls", "-n", "games"]),
    (["-ngames", "ls", "-o", "json"], ["ls", "-o", "json", "-ngames"]),
    (["--namespace=games", "-A", "backups"], ["backups", "--namespace=games", "-A"]),
    (["-n", "games"], ["-n", "games"]),
    (["--version"], ["--version"]),
    (["backup", "vikings", "--wait"], ["backup", "create", "vikings", "--wait"]),
    (["backup", "-n", "games", "vikings"], ["backup", "create", "-n", "games", "vikings"]),
    (["backup", "--timeout", "60", "vikings"], ["backup", "create", "--timeout", "60", "vikings"]),
    (["backup", "download", "b1", "-n", "games"], ["backup", "download", "b1", "-n", "games"]),
    (["backup", "-n", "games", "download", "b1"], ["backup", "-n", "games", "download", "b1"]),
    (["backup", "create", "download"], ["backup", "create", "download"]),
    (["backup", "-h"], ["backup", "-h"]),
    (["backup"], ["backup"]),
    (["-n", "games", "backup", "vikings"], ["backup", "create", "vikings", "-n", "games"]),
])
def test_kubectl_habits_on_the_command_line(argv, expected):
    assert normalize_argv(argv) == expected


def parse(*argv):
    return build_parser(kp.PROG).parse_args(normalize_argv(argv))


def test_backup_name_creates_one_and_backup_download_stays_a_download():
    a = parse("backup", "vikings", "--wait", "--timeout", "30")
    assert a.fn.__name__ == "cmd_backup_create" and (a.name, a.wait, a.timeout) == ("vikings", True, 30)
    d = parse("backup", "download", "b1", "-o", "x.tar.gz")
    assert d.fn is cmd_backup and (d.name, d.output) == ("b1", "x.tar.gz")
    assert parse("backup", "create", "download").name == "download"


def test_the_peon_command_has_the_same_commands(capsys):
    for cmd in ("ls", "start", "stop", "restart", "update", "wake", "backups", "restore", "logs", "status",
                "convert", "plan", "backup"):
        for prog in ("peon", kp.PROG):
            with pytest.raises(SystemExit) as e:
                build_parser(prog).parse_args([cmd, "-h"])
            assert e.value.code == 0
            assert capsys.readouterr().out.startswith(f"usage: {prog} {cmd} ")


def test_peon_also_runs_the_jobs_tools(capsys):
    """`peon archive` and `peon store` are the Jobs' tools (peon.jobs), under the same command."""
    from peon import commands
    for cmd in ("archive", "store"):
        with pytest.raises(SystemExit) as e:
            commands.main([cmd, "-h"])
        assert e.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: peon {cmd} ")
    with pytest.raises(SystemExit):
        commands.main(["-h"])
    assert "peon archive restore FILE DIR" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv", [
    ("start", "vikings", "--for", "5h", "--until", "1796000400"),
    ("stop", "vikings", "--in", "5m", "--at", "1796000400"),
    ("start",), ("ls", "-o", "table"), ("logs", "vikings", "--tail", "many"), ("nosuch",),
    ("restore", "vikings"), ("stop", "vikings", "-A")])
def test_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-peon"] == "peon.cli.main:kubectl_peon_main"


def test_its_api_handle_writes_as_kubectl_peon():
    from kubernetes.client import ApiClient, Configuration
    kube = context.make_kube(ApiClient(Configuration()))
    assert kube.field_manager == "kubectl-peon"
    assert kube.api.user_agent.startswith("kubectl-peon/")
    from peon.shared.kube import Kube
    operator = Kube(ApiClient(Configuration()))  # the operator's own stays as it was
    assert operator.field_manager == "peon-operator"


# --- the commands, through FakeKube -----------------------------------------------------------------

class Bed:
    def __init__(self):
        self.kube = FakeKube()
        self.out, self.err = io.StringIO(), io.StringIO()
        self.t = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = None
        self.logs: dict = {}

        def sleep(s):
            self.sleeps.append(s)
            self.t += s
            if self.on_sleep:
                self.on_sleep(len(self.sleeps))

        def pod_logs(ns, pod, container, follow, tail, previous):
            self.logs["asked"] = (ns, pod, container, follow, tail, previous)
            return iter(self.logs.get("chunks", []))

        self.ctx = context.Ctx(kube=self.kube, out=self.out, err=self.err, now=lambda: NOW,
                          sleep=sleep, monotonic=lambda: self.t,
                          default_namespace=lambda: "games", pod_logs=pod_logs)

    def put(self, obj):
        meta = obj["metadata"]
        self.kube.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = copy.deepcopy(obj)

    def obj(self, kind, name, ns="games"):
        return self.kube.objects.get((kind, ns, name))

    def run(self, *argv):
        self.out.seek(0), self.out.truncate(), self.err.seek(0), self.err.truncate()
        return cli_main.run(list(argv), self.ctx)


@pytest.fixture
def bed():
    b = Bed()
    b.put(server(**RUNNING))
    return b


def spec_and_generation(bed, name="vikings"):
    gs = bed.obj("GameServer", name)
    return copy.deepcopy(gs["spec"]), gs["metadata"]["generation"]


def test_ls_lists_the_servers_of_the_namespace(bed):
    bed.put(server("blocks", phase="Stopped", uptime={"reason": "OutsideWindow"}))
    bed.put(server("elsewhere", ns="other", phase="Running"))
    bed.put(backup_run("vikings-nightly", done=ago(hours=14)))
    assert bed.run("ls") == 0
    assert bed.out.getvalue() == (
        "NAME      GAME      STATE     PHASE     ADDRESS            PLAYERS   WHY             "
        "LAST-BACKUP   AGE\n"
        "blocks    valheim   Running   Stopped   <none>             <none>    OutsideWindow   "
        "<none>        3d4h\n"
        "vikings   valheim   Running   Running   203.0.113.7:2456   3/10      InWindow        "
        "14h           3d4h\n")
    assert bed.run("ls", "-A") == 0 and "other       elsewhere" in bed.out.getvalue()
    assert bed.run("ls", "-n", "empty") == 0
    assert bed.out.getvalue() == "" and bed.err.getvalue() == "No resources found in empty namespace.\n"
    assert bed.run("ls", "vikings", "nope") == 1
    assert "vikings" in bed.out.getvalue() and "blocks" not in bed.out.getvalue()
    assert bed.err.getvalue() == 'error: gameserver "nope" not found in namespace "games"\n'


def test_ls_as_json_yaml_and_names(bed):
    bed.kube.objects[("GameServer", "games", "vikings")]["metadata"]["managedFields"] = [{}]
    assert bed.run("ls", "-o", "json") == 0
    doc = json.loads(bed.out.getvalue())
    assert doc["kind"] == "List" and [i["metadata"]["name"] for i in doc["items"]] == ["vikings"]
    assert "managedFields" not in doc["items"][0]["metadata"]
    assert bed.run("ls", "-o", "yaml") == 0 and yaml.safe_load(bed.out.getvalue())["items"]
    assert bed.run("ls", "-o", "name") == 0 and bed.out.getvalue() == "gameserver.peon.dev/vikings\n"


def test_ls_without_leave_to_list_backups_still_lists(bed):
    def refuse(kind, namespace=None, selector=None, _list=bed.kube.list):
        if kind == "GameServerBackup":
            raise api_error(403, 'User "u" cannot list gameserverbackups')
        return _list(kind, namespace, selector)
    bed.kube.list = refuse
    assert bed.run("ls") == 0 and "14h" in bed.out.getvalue()


def test_start_for_a_while_asks_by_annotation_and_never_writes_spec(bed):
    before = spec_and_generation(bed)
    assert bed.run("start", "vikings", "--for", "5h") == 0
    assert bed.out.getvalue() == "gameserver/vikings start requested (until 2026-11-29T23:00:00Z)\n"
    ann = bed.obj("GameServer", "vikings")["metadata"]["annotations"]
    assert ann == {"peon.dev/wake": "2026-11-29T18:00:00Z", "peon.dev/sleep": "2026-11-29T23:00:00Z"}
    assert spec_and_generation(bed) == before
    assert [c for c in bed.kube.writes() if c[0] != "get"] == [("patch", "GameServer", "vikings")]


def test_start_until_a_time_and_wake_without_one(bed):
    assert bed.run("start", "vikings", "--until", "1796000400") == 0
    assert "(until 2026-11-30T01:00:00Z)" in bed.out.getvalue()
    assert bed.run("wake", "vikings") == 0
    assert bed.out.getvalue() == "gameserver/vikings wake requested\n"
    # A wake-up has no stop time of its own: the one asked before goes.
    assert bed.obj("GameServer", "vikings")["metadata"]["annotations"] == {
        "peon.dev/wake": "2026-11-29T18:00:00Z"}


def test_start_of_a_server_stopped_by_its_spec_says_why_and_writes_nothing(bed):
    bed.put(server("off", state="Stopped", phase="Stopped"))
    assert bed.run("start", "off") == 1
    err = bed.err.getvalue()
    assert err.startswith("error: gameserver/off has spec.state: Stopped, which wins")
    assert "never writes spec" in err
    assert not [c for c in bed.kube.writes() if c[0] != "get"]


def test_stop_now_and_later(bed):
    before = spec_and_generation(bed)
    assert bed.run("stop", "vikings") == 0
    assert bed.out.getvalue() == "gameserver/vikings stop requested (now)\n"
    assert bed.obj("GameServer", "vikings")["metadata"]["annotations"] == {
        "peon.dev/sleep": "2026-11-29T18:00:00Z"}
    assert bed.run("stop", "vikings", "--in", "20m") == 0
    assert bed.out.getvalue() == "gameserver/vikings stop requested (at 2026-11-29T18:20:00Z)\n"
    assert bed.run("stop", "vikings", "--at", "2026-11-29T22:00:00Z") == 0
    assert bed.obj("GameServer", "vikings")["metadata"]["annotations"]["peon.dev/sleep"] == \
        "2026-11-29T22:00:00Z"
    assert spec_and_generation(bed) == before


def test_a_stop_right_after_a_start_is_not_cancelled_by_it(bed):
    """In the same second: the stop takes the wake-up away, so nothing cancels it."""
    assert bed.run("start", "vikings") == 0 and bed.run("stop", "vikings") == 0
    ann = bed.obj("GameServer", "vikings")["metadata"]["annotations"]
    assert ann == {"peon.dev/sleep": "2026-11-29T18:00:00Z"}


def test_restart_sets_restarted_at(bed):
    before = spec_and_generation(bed)
    assert bed.run("restart", "vikings") == 0
    assert bed.out.getvalue() == "gameserver/vikings restart requested\n"
    assert bed.obj("GameServer", "vikings")["metadata"]["annotations"] == {
        "peon.dev/restartedAt": "2026-11-29T18:00:00Z"}
    assert spec_and_generation(bed) == before


def test_update_sets_the_update_annotation_and_never_the_spec(bed):
    before = spec_and_generation(bed)
    assert bed.run("update", "vikings") == 0
    assert bed.out.getvalue() == "gameserver/vikings update requested\n"
    assert bed.obj("GameServer", "vikings")["metadata"]["annotations"] == {
        "peon.dev/update": "2026-11-29T18:00:00Z"}
    assert spec_and_generation(bed) == before


@pytest.mark.parametrize("argv", [("start", "nope"), ("stop", "nope"), ("restart", "nope"),
                                  ("update", "nope"),
                                  ("wake", "nope"), ("backup", "nope"), ("status", "nope"),
                                  ("logs", "nope"), ("restore", "nope", "b1"), ("backups", "nope")])
def test_an_unknown_server_is_an_error_from_the_cluster(bed, argv):
    assert bed.run(*argv) == 1
    assert bed.err.getvalue() == 'error: gameserver "nope" not found in namespace "games"\n'
    assert bed.out.getvalue() == ""


@pytest.mark.parametrize("argv, says", [
    (("start", "vikings", "--for", "forever"), "error: interval: 'forever' is not a duration"),
    (("start", "vikings", "--for", "400d"), "at most 366 days"),
    (("stop", "vikings", "--at", "1000000000"), "is not in the future"),
    (("start", "vikings", "--until", "soon"), "neither ten digits")])
def test_a_bad_time_is_bad_usage(bed, argv, says):
    assert bed.run(*argv) == 2
    assert bed.err.getvalue().startswith("error: ") and says in bed.err.getvalue()
    assert not [c for c in bed.kube.writes() if c[0] != "get"]


def test_an_api_refusal_is_exit_1_with_its_message(bed):
    def refuse(*a):
        raise api_error(403, 'gameservers.peon.dev "vikings" is forbidden: User "u" cannot patch')
    bed.kube.merge_patch = refuse
    assert bed.run("restart", "vikings") == 1
    assert bed.err.getvalue() == ('error: gameservers.peon.dev "vikings" is forbidden: '
                                  'User "u" cannot patch\n')


def finish(bed, kind, phase, message=None, size=None, after=2):
    def on_sleep(n):
        if n == after:
            name = next(k[2] for k in bed.kube.objects if k[0] == kind)
            st = {"phase": phase}
            if message:
                st["message"] = message
            if size is not None:
                st["size"] = size
            bed.kube.objects[(kind, "games", name)]["status"] = st
    bed.on_sleep = on_sleep


def test_backup_creates_a_manual_backup_of_the_server(bed):
    assert bed.run("backup", "vikings") == 0
    (b,) = [o for k, o in bed.kube.objects.items() if k[0] == "GameServerBackup"]
    assert b["spec"] == {"gameServer": "vikings", "reason": "Manual"}
    assert b["metadata"]["name"].startswith("vikings-20261129-180000-")
    assert bed.out.getvalue() == f"gameserverbackup/{b['metadata']['name']} created\n"
    assert bed.sleeps == []


def test_backup_wait_until_it_succeeds(bed):
    finish(bed, "GameServerBackup", "Succeeded", size=1536)
    assert bed.run("backup", "vikings", "--wait") == 0
    lines = bed.out.getvalue().splitlines()
    assert lines[0].endswith(" created") and lines[1].endswith(" succeeded (1.5KiB)")
    assert bed.sleeps == [1.0, 1.0]


def test_backup_wait_for_one_that_fails_says_why(bed):
    finish(bed, "GameServerBackup", "Failed", message="the Job failed: no space left on device")
    assert bed.run("backup", "create", "vikings", "--wait") == 1
    assert bed.err.getvalue().endswith("failed: the Job failed: no space left on device\n")
    assert bed.err.getvalue().startswith("error: gameserverbackup/vikings-")


def test_backup_wait_gives_up_at_its_timeout(bed):
    assert bed.run("backup", "vikings", "--wait", "--timeout", "5") == 1
    assert "timed out after 5s waiting for gameserverbackup/vikings-" in bed.err.getvalue()
    assert "(phase: not started)" in bed.err.getvalue() and len(bed.sleeps) == 5


def test_backups_lists_them_by_server(bed):
    bed.put(backup_run("vikings-nightly", done=ago(hours=14), size=1536))
    bed.put(backup_run("blocks-1", gs="blocks", done=ago(hours=1)))
    bed.put(backup_run("far-1", ns="other", done=ago(hours=1)))
    assert bed.run("backups") == 0
    assert [l.split()[0] for l in bed.out.getvalue().splitlines()] == [  # oldest first
        "NAME", "vikings-nightly", "blocks-1"]
    assert bed.run("backups", "vikings") == 0
    assert [l.split()[0] for l in bed.out.getvalue().splitlines()] == ["NAME", "vikings-nightly"]
    assert bed.run("backups", "-A") == 0
    assert bed.out.getvalue().splitlines()[0].split() == ["NAMESPACE", "NAME", "SERVER", "REASON",
                                                          "PHASE", "SIZE", "AGE"]
    assert len(bed.out.getvalue().splitlines()) == 4
    assert bed.run("backups", "-o", "name", "vikings") == 0
    assert bed.out.getvalue() == "gameserverbackup.peon.dev/vikings-nightly\n"
    assert bed.run("backups", "-n", "empty") == 0 and "No backups found" in bed.err.getvalue()


def test_restore_creates_a_restore_and_waits_for_it(bed):
    bed.put(backup_run("vikings-nightly", done=ago(hours=14)))
    finish(bed, "GameServerRestore", "Succeeded", after=1)
    assert bed.run("restore", "vikings", "vikings-nightly", "--wait") == 0
    (r,) = [o for k, o in bed.kube.objects.items() if k[0] == "GameServerRestore"]
    assert r["spec"] == {"gameServer": "vikings", "backup": "vikings-nightly"}
    assert bed.out.getvalue().splitlines()[-1] == f"gameserverrestore/{r['metadata']['name']} succeeded"


def test_restore_needs_a_succeeded_backup(bed):
    assert bed.run("restore", "vikings", "nope") == 1
    assert bed.err.getvalue() == 'error: gameserverbackup "nope" not found in namespace "games"\n'
    bed.put(backup_run("half", phase="Running"))
    assert bed.run("restore", "vikings", "half") == 1
    assert "is Running: only a Succeeded backup can be restored" in bed.err.getvalue()
    bed.put(backup_run("blocks-1", gs="blocks", done=ago(hours=1)))
    assert bed.run("restore", "vikings", "blocks-1") == 1
    assert "is a backup of gameserver/blocks, not of gameserver/vikings" in bed.err.getvalue()
    assert not [k for k in bed.kube.objects if k[0] == "GameServerRestore"]


def test_logs_reads_the_server_container_of_the_servers_pod(bed):
    def pod(name, **labels):
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "games", "creationTimestamp": ago(hours=1),
                             "labels": {"peon.dev/gameserver": "vikings", **labels}},
                "status": {"phase": "Running"}}
    bed.put(pod("vikings-backup-x", **{"peon.dev/backup": "b1"}))
    bed.put(pod("vikings-5d8f-x2"))
    bed.put({**pod("blocks-1"), "metadata": {**pod("blocks-1")["metadata"],
                                             "labels": {"peon.dev/gameserver": "blocks"}}})
    bed.logs["chunks"] = [b"Game server started\n", "Wälder \n".encode()[:2],
                          "Wälder \n".encode()[2:], b"player joined\n"]
    assert bed.run("logs", "vikings", "-f", "--tail", "20") == 0
    assert bed.logs["asked"] == ("games", "vikings-5d8f-x2", "server", True, 20, False)
    assert bed.out.getvalue() == "Game server started\nWälder \nplayer joined\n"


def test_logs_of_a_server_without_a_pod(bed):
    bed.kube.objects[("GameServer", "games", "vikings")]["status"]["phase"] = "Stopped"
    assert bed.run("logs", "vikings") == 1
    assert bed.err.getvalue() == "error: gameserver/vikings has no pod (phase: Stopped)\n"


def test_status_prints_the_describe_view(bed):
    for e in sample_events():
        bed.kube.objects[("Event", "games", e["metadata"]["name"])] = e
    assert bed.run("status", "vikings") == 0
    assert bed.out.getvalue() == STATUS_SAMPLE
    assert bed.run("status", "vikings", "-o", "json") == 0
    assert json.loads(bed.out.getvalue())["status"]["phase"] == "Running"


def test_the_fake_api_selects_by_label():
    labels = {"peon.dev/gameserver": "vikings", "peon.dev/backup": "b1"}
    assert selects(None, labels) and selects("", labels)
    assert selects("peon.dev/gameserver=vikings", labels)
    assert selects("peon.dev/gameserver==vikings,peon.dev/backup", labels)
    assert not selects("peon.dev/gameserver=blocks", labels)
    assert not selects("!peon.dev/backup", labels) and selects("!peon.dev/restore", labels)
    assert selects("peon.dev/backup!=b2", labels) and not selects("job-name", labels)


def test_the_readme_shows_what_ls_prints():
    readme = (ROOT / "README.md").read_text()
    out = views.ls_table([server(**RUNNING)], [backup_run("vikings-nightly", done=ago(hours=14))], NOW)
    assert f"$ kubectl peon ls -n games\n{out}" in readme
