#!/usr/bin/env python3
"""Off-site backups against the floor: a world backed up to an S3 store and restored with
`peon store` (restic), against plain S3 transfers of the same bytes to the same store.

    floor up     the world as one tar stream PUT to the store (curl --aws-sigv4), no
                 encryption, no deduplication, into a bucket made (and written to) beforehand
    peon up      `peon store backup` of the world into a new repository (a server's first
                 backup: it creates the repository, restic's key calibration included) in
                 a bucket made (and written to) beforehand, as the floor's is
    peon up'     `peon store backup` of the world into a repository made beforehand (untimed,
                 as the floor's bucket is): what every backup after the first costs when the
                 whole world is new
    floor down   the same object GET and unpacked into an empty folder
    peon down    `peon store restore --size` of the snapshot into an empty folder, as the
                 operator's restore Job runs it (staged, synced, swapped; the size is the
                 backup's record of it); `--no-size` restores as a hand-run restore does,
                 reading the size with restic's stats first
    second       `peon store backup` after 1% of the files changed: the bytes it added

Every timed transfer starts with nothing dirty in the page cache (a sync, untimed): the
restore syncs its volume before the swap, and syncfs(2) would otherwise also write back what
the transfers before it left (the floor's unpacked world, the store's objects) on the same
file system. The floor's own writes are not synced; the time a sync after it takes is printed.

The world (default 1 GiB): half random bytes, half compressible text, in 1 MiB files, plus
small files; "1% of the files changed" rewrites 1% of the 1 MiB files. Prints MB/s for each
transfer and the ratio peon / floor (above 1 is slower).

    bench/store.py [--mib 1024] [--no-size]

Needs restic and SeaweedFS (built by tools/testbed/build-gotool, as the tests build them) and
curl; SeaweedFS runs on loopback. Traffic: loopback only.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS, build  # noqa: E402

BIG = 1 << 20
WORDS = [w.encode() for w in "the quick brown fox jumps over a lazy dog while peon saves the "
         "world of valheim minecraft factorio terraria in chunks and regions".split()]


def make_world(root: pathlib.Path, mib: int, rng: random.Random) -> list[pathlib.Path]:
    files = []
    big = max(2, (mib << 20) // BIG)
    for i in range(big):
        p = root / "region" / f"r.{i}.mca"
        p.parent.mkdir(parents=True, exist_ok=True)
        if i % 2:
            data = rng.randbytes(BIG)
        else:  # compressible: text with random word order
            data = b" ".join(rng.choice(WORDS) for _ in range(BIG // 5))[:BIG]
        p.write_bytes(data)
        files.append(p)
    for i in range(400):  # players, stats, small saves
        p = root / "players" / f"{i:04}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(json.dumps({"id": i, "inventory": [rng.randrange(1000) for _ in range(300)]}).encode())
        files.append(p)
    return files


def size_of(root: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(fn) -> float:
    os.sync()  # nothing left dirty by an earlier step is written back inside this one
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def syncfs(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        ctypes.CDLL(None, use_errno=True).syncfs(fd)
    finally:
        os.close(fd)


def curl(*args: str) -> None:
    subprocess.run(["curl", "-sSf", "--aws-sigv4", "aws:amz:us-east-1:s3",
                    "--user", f"{ACCESS_KEY}:{SECRET_KEY}", *args], check=True,
                   stdout=subprocess.DEVNULL)


def floor_up(world: pathlib.Path, url: str) -> None:
    tar = subprocess.Popen(["tar", "-C", str(world), "-cf", "-", "."], stdout=subprocess.PIPE)
    subprocess.run(["curl", "-sSf", "--aws-sigv4", "aws:amz:us-east-1:s3",
                    "--user", f"{ACCESS_KEY}:{SECRET_KEY}", "-T", "-", url], stdin=tar.stdout,
                   check=True, stdout=subprocess.DEVNULL)
    assert tar.wait() == 0


def floor_down(url: str, target: pathlib.Path) -> None:
    target.mkdir()
    get = subprocess.Popen(["curl", "-sSf", "--aws-sigv4", "aws:amz:us-east-1:s3",
                            "--user", f"{ACCESS_KEY}:{SECRET_KEY}", url], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(target), "-xf", "-"], stdin=get.stdout, check=True)
    assert get.wait() == 0


def floor_down_then_sync(url: str, target: pathlib.Path) -> tuple[float, float]:
    """The floor's GET and unpack, timed as timed() does; then how long a sync of what it
    wrote takes (the restore syncs its volume before the swap)."""
    os.sync()
    t0 = time.monotonic()
    floor_down(url, target)
    t1 = time.monotonic()
    syncfs(target)
    return t1 - t0, time.monotonic() - t1


def peon(*args: str, repository: str | None = None) -> dict:
    env = dict(os.environ, **({"RESTIC_REPOSITORY": repository} if repository else {}))
    out = subprocess.run([str(pathlib.Path(sys.executable).parent / "peon"), "store", *args],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"peon store {args[0]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="the world's size")
    ap.add_argument("--no-size", action="store_true",
                    help="restore without --size (restic's stats reads the size first)")
    args = ap.parse_args()
    restic, weed = build("restic"), build("seaweedfs")
    if not (restic and weed):
        raise SystemExit("restic or SeaweedFS could not be built (tools/testbed/build-gotool)")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="peon-bench-store-"))
    s3 = SeaweedFS(weed, tmp / "s3")
    try:
        rng = random.Random(42)
        world = tmp / "world"
        files = make_world(world, args.mib, rng)
        total = size_of(world)
        os.environ.update(PATH=f"{os.path.dirname(restic)}:{os.environ['PATH']}",
                          AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                          RESTIC_PASSWORD="bench password", TMPDIR=str(tmp),
                          RESTIC_REPOSITORY=f"s3:{s3.endpoint}/peon/bench")
        curl("-X", "PUT", f"{s3.endpoint}/floor")
        url = f"{s3.endpoint}/floor/world.tar"
        # SeaweedFS gives a bucket its first volumes at its first write (seconds): a cost of
        # this store, paid once, and by neither side here. Both buckets are made and written
        # to beforehand; a repository is a folder in a bucket the store already has.
        warm = tmp / "warm"
        warm.write_bytes(b"x" * 4096)
        curl("-X", "PUT", f"{s3.endpoint}/peon")
        for bucket in ("floor", "peon"):
            curl("-T", str(warm), f"{s3.endpoint}/{bucket}/warm")
        rows = []
        t_floor_up = timed(lambda: floor_up(world, url))
        first: dict = {}
        t_peon_up = timed(lambda: first.update(peon("backup", str(world), "--host", "bench/world",
                                                    "--name", "b1")))
        rows.append(("up", t_floor_up, t_peon_up))
        made = f"s3:{s3.endpoint}/peon/made"  # made beforehand, as the floor's bucket is
        t_init = timed(lambda: subprocess.run(["restic", "init", "--quiet", "--repo", made],
                                              check=True, capture_output=True))
        t_peon_up2 = timed(lambda: peon("backup", str(world), "--host", "bench/world",
                                        "--name", "b1", repository=made))
        rows.append(("up'", t_floor_up, t_peon_up2))
        floor_target = tmp / "floor-restore"
        t_floor_down, t_floor_sync = floor_down_then_sync(url, floor_target)
        target = tmp / "restore"
        target.mkdir()
        size = [] if args.no_size else ["--size", str(first["size"])]
        t_peon_down = timed(lambda: peon("restore", first["snapshot"], str(world), str(target), *size))
        rows.append(("down", t_floor_down, t_peon_down))
        same = all((target / p.relative_to(world)).read_bytes() == p.read_bytes() for p in files)
        # 1% of the files change (whole new contents), then a second backup.
        region = [p for p in files if p.parent.name == "region"]
        changed = rng.sample(region, max(1, len(region) // 100))
        changed_bytes = 0
        for p in changed:
            data = rng.randbytes(p.stat().st_size)
            p.write_bytes(data)
            changed_bytes += len(data)
        second = peon("backup", str(world), "--host", "bench/world", "--name", "b2")
        mb = total / 1e6
        print(f"world: {total / 2**20:.0f} MiB in {len(files)} files (half random, half text); "
              f"store: SeaweedFS S3 on loopback; 2 cores")
        print(f"{'transfer':<8} {'floor s':>8} {'floor MB/s':>11} {'peon s':>8} {'peon MB/s':>10} {'ratio':>6}")
        for what, f, p in rows:
            print(f"{what:<8} {f:8.1f} {mb / f:11.1f} {p:8.1f} {mb / p:10.1f} {p / f:6.2f}")
        print(f"up: a new repository (restic init, its key calibration, at a server's first "
              f"backup); up': one made beforehand (its init took {t_init:.1f} s untimed); down: "
              f"{'without' if args.no_size else 'with'} --size")
        print(f"a sync after the floor's unpack took {t_floor_sync:.1f} s more (the restore's "
              f"own sync is in its time); down / (floor + that sync): "
              f"{t_peon_down / (t_floor_down + t_floor_sync):.2f}")
        print(f"first backup added {first['added'] / 2**20:.0f} MiB to the store "
              f"({first['added'] / total:.0%} of the world, compressed and encrypted)")
        print(f"second backup after {len(changed)} of {len(region)} 1 MiB files changed "
              f"({changed_bytes / 2**20:.1f} MiB): added {second['added'] / 2**20:.1f} MiB "
              f"({second['added'] / total:.2%} of the world)")
        print(f"restore bit-exact: {same}")
    finally:
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
