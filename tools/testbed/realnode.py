"""Real nodes for the test bed: each a kubelet and a containerd of the bed's own, joined to the
control plane that `tools/cluster up` starts as `real-node-0`, `real-node-1`, ...; one kube-proxy
serves them all (they share the machine's network namespace, so one programs every Service).

Pods opt in with a toleration for the nodes' taint (and a nodeSelector or nodeName); every other
pod stays on the kwok nodes, since no registry is reachable to pull from. Images come from
`tools/images` (docker build, then an import into each node's containerd).

Network (the bed's rule: loopback and its own pods only):
  - one bridge of the bed's own (BRIDGE); node i owns 10.89.i.0/24, and its gateway 10.89.i.1,
    an address of the bridge, is the node's InternalIP, where its kubelet listens and the API
    server reaches it (never by resolving a name);
  - CNI bridge + portmap + loopback, no masquerading: a pod's only routes are its own subnet and
    the bed's pod range (POD_RANGE) through its node's gateway, so pods on different nodes reach
    each other through the machine and nothing off it; a filter FORWARD chain of the bed's own
    lets the bridge's traffic pass (Docker sets the FORWARD policy to DROP); host ports are
    reached at their node's address only;
  - pods get no resolver (kubelet resolvConf "");
  - kube-proxy in iptables mode, node ports only on the bed's pod range;
  - the bed's guard chain (add_guard, installed by tools/cluster whenever it runs as root)
    rejects any packet from this host to the kwok pods' range or to a Service IP that
    kube-proxy did not turn into a real pod's address.

Each node has its own folders (containerd root, state and socket; kubelet root; CNI IPAM), its
own cgroup root (a kubelet removes pod cgroups it does not know) and pod log folder (likewise).
Machine-wide state (root only; one bed's real nodes per machine): processes (by PID), mounts
under the nodes' folders, the bridge, iptables chains and cgroups. `RealNode.down` undoes one
node, `machine_down` what they share. `RealNode.power_cut` and `power_on` play a node losing its
power and getting it back. Standard library only, like tools/cluster.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

NODE = "real-node-0"  # the first real node: the one tests run their games on
TAINT_KEY = "testbed.peon.dev/real-node"
BRIDGE = "peonbr0"
POD_RANGE = "10.89.0.0/16"  # every real node's pods; node i has 10.89.i.0/24
SUBNET = "10.89.0.0/24"  # real-node-0's pods
NODE_IP = "10.89.0.1"  # real-node-0's address
MAX_NODES = 8
KWOK_POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
GUARD_CHAIN = "PEON-BED-GUARD"
FORWARD_CHAIN = "PEON-BED-FORWARD"
PAUSE_IMAGE = "peon.local/pause:1"
# A static TCP echo of the bed's own (tools/testbed/netcheck.c), imported into every node: the
# bed's own tests check the pod network with it, without Docker or any other image.
NETCHECK_IMAGE = "peon.local/netcheck:1"
# Fixed, short paths: containerd's socket must fit a unix socket path. real-node-0 has RUN and
# LIB themselves (as when the bed had one real node), real-node-i folders named after it inside
# them. The image store (<lib>/containerd) is kept across `down` as a cache of imported images.
RUN = Path("/run/peon-testbed")
LIB = Path("/var/lib/peon-testbed")
SOCKET = RUN / "containerd" / "containerd.sock"  # real-node-0's containerd
KUBELET_ROOT = LIB / "kubelet"
COMPONENTS = ["containerd", "kubelet"]  # each node's; kube-proxy is the machine's
CNI_BIN = Path("/usr/lib/cni")
NEEDED = {"containerd": "containerd", "runc": "runc", "ctr": "containerd", "iptables": "iptables",
          "conntrack": "conntrack", "ip": "iproute2"}


class Unavailable(Exception):
    """This machine cannot run the real node; the message says why."""


class StartFailed(Unavailable):
    """A component exited or never came up. On a machine that cannot run a kubelet this is
    how it shows, but one such failure can also be passing (a kubelet that exited while the
    last bed's mounts and cgroups were still going): `tools/cluster` tries once more before
    it calls the machine unable."""


def missing_prerequisites() -> list[str]:
    out = []
    if os.geteuid() != 0:
        out.append("must run as root (a kubelet changes mounts, cgroups, iptables)")
    for exe, pkg in NEEDED.items():
        if shutil.which(exe) is None:
            out.append(f"{exe} is not installed (Debian package {pkg})")
    if not (CNI_BIN / "bridge").exists():
        out.append(f"no CNI plugins in {CNI_BIN} (Debian package containernetworking-plugins)")
    if shutil.which("gcc") is None:
        out.append("gcc is needed to build the sandbox's pause program")
    return out


def sh(*cmd: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=check, capture_output=True, input=input)
    except FileNotFoundError:
        if check:
            raise Unavailable(f"{cmd[0]} is not installed")
        # Tear-down goes on without a missing tool: what it would undo was never done.
        return subprocess.CompletedProcess(cmd, 127, b"", f"{cmd[0]}: not found".encode())


# --- configuration files -------------------------------------------------------------------------

CONTAINERD_CONFIG = """version = 2
root = "{lib}/containerd"
state = "{run}/containerd"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # This machine withholds CAP_SYS_RESOURCE: no negative oom_score_adj.
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state per node, not in /run/containerd/runc shared by every containerd
        Root = "{run}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"""


def cni_conflist(node: "RealNode") -> dict:
    """The bridge carries every node's addresses, so the plugin must not manage the bridge's
    address (isGateway would refuse a second one): the bed adds each node's gateway itself."""
    return {"cniVersion": "0.4.0", "name": "peon-testbed", "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": False, "hairpinMode": True,
         "ipMasq": False,  # nothing a pod sends leaves the machine
         "ipam": {"type": "host-local", "dataDir": str(node.dir / "cni-ipam"),
                  "ranges": [[{"subnet": node.subnet, "gateway": node.ip}]],
                  # No default route: only the bed's pods, through this node's gateway.
                  "routes": [{"dst": POD_RANGE}]}},
        # A host port is this node's: reached at its address, not at every address of the
        # machine (the nodes share its network namespace).
        {"type": "portmap", "capabilities": {"portMappings": True},
         "conditionsV4": ["-d", f"{node.ip}/32"]},
        {"type": "loopback"}]}


