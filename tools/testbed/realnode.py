"""A real node for the test bed: kubelet, kube-proxy and a containerd of the bed's own, joined
to the control plane that `tools/cluster up` starts, as `real-node-0`.

Pods opt in with a toleration for the node's taint (and a nodeSelector for its name); every
other pod stays on the kwok nodes, since no registry is reachable to pull from. Images come from
`tools/testbed/images` (docker build, then an import into this containerd).

Network (the bed's rule: loopback and its own pods only):
  - a bridge of the bed's own (BRIDGE, SUBNET); its gateway address is the node's InternalIP,
    where the kubelet listens and the API server reaches it (never by resolving a name);
  - CNI bridge + portmap + loopback, no masquerading: pods reach nothing off the machine;
  - pods get no resolver (kubelet resolvConf "");
  - kube-proxy in iptables mode, node ports only on the bridge's subnet;
  - the bed's guard chain (add_guard, installed by tools/cluster whenever it runs as root)
    rejects any packet from this host to the kwok pods' range or to a Service IP that
    kube-proxy did not turn into a real pod's address.

Machine-wide state (root only; one real node per machine): processes (by PID), mounts under the
node's folders, the bridge, iptables chains and the kubepods cgroups. `stop` undoes all of it.
Standard library only, like tools/cluster.
"""
from __future__ import annotations

import base64
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

NODE = "real-node-0"
TAINT_KEY = "testbed.peon.dev/real-node"
BRIDGE = "peonbr0"
SUBNET = "10.89.0.0/24"
NODE_IP = "10.89.0.1"
KWOK_POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
GUARD_CHAIN = "PEON-BED-GUARD"
PAUSE_IMAGE = "peon.local/pause:1"
# Fixed, short paths: containerd's socket must fit a unix socket path, and there is one real node
# per machine. The image store (LIB/containerd) is kept across `down` as a cache of imported images.
RUN = Path("/run/peon-testbed")
LIB = Path("/var/lib/peon-testbed")
SOCKET = RUN / "containerd" / "containerd.sock"
KUBELET_ROOT = LIB / "kubelet"
COMPONENTS = ["containerd", "kubelet", "kube-proxy"]
CNI_BIN = Path("/usr/lib/cni")
NEEDED = {"containerd": "containerd", "runc": "runc", "ctr": "containerd", "iptables": "iptables",
          "conntrack": "conntrack", "ip": "iproute2"}


class Unavailable(Exception):
    """This machine cannot run the real node; the message says why."""


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
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"""


def cni_conflist(state: Path) -> dict:
    return {"cniVersion": "0.4.0", "name": "peon-testbed", "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "hairpinMode": True,
         "ipMasq": False,  # nothing a pod sends leaves the machine
         "ipam": {"type": "host-local", "dataDir": str(state / "cni-ipam"),
                  "ranges": [[{"subnet": SUBNET, "gateway": NODE_IP}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "loopback"}]}


def kubelet_config(pki: Path, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        # Only the API server (a client cert from the bed's CA) may call the kubelet.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{SOCKET}",
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


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE, "mode": "iptables", "clusterCIDR": SUBNET,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [SUBNET],
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


def ctr(*args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ctr", "--address", str(SOCKET), "--namespace", "k8s.io", *args, check=check,
              input=input)


def import_archive(data: bytes) -> None:
    ctr("images", "import", "--no-unpack", "-", input=data)


def image_present(ref: str) -> bool:
    refs = ctr("images", "ls", "-q", check=False).stdout.decode().split()
    return ref in refs or f"docker.io/{ref}" in refs


def ensure_pause(repo: Path, cache: Path) -> None:
    if image_present(PAUSE_IMAGE):
        return
    exe = cache / "peon-pause"
    src = repo / "tools" / "testbed" / "pause.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        sh("gcc", "-static", "-O2", "-s", "-o", str(exe), str(src))
    import_archive(docker_archive(PAUSE_IMAGE, {"pause": (exe.read_bytes(), 0o755)}, ["/pause"]))


# --- network -------------------------------------------------------------------------------------

def make_bridge() -> None:
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")


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


def shim_pids() -> list[int]:
    """containerd's shims outlive it; ours name our socket on their command line."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and b"containerd-shim" in cmd[0] and str(SOCKET).encode() in b" ".join(cmd):
                out.append(int(p.name))
    return out


