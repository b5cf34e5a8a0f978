"""Which namespaces the operator serves: `--namespace` values, exact names or kopf's patterns
(`games-*`, and `!name` to exclude). One reading of them for the prime, the streams and kopf.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

PATTERN_CHARS = "*?[!"


def is_pattern(name: str) -> bool:
    return any(c in name for c in PATTERN_CHARS)


@dataclass(frozen=True)
class Scope:
    """The namespaces given (none: the whole cluster)."""
    given: tuple[str, ...] = ()

    @property
    def patterned(self) -> bool:
        """A pattern among them: objects are listed cluster-wide and kept by `wants`."""
        return any(is_pattern(n) for n in self.given)

    def list_scopes(self) -> list[str | None]:
        """Where to list and watch: each exact namespace, or the whole cluster (None)."""
        return [None] if not self.given or self.patterned else list(self.given)

    def wants(self, namespace: str | None) -> bool:
        """Is this namespace served? A pattern `!name` excludes, as in kopf."""
        if not self.given:
            return True
        ns = namespace or ""
        include = [p for p in self.given if not p.startswith("!")]
        exclude = [p[1:] for p in self.given if p.startswith("!")]
        return (not include or any(fnmatch.fnmatchcase(ns, p) for p in include)) and \
            not any(fnmatch.fnmatchcase(ns, p) for p in exclude)