def kubelet_config(node: "RealNode", pki: Path, healthz_port: int) -> dict:
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node.ip, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "tlsCertFile": str(pki / f"{node.cert('kubelet-serving')}.crt"),
        "tlsPrivateKeyFile": str(pki / f"{node.cert('kubelet-serving')}.key"),
        # Only the API server (a client cert from the bed's CA) may call the kubelet.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "oomScoreAdj": 0, "rotateCertificates": False, "serverTLSBootstrap": False,
        "resolvConf": "",  # pods get no resolver: nothing asks an outside DNS server
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        # The disk is shared with the rest of the machine; images cannot be pulled again.
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%",
                         "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "maxPods": 50, "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
    }
    if node.index:
        # A kubelet kills pod cgroups and removes pod log folders it does not know: each further
        # node keeps its own (real-node-0 keeps the kubelet's defaults, /kubepods and
        # /var/log/pods, as when the bed had one real node).
        cfg["cgroupRoot"] = f"/{node.cgroup_name}"
        cfg["podLogsDir"] = str(node.lib / "pod-logs")
    return cfg


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        # One kube-proxy for every real node (they share the machine's network namespace); it
        # calls itself real-node-0, which matters only to Services with a Local traffic policy.
        "hostnameOverride": NODE, "mode": "iptables", "clusterCIDR": POD_RANGE,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [POD_RANGE],
        # Leave the machine's sysctls alone (no conntrack sizing, no route_localnet).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }


# --- images --------------------------------------------------------------------------------------