def unmount_under(*roots: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    targets = [m for m in mounts if any(m == str(r) or m.startswith(str(r) + "/") for r in roots)]
    for m in sorted(targets, key=len, reverse=True):  # deepest first
        sh("umount", "-l", m, check=False)


def remove_cgroups() -> None:
    base = Path("/sys/fs/cgroup")
    for top in [base / "kubepods", *(c / "kubepods" for c in base.iterdir() if c.is_dir())]:
        if top.is_dir():
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


def netns_of_ours() -> list[str]:
    """The network namespaces of our containerd's pod sandboxes (from each container's spec)."""
    out = []
    for cid in ctr("containers", "ls", "-q", check=False).stdout.decode().split():
        info = ctr("containers", "info", cid, check=False).stdout.decode()
        try:
            spec = json.loads(info).get("Spec") or {}
        except ValueError:
            continue
        for ns in (spec.get("linux") or {}).get("namespaces") or []:
            if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/"):
                out.append(ns["path"])
    return sorted(set(out))


def kill_tasks() -> None:
    """SIGKILL every container our containerd still runs, then delete tasks and containers."""
    tasks = ctr("tasks", "ls", "-q", check=False).stdout.decode().split()
    for t in tasks:
        ctr("tasks", "kill", "--signal", "SIGKILL", t, check=False)
    deadline = time.monotonic() + 10
    for t in tasks:
        while time.monotonic() < deadline and \
                ctr("tasks", "delete", t, check=False).returncode != 0:
            time.sleep(0.2)
    for cid in ctr("containers", "ls", "-q", check=False).stdout.decode().split():
        ctr("containers", "delete", cid, check=False)


# --- up and down -----------------------------------------------------------------------------------

class RealNode:
    """The node's processes and files, kept in the bed's state folder (pids/, logs/, realnode/)."""

    def __init__(self, state: Path, binpath: Path, cache: Path, repo: Path):
        self.state, self.bin, self.cache, self.repo = state, binpath, cache, repo
        self.dir = state / "realnode"

    def pid(self, name: str) -> int | None:
        f = self.state / "pids" / name
        return int(f.read_text()) if f.exists() else None

    def running(self) -> bool:
        return all((p := self.pid(c)) and alive(p) for c in COMPONENTS)

    def present(self) -> bool:
        return any(self.pid(c) for c in COMPONENTS) or self.dir.exists()

    def _start(self, name: str, argv: list[str]) -> int:
        logf = open(self.state / "logs" / f"{name}.log", "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=self.state)
        (self.state / "pids" / name).write_text(str(p.pid))
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
                tail = (self.state / "logs" / f"{log}.log").read_text(errors="replace")[-3000:]
                raise Unavailable(f"{what}: the process exited\n{tail}")
            time.sleep(0.2)
        raise Unavailable(f"timed out after {timeout:.0f}s waiting for {what}; logs in "
                          f"{self.state / 'logs'}")

    def owner(self) -> str | None:
        """The state folder of the bed that runs this machine's real node, if it still runs."""
        f = RUN / "owner"
        if not f.exists():
            return None
        state = Path(f.read_text())
        pid = state / "pids" / "containerd"
        return str(state) if pid.exists() and alive(int(pid.read_text())) else None

    def up(self, sign, write_kubeconfig, kubectl, free_port) -> None:
        """sign(name, subject, ext), write_kubeconfig(path, user), kubectl(*args, input=) and
        free_port() are the bed's own helpers."""
        other = self.owner()
        if other and other != str(self.state):
            # One real node per machine: its folders, socket, bridge and chains are shared.
            raise Unavailable(f"the bed at {other} runs this machine's real node")
        problems = missing_prerequisites()
        problems += [f"{b} is not in {self.bin} (run tools/testbed/build)"
                     for b in ("kubelet", "kube-proxy") if not (self.bin / b).exists()]
        if problems:
            raise Unavailable("; ".join(problems))
        t0 = time.monotonic()
        d, pki = self.dir, self.state / "pki"
        for sub in ("cni", "kubelet-certs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for p in (RUN, LIB):
            p.mkdir(parents=True, exist_ok=True)
        (RUN / "owner").write_text(str(self.state))
        sign("node", f"/O=system:nodes/CN=system:node:{NODE}", "extendedKeyUsage=clientAuth\n")
        sign("kube-proxy", "/CN=system:kube-proxy", "extendedKeyUsage=clientAuth\n")
        sign("kubelet-serving", f"/CN={NODE}",
             f"subjectAltName=IP:{NODE_IP}\nextendedKeyUsage=serverAuth\n")
        write_kubeconfig(d / "kubelet.kubeconfig", "node")
        write_kubeconfig(d / "kube-proxy.kubeconfig", "kube-proxy")

        make_bridge()
        (d / "cni" / "10-peon-testbed.conflist").write_text(json.dumps(cni_conflist(d), indent=1))
        (d / "containerd.toml").write_text(CONTAINERD_CONFIG.format(
            lib=LIB, run=RUN, socket=SOCKET, pause=PAUSE_IMAGE, cni_bin=CNI_BIN,
            cni_conf=d / "cni"))
        pid = self._start("containerd", ["containerd", "--config", str(d / "containerd.toml")])
        self._wait("containerd", lambda: ctr("version").returncode == 0, 30, pid, "containerd")
        ensure_pause(self.repo, self.cache)

        healthz = free_port()
        (d / "kubelet.yaml").write_text(json.dumps(kubelet_config(pki, healthz), indent=1))
        pid = self._start("kubelet", [
            str(self.bin / "kubelet"), f"--config={d / 'kubelet.yaml'}",
            f"--kubeconfig={d / 'kubelet.kubeconfig'}", f"--root-dir={KUBELET_ROOT}",
            f"--cert-dir={d / 'kubelet-certs'}", f"--hostname-override={NODE}",
            f"--node-ip={NODE_IP}", "--node-labels=testbed.peon.dev/node=real", "-v=1"])

        def node_ready() -> bool:
            n = json.loads(kubectl("get", "node", NODE, "-o", "json"))
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in n.get("status", {}).get("conditions") or [])
        self._wait(f"node {NODE} Ready", node_ready, 90, pid, "kubelet")

        (d / "kube-proxy.yaml").write_text(json.dumps(
            kube_proxy_config(d / "kube-proxy.kubeconfig", free_port(), free_port()), indent=1))
        pid = self._start("kube-proxy", [str(self.bin / "kube-proxy"),
                                         f"--config={d / 'kube-proxy.yaml'}"])

        def proxy_synced() -> bool:
            return "KUBE-SERVICES" in sh("iptables", "-t", "nat", "-S", "OUTPUT").stdout.decode()
        self._wait("kube-proxy's rules", proxy_synced, 60, pid, "kube-proxy")
        (d / "up.json").write_text(json.dumps({"seconds": round(time.monotonic() - t0, 1)}))

    def down(self, kubectl) -> None:
        """Undo everything `up` did. kubectl may fail (the API server already gone)."""
        other = self.owner()
        if other and other != str(self.state):
            return  # another bed's node: never touch what it shares with this one
        if self.running():
            # Pods go while the kubelet runs: it unmounts their volumes and runs CNI DEL.
            try:
                kubectl("cordon", NODE)
                kubectl("delete", "pods", "--all-namespaces", "--wait=true", "--timeout=40s",
                        f"--field-selector=spec.nodeName={NODE}", "--grace-period=5")
            except Exception:
                pass
        try:  # a node left cordoned would keep every later real-node pod Pending
            kubectl("delete", "node", NODE, "--ignore-not-found", "--wait=false")
        except Exception:
            pass
        for name in ("kube-proxy", "kubelet"):
            if (p := self.pid(name)):
                stop_pid(p)
        if (p := self.pid("containerd")) and alive(p):
            netns = netns_of_ours()
            kill_tasks()
            stop_pid(p)
        else:
            netns = []
        for s in shim_pids():
            stop_pid(s, 5)
        for ns in netns:
            sh("umount", ns, check=False)
            Path(ns).unlink(missing_ok=True)
        unmount_under(KUBELET_ROOT, RUN, LIB / "containerd" / "io.containerd.grpc.v1.cri")
        sh(str(self.bin / "kube-proxy"), "--cleanup", check=False)
        # What kube-proxy's cleanup leaves: the kubelet's own chains (KUBE-FIREWALL, canaries),
        # and the CNI portmap chains, in both address families.
        for tool in ("iptables", "ip6tables"):
            if shutil.which(tool):
                for table in ("filter", "nat", "mangle"):
                    remove_chains(table, ("KUBE-", "CNI-"), tool)
        sh("ip", "link", "del", BRIDGE, check=False)
        remove_cgroups()
        shutil.rmtree(RUN, ignore_errors=True)
        shutil.rmtree(KUBELET_ROOT, ignore_errors=True)
        for c in COMPONENTS:
            (self.state / "pids" / c).unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def status_lines(self) -> list[str]:
        lines = []
        for c in COMPONENTS:
            p = self.pid(c)
            lines.append(f"{c:24} {'running' if p and alive(p) else 'STOPPED':8} pid {p}")
        lines.append(f"real node  {NODE} at {NODE_IP} (bridge {BRIDGE}, taint {TAINT_KEY})")
        return lines
