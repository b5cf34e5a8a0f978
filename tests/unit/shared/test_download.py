"""`peon backup download`'s decisions: which backups can be downloaded, the pod that holds
one, the command that streams it, and the checksum the download is held to."""
import pytest

from peon.shared import backup as bk
from peon.shared.download import DownloadError, downloadable, expected_sha256

LOCAL = {"phase": "Succeeded", "volume": "odin-backups", "archive": "/backups/b1.tar.gz",
         "sha256": "ab" * 32, "image": "peon.local/peon-operator:test"}
STORE = {"phase": "Succeeded", "store": "s3:http://10.89.0.1:8333/b/games/odin",
         "storeSecret": "store-keys", "snapshot": "5f3c9a1e", "image": "peon.local/peon-operator:test"}


def run(status):
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServerBackup",
            "metadata": {"name": "b1", "namespace": "games", "uid": "u-b1"},
            "spec": {"gameServer": "odin", "reason": "Manual"}, "status": dict(status)}


def test_a_local_archive_is_read_from_the_backup_volume_read_only():
    pod = bk.download_pod(run(LOCAL), "img:1", "b1-download-abc",
                          {"tolerations": [{"key": "k", "operator": "Exists"}]})
    spec = pod["spec"]
    assert pod["kind"] == "Pod" and pod["metadata"]["labels"][bk.LABEL_DOWNLOAD] == "b1"
    assert spec["volumes"] == [{"name": "backups", "persistentVolumeClaim": {"claimName": "odin-backups"}}]
    c = spec["containers"][0]
    assert c["volumeMounts"] == [{"name": "backups", "mountPath": bk.BACKUP_MOUNT, "readOnly": True}]
    assert c["command"] == ["sleep", str(bk.DOWNLOAD_SECONDS)] and "envFrom" not in c
    assert spec["activeDeadlineSeconds"] == bk.DOWNLOAD_SECONDS  # gone even if its client is
    assert spec["tolerations"] == [{"key": "k", "operator": "Exists"}]  # where the volume is
    assert bk.download_command(run(LOCAL)) == ["cat", "/backups/b1.tar.gz"]


def test_a_snapshot_is_exported_in_the_pod_with_the_store_secret_and_no_volume():
    pod = bk.download_pod(run(STORE), "img:1", "p")
    c = pod["spec"]["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": "store-keys"}}]
    assert {"name": "RESTIC_REPOSITORY", "value": STORE["store"]} in c["env"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["tmp"]
    cmd = bk.download_command(run(STORE))
    # The snapshot ID is an argument, never spliced into the shell text.
    assert cmd[:2] == ["sh", "-c"] and cmd[3] == "5f3c9a1e" and "5f3c9a1e" not in cmd[2]
    assert cmd[2].endswith(f"cat {bk.EXPORT_PATH}") and ">&2" in cmd[2]


@pytest.mark.parametrize("status,why", [
    ({"phase": "Failed", "message": "x"}, "backup b1 is Failed: only a Succeeded backup"),
    ({}, "backup b1 is not started"),
    ({"phase": "Succeeded"}, "records neither an archive nor a snapshot"),
])
def test_what_cannot_be_downloaded_says_why(status, why):
    with pytest.raises(DownloadError, match=why):
        downloadable(run(status), "b1")
    with pytest.raises(DownloadError, match="there is no GameServerBackup 'b9' here"):
        downloadable(None, "b9")


def test_the_download_is_held_to_the_recorded_or_the_exported_checksum():
    assert expected_sha256(run(LOCAL), "") == "ab" * 32
    printed = 'restic: restoring\n{"archive": "/tmp/export.tar.gz", "sha256": "' + "cd" * 32 + '"}\n'
    assert expected_sha256(run(STORE), printed) == "cd" * 32
    with pytest.raises(DownloadError, match="exporting the snapshot failed: Fatal: wrong password"):
        expected_sha256(run(STORE), "Fatal: wrong password")


class PodsRun(__import__("fake_kube").FakeKube):
    """The fake cluster, where a created pod runs at once and `cat` streams an archive."""

    def create(self, obj):
        made = super().create(obj)
        if obj["kind"] == "Pod":
            self.objects[("Pod", obj["metadata"]["namespace"], obj["metadata"]["name"])]["status"] = \
                {"phase": "Running"}
        return made

    def exec(self, namespace, pod, container, command, timeout, stdout=None):
        self.execs.append((pod, tuple(command)))
        stdout.write(b"the archive")
        return __import__("peon.shared.kube", fromlist=["ExecResult"]).ExecResult(0, "")


def test_the_download_pod_is_bounded_named_for_the_policy_and_gets_no_token(tmp_path):
    import hashlib
    import re
    from peon.shared import download
    kube = PodsRun()
    status = {**LOCAL, "sha256": hashlib.sha256(b"the archive").hexdigest(), "size": 5 << 30}
    kube.objects[("GameServerBackup", "games", "b1")] = run(status)
    kube.objects[("GameServer", "games", "odin")] = {
        "metadata": {"name": "odin"}, "spec": {"gameUid": "valheim", "storage": {"size": "8Gi"}}}
    created = []
    kube_create = kube.create
    kube.create = lambda obj: created.append(obj) or kube_create(obj)
    got = download.download(kube, "games", "b1", str(tmp_path / "b1.tar.gz"), None)
    assert got.size == len(b"the archive") and (tmp_path / "b1.tar.gz").read_bytes() == b"the archive"
    pod = next(o for o in created if o["kind"] == "Pod")
    assert re.fullmatch(r"b1-download-[0-9a-f]{6}", pod["metadata"]["name"])
    assert pod["spec"]["automountServiceAccountToken"] is False
    c = pod["spec"]["containers"][0]["securityContext"]
    assert c["capabilities"]["drop"] == ["ALL"] and not c["capabilities"].get("add")
    assert c["readOnlyRootFilesystem"] and not c["allowPrivilegeEscalation"]
    assert ("Pod", "games", pod["metadata"]["name"]) not in kube.objects  # deleted after
    # A long backup name still ends in -download- and six hex digits, within 63 characters.
    long = "x" * 80
    kube.objects[("GameServerBackup", "games", long)] = {**run(status), "metadata": {
        "name": long, "namespace": "games", "uid": "u"}}
    download.download(kube, "games", long, str(tmp_path / "l.tar.gz"), None)
    name = created[-1]["metadata"]["name"]
    assert len(name) <= 63 and re.search(r"-download-[0-9a-f]{6}$", name), name


def test_a_snapshot_downloads_scratch_space_is_bounded_by_the_world_and_the_archive():
    from peon.shared.download import scratch_bytes, with_scratch_limit
    gs = {"spec": {"storage": {"size": "8Gi"}}}
    assert scratch_bytes(run({**STORE, "size": 3 << 30}), gs) == (8 + 3 + 1) << 30
    assert scratch_bytes(run(STORE), gs) == (8 + 8 + 1) << 30  # no size recorded: the world's
    assert scratch_bytes(run(STORE), {}) == (20 + 20 + 1) << 30  # no server: the default volume
    pod = with_scratch_limit(bk.download_pod(run(STORE), "img:1", "p"), 12 << 30)
    assert pod["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": str(12 << 30)}}]
