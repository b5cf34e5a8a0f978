"""Objects shaped as the API server returns them, for the pure tests."""
import asyncio
import copy
import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def game(name="valheim"):
    return yaml.safe_load((ROOT / "examples" / "games" / f"{name}.yaml").read_text())


def gameserver(**spec):
    base = {"gameUid": "valheim", "serverName": "Friends of Odin",
            "settings": [{"type": "env", "name": "env", "content": {"SERVER_PASS": "hunter22"}}]}
    base.update(spec)
    return {"apiVersion": "peon.dev/v1alpha1", "kind": "GameServer",
            "metadata": {"name": "odin", "namespace": "games", "uid": "u-1", "generation": 1},
            "spec": copy.deepcopy(base)}


def queued(controller):
    """The keys a controller queued since the last look, taken as a worker takes them."""
    async def take():
        keys = []
        while not controller.queue.idle():
            keys.append(await controller.queue.get())
            controller.queue.done(keys[-1])
        return keys
    return asyncio.run(take())
