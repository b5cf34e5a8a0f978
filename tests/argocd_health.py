"""Run the chart's Argo CD health check (Lua) the way Argo CD does: `obj` is the resource."""
import pathlib

import lupa

SCRIPT = (pathlib.Path(__file__).resolve().parents[1] / "charts" / "peon-operator" / "argocd"
          / "gameserver-health.lua").read_text()


def health(obj: dict) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return result["status"], result["message"]
