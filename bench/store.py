#!/usr/bin/env python3
"""Off-site backups against the floor: a world backed up to an S3 store and restored with
`peon store` (restic), against plain S3 transfers of the same bytes to the same store.

    floor up     the world as one tar stream PUT to the store (curl --aws-sigv4), no
                 encryption, no deduplication, into a bucket made (and written to) beforehand
    peon up      `peon store backup` of the world into a new repository (it creates the
                 repository, restic's key calibration included) in a bucket made (and written
                 to) beforehand, as the floor's is: a first backup that comes before the
                 server's first listing, which otherwise makes the repository
    peon up'     `peon store backup` of the world into a repository made beforehand (untimed,
                 as the floor's bucket is): a server's first backup (its first listing made
                 the repository), and every later one when the whole world is new
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

With --rounds N every transfer is measured N times, floor and peon back to back in each round
(peon first in odd rounds), and the medians are printed with each round's ratios: the floor
itself moves by a quarter from one run to the next here, so one round's ratio says little.

The world (default 1 GiB): half random bytes, half compressible text, in 1 MiB files, plus
small files; "1% of the files changed" rewrites 1% of the 1 MiB files. Prints MB/s for each
transfer and the ratio peon / floor (above 1 is slower).

    bench/store.py [--mib 1024] [--rounds 1] [--no-size]

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
import statistics
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


def one_round(r: int, world: pathlib.Path, endpoint: str, tmp: pathlib.Path,
              no_size: bool) -> dict:
    """Each transfer once, floor and peon back to back (peon first in odd rounds, so neither
    side always meets the page cache the other left), each into objects of its own."""
    url = f"{endpoint}/floor/world{r}.tar"
    out: dict = {"first": {}}

    def up() -> tuple[float, float]:
        return timed(lambda: floor_up(world, url))

    def peon_up() -> float:
        return timed(lambda: out["first"].update(
            peon("backup", str(world), "--host", "bench/world", "--name", "b1",
                 repository=f"s3:{endpoint}/peon/bench{r}")))

    if r % 2:
        t_peon_up = peon_up()
        t_floor_up = up()
    else:
        t_floor_up = up()
        t_peon_up = peon_up()
    out["up"] = (t_floor_up, t_peon_up)
    made = f"s3:{endpoint}/peon/made{r}"  # made beforehand, as the floor's bucket is
    out["init"] = timed(lambda: subprocess.run(["restic", "init", "--quiet", "--repo", made],
                                               check=True, capture_output=True))
    out["up'"] = (t_floor_up, timed(lambda: peon("backup", str(world), "--host", "bench/world",
                                                 "--name", "b1", repository=made)))
    target = tmp / f"restore{r}"
    target.mkdir()
    size = [] if no_size else ["--size", str(out["first"]["size"])]

    def peon_down() -> float:
        return timed(lambda: peon("restore", out["first"]["snapshot"], str(world), str(target),
                                  *size, repository=f"s3:{endpoint}/peon/bench{r}"))

    t_peon_down = peon_down() if r % 2 else None
    t_floor_down, out["floor sync"] = floor_down_then_sync(url, tmp / f"floor-restore{r}")
    if t_peon_down is None:
        t_peon_down = peon_down()
    out["down"] = (t_floor_down, t_peon_down)
    out["target"] = target
    if r:  # only the first round's restore is kept, for the bit-exact check
        shutil.rmtree(target)
    shutil.rmtree(tmp / f"floor-restore{r}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="the world's size")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of every transfer; medians are printed (the floor moves by "
                         "a quarter between runs on this machine)")
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
                          RESTIC_PASSWORD="bench password", TMPDIR=str(tmp))
        curl("-X", "PUT", f"{s3.endpoint}/floor")
        # SeaweedFS gives a bucket its first volumes at its first write (seconds): a cost of
        # this store, paid once, and by neither side here. Both buckets are made and written
        # to beforehand; a repository is a folder in a bucket the store already has.
        warm = tmp / "warm"
        warm.write_bytes(b"x" * 4096)
        curl("-X", "PUT", f"{s3.endpoint}/peon")
        for bucket in ("floor", "peon"):
            curl("-T", str(warm), f"{s3.endpoint}/{bucket}/warm")
        rounds = []
        for r in range(args.rounds):
            rounds.append(one_round(r, world, s3.endpoint, tmp, args.no_size))
        first, target = rounds[0]["first"], rounds[0]["target"]
        same = all((target / p.relative_to(world)).read_bytes() == p.read_bytes() for p in files)
        # 1% of the files change (whole new contents), then a second backup.
        region = [p for p in files if p.parent.name == "region"]
        changed = rng.sample(region, max(1, len(region) // 100))
        changed_bytes = 0
        for p in changed:
            data = rng.randbytes(p.stat().st_size)
            p.write_bytes(data)
            changed_bytes += len(data)
        second = peon("backup", str(world), "--host", "bench/world", "--name", "b2",
                      repository=f"s3:{s3.endpoint}/peon/bench0")
        mb = total / 1e6
        print(f"world: {total / 2**20:.0f} MiB in {len(files)} files (half random, half text); "
              f"store: SeaweedFS S3 on loopback; 2 cores")
        print(f"{'transfer':<8} {'floor s':>8} {'floor MB/s':>11} {'peon s':>8} {'peon MB/s':>10} {'ratio':>6}"
              + ("  (rounds: peon / floor each)" if args.rounds > 1 else ""))
        for what in ("up", "up'", "down"):
            f = statistics.median(r[what][0] for r in rounds)
            p = statistics.median(r[what][1] for r in rounds)
            each = "  ".join(f"{r[what][1] / r[what][0]:.2f}" for r in rounds)
            print(f"{what:<8} {f:8.1f} {mb / f:11.1f} {p:8.1f} {mb / p:10.1f} {p / f:6.2f}"
                  + (f"  ({each})" if args.rounds > 1 else ""))
        if args.rounds > 1:
            print(f"medians of {args.rounds} rounds, the ratio of the medians; each round "
                  f"measures floor and peon back to back (the order swapped every other round)")
        t_init = statistics.median(r["init"] for r in rounds)
        t_floor_down = statistics.median(r["down"][0] for r in rounds)
        t_peon_down = statistics.median(r["down"][1] for r in rounds)
        t_floor_sync = statistics.median(r["floor sync"] for r in rounds)
        print(f"up: into a new repository (restic init and its key calibration: a first backup "
              f"before the server's first listing); up': into one made beforehand, as the "
              f"server's first listing makes it (its init took {t_init:.1f} s untimed); down: "
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