def docker_archive(tag: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]) -> bytes:
    """A one-layer image in `docker save` form, which `ctr images import` reads."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for name, (data, mode) in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), mode
            t.addfile(ti, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]},
    }).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag],
                            "Layers": ["layer.tar"]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for name, data in (("layer.tar", layer_bytes), ("config.json", config),
                           ("manifest.json", manifest)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return out.getvalue()


def ctr(*args: str, input: bytes | None = None, check: bool = True,
        socket: Path = SOCKET) -> subprocess.CompletedProcess:
    return sh("ctr", "--address", str(socket), "--namespace", "k8s.io", *args, check=check,
              input=input)


def import_archive(data: bytes, socket: Path = SOCKET) -> None:
    ctr("images", "import", "--no-unpack", "-", input=data, socket=socket)


def image_present(ref: str, socket: Path = SOCKET) -> bool:
    refs = ctr("images", "ls", "-q", check=False, socket=socket).stdout.decode().split()
    return ref in refs or f"docker.io/{ref}" in refs


def static_program(repo: Path, cache: Path, name: str) -> bytes:
    """tools/testbed/<name>.c built static (once, cached), so its image is one file."""
    exe = cache / f"peon-{name}"
    src = repo / "tools" / "testbed" / f"{name}.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        sh("gcc", "-static", "-O2", "-s", "-o", str(exe), str(src))
    return exe.read_bytes()


def ensure_bed_images(repo: Path, cache: Path, socket: Path = SOCKET,
                      lib: Path = LIB) -> None:
    """The sandbox's pause image and the netcheck image, in one node's containerd; imported
    again when their program changed (the node's image store outlives `down`)."""
    record = lib / "bed-images.json"
    done = json.loads(record.read_text()) if record.exists() else {}
    for ref, name in ((PAUSE_IMAGE, "pause"), (NETCHECK_IMAGE, "netcheck")):
        program = static_program(repo, cache, name)
        digest = hashlib.sha256(program).hexdigest()
        if done.get(ref) != digest or not image_present(ref, socket):
            import_archive(docker_archive(ref, {name: (program, 0o755)}, [f"/{name}"]), socket)
            done[ref] = digest
            record.write_text(json.dumps(done, indent=1))


# --- network -------------------------------------------------------------------------------------

def make_bridge() -> None:
    """The bed's bridge, up, with forwarding between its subnets (pods of different nodes)."""
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    # What the CNI bridge plugin did for the first pod when it managed the gateway (isGateway).
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    add_forward()


def add_forward() -> None:
    """Accept what goes from the bridge to the bridge (pod to pod, on one node or between two):
    Docker Engine sets filter FORWARD's policy to DROP, and br_netfilter shows bridged frames to
    it. Nothing else: pods have no route off the machine."""
    sh("iptables", "-N", FORWARD_CHAIN, check=False)
    sh("iptables", "-F", FORWARD_CHAIN)
    sh("iptables", "-A", FORWARD_CHAIN, "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")
    if sh("iptables", "-C", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode != 0:
        sh("iptables", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)


def guard_present() -> bool:
    return sh("iptables", "-S", GUARD_CHAIN, check=False).returncode == 0


def add_guard() -> None:
    """Reject from this host what would leave it under a bed address: kwok pods' made-up IPs, and
    Service IPs that kube-proxy did not rewrite to a real pod (kube-proxy's DNAT runs in nat
    OUTPUT, before filter OUTPUT, so real Services are already rewritten here). Without a real
    node there is no kube-proxy, and every Service IP is rejected."""
    sh("iptables", "-N", GUARD_CHAIN, check=False)
    sh("iptables", "-F", GUARD_CHAIN)
    for cidr in (KWOK_POD_CIDR, SERVICE_CIDR):
        sh("iptables", "-A", GUARD_CHAIN, "-d", cidr, "-j", "REJECT")
    if sh("iptables", "-C", "OUTPUT", "-j", GUARD_CHAIN, check=False).returncode != 0:
        sh("iptables", "-I", "OUTPUT", "1", "-j", GUARD_CHAIN)


def remove_guard() -> None:
    remove_chains("filter", (GUARD_CHAIN,))


def remove_chains(table: str, prefixes: tuple[str, ...], tool: str = "iptables") -> None:
    """Delete every rule that jumps to a chain with one of these prefixes, then the chains."""
    rules = sh(tool, "-t", table, "-S", check=False).stdout.decode().splitlines()
    chains = [r.split()[1] for r in rules if r.startswith("-N ") and r.split()[1].startswith(prefixes)]
    for r in rules:
        parts = r.split()
        if parts and parts[0] == "-A" and "-j" in parts and parts[parts.index("-j") + 1] in chains:
            # -S quotes comments; iptables wants them as one argument again.
            sh(tool, "-t", table, "-D", *shlex.split(r)[1:], check=False)
    for c in chains:
        sh(tool, "-t", table, "-F", c, check=False)
    for c in chains:
        sh(tool, "-t", table, "-X", c, check=False)


# --- processes -----------------------------------------------------------------------------------

def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (ProcessLookupError, OSError):
        return False


def stop_pid(pid: int, timeout: float = 15) -> None:
    if not alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def kill_now(pids) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def shim_pids(socket: Path = SOCKET) -> list[int]:
    """containerd's shims outlive it; a node's name its socket on their command line."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and b"containerd-shim" in cmd[0] and str(socket).encode() in cmd:
                out.append(int(p.name))
    return out


def descendants(roots: list[int]) -> set[int]:
    """Every process below these (containers' processes live under their shims)."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = set(), list(roots)
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def unmount_under(*roots: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    targets = [m for m in mounts if any(m == str(r) or m.startswith(str(r) + "/") for r in roots)]
    for m in sorted(targets, key=len, reverse=True):  # deepest first
        sh("umount", "-l", m, check=False)


def cgroup_mounts() -> list[Path]:
    """Where the machine's cgroup hierarchies are mounted (v1 controllers, or v2's one)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] and right.split()[0] in ("cgroup", "cgroup2"):
            out.append(Path(left.split()[4]))
    return out


def remove_cgroup_tree(top: Path) -> None:
    if not top.is_dir():
        return
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                    reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        top.rmdir()
    except OSError:
        pass


def remove_cgroups() -> None:
    """real-node-0's pod cgroups (the kubelet's default /kubepods), wherever they are mounted."""
    base = Path("/sys/fs/cgroup")
    for top in [base / "kubepods", *(c / "kubepods" for c in base.iterdir() if c.is_dir())]:
        remove_cgroup_tree(top)


def procs_under(tops: list[Path]) -> set[int]:
    out = set()
    for top in tops:
        if top.is_dir():
            for f in top.rglob("cgroup.procs"):
                try:
                    out.update(int(x) for x in f.read_text().split())
                except (OSError, ValueError):
                    pass
    return out


def netns_of_ours(socket: Path = SOCKET) -> list[str]:
    """The network namespaces of a containerd's pod sandboxes (from each container's spec)."""
    out = []
    for cid in ctr("containers", "ls", "-q", check=False, socket=socket).stdout.decode().split():
        info = ctr("containers", "info", cid, check=False, socket=socket).stdout.decode()
        try:
            spec = json.loads(info).get("Spec") or {}
        except ValueError:
            continue
        for ns in (spec.get("linux") or {}).get("namespaces") or []:
            if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/"):
                out.append(ns["path"])
    return sorted(set(out))


def kill_tasks(socket: Path = SOCKET) -> None:
    """SIGKILL every container a containerd still runs, then delete tasks and containers."""
    tasks = ctr("tasks", "ls", "-q", check=False, socket=socket).stdout.decode().split()
    for t in tasks:
        ctr("tasks", "kill", "--signal", "SIGKILL", t, check=False, socket=socket)
    deadline = time.monotonic() + 10
    for t in tasks:
        while time.monotonic() < deadline and \
                ctr("tasks", "delete", t, check=False, socket=socket).returncode != 0:
            time.sleep(0.2)
    for cid in ctr("containers", "ls", "-q", check=False, socket=socket).stdout.decode().split():
        ctr("containers", "delete", cid, check=False, socket=socket)


def forget_netns(paths: list[str]) -> None:
    for ns in paths:
        sh("umount", ns, check=False)
        Path(ns).unlink(missing_ok=True)


# --- the machine's share: owner, kube-proxy, bridge, chains ----------------------------------------

def owner() -> str | None:
    """The state folder of the bed that runs this machine's real nodes, if one still runs."""
    f = RUN / "owner"
    if not f.exists():
        return None
    state = Path(f.read_text())
    for pid in (state / "pids").glob("containerd*") if (state / "pids").is_dir() else []:
        try:
            if alive(int(pid.read_text())):
                return str(state)
        except ValueError:
            pass
    # A bed whose nodes are all cut off from power still owns them.
    return str(state) if any(state.glob("realnode*/power-cut")) else None


def node_indices(state: Path) -> list[int]:
    """The real nodes a bed's state folder knows of (running, cut off, or half made)."""
    out = set()
    if (state / "realnode").exists():
        out.add(0)
    for d in state.glob("realnode-*"):
        if d.name.removeprefix("realnode-").isdigit():
            out.add(int(d.name.removeprefix("realnode-")))
    pids = state / "pids"
    for c in COMPONENTS:
        if (pids / c).exists():
            out.add(0)
        for f in pids.glob(f"{c}-real-node-*") if pids.is_dir() else []:
            if f.name.rsplit("-", 1)[1].isdigit():
                out.add(int(f.name.rsplit("-", 1)[1]))
    return sorted(out)


def node_sockets() -> list[tuple[str, Path, Path]]:
    """(name, containerd socket, lib folder) of every real node whose containerd is up on this
    machine (tools/images imports into each)."""
    out = []
    for i in range(MAX_NODES):
        run, lib = (RUN, LIB) if i == 0 else (RUN / f"real-node-{i}", LIB / f"real-node-{i}")
        sock = run / "containerd" / "containerd.sock"
        if sock.exists():
            out.append((f"real-node-{i}", sock, lib))
    return out


class KubeProxy:
    """The machine's one kube-proxy: the real nodes share its network namespace."""

    def __init__(self, state: Path, binpath: Path):
        self.state, self.bin = state, binpath
        self.dir = state / "kube-proxy"

    def pid(self) -> int | None:
        f = self.state / "pids" / "kube-proxy"
        return int(f.read_text()) if f.exists() else None

    def running(self) -> bool:
        return bool((p := self.pid()) and alive(p))

    def up(self, sign, write_kubeconfig, free_port) -> None:
        if self.running():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        sign("kube-proxy", "/CN=system:kube-proxy", "extendedKeyUsage=clientAuth\n")
        write_kubeconfig(self.dir / "kube-proxy.kubeconfig", "kube-proxy")
        (self.dir / "kube-proxy.yaml").write_text(json.dumps(
            kube_proxy_config(self.dir / "kube-proxy.kubeconfig", free_port(), free_port()),
            indent=1))
        logf = open(self.state / "logs" / "kube-proxy.log", "ab")
        p = subprocess.Popen([str(self.bin / "kube-proxy"), f"--config={self.dir / 'kube-proxy.yaml'}"],
                             stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=self.state)
        (self.state / "pids" / "kube-proxy").write_text(str(p.pid))
        deadline = time.monotonic() + 60
        while "KUBE-SERVICES" not in sh("iptables", "-t", "nat", "-S", "OUTPUT").stdout.decode():
            if not alive(p.pid):
                tail = (self.state / "logs" / "kube-proxy.log").read_text(errors="replace")[-3000:]
                raise StartFailed(f"kube-proxy: the process exited\n{tail}")
            if time.monotonic() > deadline:
                raise StartFailed("timed out after 60s waiting for kube-proxy's rules")
            time.sleep(0.2)

    def stop(self) -> None:
        if (p := self.pid()):
            stop_pid(p)
        (self.state / "pids" / "kube-proxy").unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def machine_down(state: Path, binpath: Path, force: bool = False) -> None:
    """Undo what the real nodes share, once none is left (or, with force, whatever is left of
    them: the bed goes): kube-proxy and its rules, the bridge, the chains (all KUBE-* and CNI-*:
    one bed's real nodes per machine), the folders."""
    other = owner()
    if other and other != str(state):
        return  # another bed's nodes: never touch what they share with this one
    if node_indices(state) and not force:
        raise RuntimeError(f"real nodes {node_indices(state)} are still there")
    KubeProxy(state, binpath).stop()
    sh(str(binpath / "kube-proxy"), "--cleanup", check=False)
    # What kube-proxy's cleanup leaves: the kubelets' own chains (KUBE-FIREWALL, canaries),
    # and the CNI portmap chains, in both address families.
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool):
            for table in ("filter", "nat", "mangle"):
                remove_chains(table, ("KUBE-", "CNI-"), tool)
    if shutil.which("iptables"):
        remove_chains("filter", (FORWARD_CHAIN,))
    sh("ip", "link", "del", BRIDGE, check=False)
    remove_cgroups()
    shutil.rmtree(RUN, ignore_errors=True)


# --- one real node ---------------------------------------------------------------------------------

class RealNode:
    """Real node `index`: its processes and files, kept in the bed's state folder (pids/, logs/,
    realnode/ for real-node-0, realnode-<i>/ for the others)."""

    def __init__(self, state: Path, binpath: Path, cache: Path, repo: Path, index: int = 0):
        if not 0 <= index < MAX_NODES:
            raise ValueError(f"a real node's index is 0..{MAX_NODES - 1}, not {index}")
        self.state, self.bin, self.cache, self.repo, self.index = state, binpath, cache, repo, index
        self.name = f"real-node-{index}"
        self.ip, self.subnet = f"10.89.{index}.1", f"10.89.{index}.0/24"
        if index == 0:  # the paths the bed's one real node always had
            self.dir, self.run, self.lib, self.suffix = state / "realnode", RUN, LIB, ""
        else:
            self.dir, self.suffix = state / f"realnode-{index}", f"-{self.name}"
            self.run, self.lib = RUN / self.name, LIB / self.name
        self.socket = self.run / "containerd" / "containerd.sock"
        self.kubelet_root = self.lib / "kubelet"
        self.cgroup_name = "kubepods" if index == 0 else f"peon-{self.name}"

    @classmethod
    def of_bed(cls, state: Path, repo: Path, index: int = 0) -> "RealNode":
        """A running bed's node, from its state folder (for tests: power_cut, power_on)."""
        binpath = Path(json.loads((state / "cluster.json").read_text())["bin"])
        return cls(state, binpath, binpath.parent, repo, index)

    def cert(self, base: str) -> str:
        return base + self.suffix

    def pid(self, name: str) -> int | None:
        f = self.state / "pids" / (name + self.suffix)
        return int(f.read_text()) if f.exists() else None

    def running(self) -> bool:
        return all((p := self.pid(c)) and alive(p) for c in COMPONENTS)

    def present(self) -> bool:
        return any(self.pid(c) for c in COMPONENTS) or self.dir.exists()

    def cut(self) -> bool:
        """Cut off from power by power_cut (and not powered on since)."""
        return (self.dir / "power-cut").exists()

    def _start(self, name: str, argv: list[str]) -> int:
        logf = open(self.state / "logs" / f"{name}{self.suffix}.log", "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=self.state)
        (self.state / "pids" / (name + self.suffix)).write_text(str(p.pid))
        return p.pid

    def _wait(self, what: str, check, timeout: float, pid: int | None = None, log: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception:
                pass
            if pid is not None and not alive(pid):
                f = self.state / "logs" / f"{log}{self.suffix}.log"
                raise StartFailed(f"{what}: the process exited\n"
                                  f"{f.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        raise StartFailed(f"timed out after {timeout:.0f}s waiting for {what}; logs in "
                          f"{self.state / 'logs'}")

    def owner(self) -> str | None:
        return owner()

    # --- cgroups: real-node-0 has the kubelet's default /kubepods, node i /peon-real-node-i ---

    def cgroup_tops(self) -> list[Path]:
        return [m / self.cgroup_name for m in cgroup_mounts()]

    def _make_cgroup_root(self) -> None:
        """A kubelet refuses a cgroupRoot that does not exist; made in every hierarchy, with
        v1 cpuset's cpus and mems from the parent (empty ones take no process)."""
        if not self.index:
            return
        for top in self.cgroup_tops():
            top.mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (top / f).exists() and not (top / f).read_text().strip():
                    (top / f).write_text((top.parent / f).read_text())

    # --- up, down -----------------------------------------------------------------------------

    def up(self, sign, write_kubeconfig, kubectl, free_port) -> None:
        """sign(name, subject, ext), write_kubeconfig(path, user), kubectl(*args, input=) and
        free_port() are the bed's own helpers. The machine's kube-proxy is KubeProxy's."""
        other = owner()
        if other and other != str(self.state):
            # One bed's real nodes per machine: folders, bridge and chains are shared.
            raise Unavailable(f"the bed at {other} runs this machine's real nodes")
        problems = missing_prerequisites()
        problems += [f"{b} is not in {self.bin} (run tools/testbed/build)"
                     for b in ("kubelet", "kube-proxy") if not (self.bin / b).exists()]
        if problems:
            raise Unavailable("; ".join(problems))
        t0 = time.monotonic()
        d, pki = self.dir, self.state / "pki"
        for sub in ("cni", "kubelet-certs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for p in (RUN, LIB, self.run, self.lib):
            p.mkdir(parents=True, exist_ok=True)
        (RUN / "owner").write_text(str(self.state))
        sign(self.cert("node"), f"/O=system:nodes/CN=system:node:{self.name}",
             "extendedKeyUsage=clientAuth\n")
        sign(self.cert("kubelet-serving"), f"/CN={self.name}",
             f"subjectAltName=IP:{self.ip}\nextendedKeyUsage=serverAuth\n")
        write_kubeconfig(d / "kubelet.kubeconfig", self.cert("node"))

        make_bridge()
        sh("ip", "addr", "replace", f"{self.ip}/24", "dev", BRIDGE)
        (d / "cni" / "10-peon-testbed.conflist").write_text(json.dumps(cni_conflist(self), indent=1))
        (d / "containerd.toml").write_text(CONTAINERD_CONFIG.format(
            lib=self.lib, run=self.run, socket=self.socket, pause=PAUSE_IMAGE, cni_bin=CNI_BIN,
            cni_conf=d / "cni"))
        (d / "kubelet.yaml").write_text(json.dumps(kubelet_config(self, pki, free_port()), indent=1))
        self._boot(kubectl)
        (d / "up.json").write_text(json.dumps({"seconds": round(time.monotonic() - t0, 1)}))

    def _boot(self, kubectl, since: float | None = None) -> None:
        """Start containerd and the kubelet from the files `up` wrote; wait for a Ready node,
        and with `since` (a power-on: the Node keeps its old conditions), for a lease this
        kubelet renewed after that instant."""
        d = self.dir
        self._make_cgroup_root()
        pid = self._start("containerd", ["containerd", "--config", str(d / "containerd.toml")])
        self._wait(f"{self.name}'s containerd",
                   lambda: ctr("version", socket=self.socket).returncode == 0, 30, pid, "containerd")
        ensure_bed_images(self.repo, self.cache, self.socket, self.lib)
        pid = self._start("kubelet", [
            str(self.bin / "kubelet"), f"--config={d / 'kubelet.yaml'}",
            f"--kubeconfig={d / 'kubelet.kubeconfig'}", f"--root-dir={self.kubelet_root}",
            f"--cert-dir={d / 'kubelet-certs'}", f"--hostname-override={self.name}",
            f"--node-ip={self.ip}", "--node-labels=testbed.peon.dev/node=real", "-v=1"])

        def node_ready() -> bool:
            n = json.loads(kubectl("get", "node", self.name, "-o", "json"))
            if not any(c["type"] == "Ready" and c["status"] == "True"
                       for c in n.get("status", {}).get("conditions") or []):
                return False
            if since is None:
                return True
            lease = json.loads(kubectl("-n", "kube-node-lease", "get", "lease", self.name,
                                       "-o", "json"))
            return api_time(lease["spec"].get("renewTime")) > since
        self._wait(f"node {self.name} Ready", node_ready, 90, pid, "kubelet")

    def down(self, kubectl) -> None:
        """Undo everything `up` did for this node (what the nodes share is machine_down's).
        kubectl may fail (the API server already gone)."""
        other = owner()
        if other and other != str(self.state):
            return  # another bed's node: never touch what it shares with this one
        if self.running():
            # Pods go while the kubelet runs: it unmounts their volumes and runs CNI DEL.
            try:
                kubectl("cordon", self.name)
                kubectl("delete", "pods", "--all-namespaces", "--wait=true", "--timeout=40s",
                        f"--field-selector=spec.nodeName={self.name}", "--grace-period=5")
            except Exception:
                pass
        try:  # a node left cordoned would keep every later real-node pod Pending
            kubectl("delete", "node", self.name, "--ignore-not-found", "--wait=false")
        except Exception:
            pass
        if (p := self.pid("kubelet")):
            stop_pid(p)
        if (p := self.pid("containerd")) and alive(p):
            netns = netns_of_ours(self.socket)
            kill_tasks(self.socket)
            stop_pid(p)
        else:
            netns = []
        for s in shim_pids(self.socket):
            stop_pid(s, 5)
        kill_now(self._container_procs())  # none, unless something escaped its task
        forget_netns(netns + self._saved_netns())
        self._forget_volatile()
        sh("ip", "addr", "del", f"{self.ip}/24", "dev", BRIDGE, check=False)
        shutil.rmtree(self.kubelet_root, ignore_errors=True)
        if self.index:
            shutil.rmtree(self.run, ignore_errors=True)
            shutil.rmtree(self.lib / "pod-logs", ignore_errors=True)
        for c in COMPONENTS:
            (self.state / "pids" / (c + self.suffix)).unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _forget_volatile(self) -> None:
        """What a power loss takes: mounts (volumes, root filesystems, shm), containerd's and
        runc's state, the pod cgroups. Disk stays: images, the kubelet's folders, IPAM."""
        unmount_under(self.kubelet_root, self.run / "containerd",
                      self.lib / "containerd" / "io.containerd.grpc.v1.cri")
        shutil.rmtree(self.run / "containerd", ignore_errors=True)
        shutil.rmtree(self.run / "runc", ignore_errors=True)
        for top in self.cgroup_tops():
            remove_cgroup_tree(top)

    def _container_procs(self) -> set[int]:
        """This node's containers' processes: everything below its shims (subreapers), and for
        a node with a cgroup root of its own, everything in it. Never /kubepods as a whole:
        another kubelet on the machine may use it."""
        out = descendants(shim_pids(self.socket))
        if self.index:
            out |= procs_under(self.cgroup_tops())
        return {p for p in out if alive(p)}  # a killed one stays a zombie until reaped

    def _saved_netns(self) -> list[str]:
        f = self.dir / "power-cut"
        return json.loads(f.read_text()).get("netns", []) if f.exists() else []

    # --- a power cut, and the power back -------------------------------------------------------

    def power_cut(self) -> None:
        """As if the node lost its power: its kubelet and containerd are SIGKILLed (the node's
        lease and status stop; nothing is cordoned, drained or told), every process of its
        containers too, and what lives in memory goes (mounts, containerd's and runc's state,
        network namespaces and so the pods' interfaces, cgroups). Its disk stays. kube-proxy,
        the machine's, keeps serving the other nodes. The API server learns of it only through
        the controller-manager's node monitor."""
        if not self.running():
            raise RuntimeError(f"{self.name} is not running")
        # Bookkeeping for the clean-up, read before the cut: which namespaces are this node's.
        netns = netns_of_ours(self.socket)
        kill_now([p for c in COMPONENTS if (p := self.pid(c))])
        # The containers' processes first, while their shims (subreapers) still hold them all.
        deadline = time.monotonic() + 15
        while (victims := self._container_procs()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: processes {sorted(victims)} outlived the cut")
            kill_now(victims)
            time.sleep(0.05)
        kill_now(shim_pids(self.socket))
        for name in COMPONENTS:
            deadline = time.monotonic() + 10
            while (p := self.pid(name)) and alive(p) and time.monotonic() < deadline:
                time.sleep(0.05)
        forget_netns(netns)
        self._forget_volatile()
        (self.dir / "power-cut").write_text(json.dumps({"at": time.time(), "netns": netns}))

    def power_on(self, kubectl) -> float:
        """Boot a cut-off node again: containerd and the kubelet from the same files, which find
        their pods as a rebooted node does (new sandboxes, containers restarted). Returns the
        seconds to a Ready node that this kubelet reported."""
        if self.running():
            raise RuntimeError(f"{self.name} is running")
        if not self.cut():
            raise RuntimeError(f"{self.name} was not cut off by power_cut")
        t0 = time.monotonic()
        self._boot(kubectl, since=time.time())
        (self.dir / "power-cut").unlink()
        return time.monotonic() - t0

    def status_lines(self) -> list[str]:
        lines = []
        for c in COMPONENTS:
            p = self.pid(c)
            state = "running" if p and alive(p) else ("CUT OFF" if self.cut() else "STOPPED")
            lines.append(f"{c + self.suffix:24} {state:8} pid {p}")
        lines.append(f"real node  {self.name} at {self.ip} (pods {self.subnet}, bridge {BRIDGE}, "
                     f"taint {TAINT_KEY})")
        return lines


def api_time(ts: str | None) -> float:
    """An API timestamp (2026-01-02T03:04:05Z, or a lease's MicroTime with .123456) as Unix
    time; 0 when absent."""
    if not ts:
        return 0.0
    import datetime as dt
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in ts else "%Y-%m-%dT%H:%M:%SZ"
    return dt.datetime.strptime(ts, fmt).replace(tzinfo=dt.timezone.utc).timestamp()
