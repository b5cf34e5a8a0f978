"""Peon: a Kubernetes operator that runs self-hosted game servers."""

__version__ = "0.1.0"

GROUP = "peon.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Every write the operator makes goes through server-side apply under this one manager.
FIELD_MANAGER = "peon-operator"

# Labels on every child. `peon.dev/gameserver` is what the operator selects and watches by.
LABEL_GAMESERVER = "peon.dev/gameserver"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "peon-operator"

ANNOTATION_RESTARTED_AT = "peon.dev/restartedAt"
ANNOTATION_APPLIED = "peon.dev/applied-hash"  # the digest of a child as rendered, on the child
ANNOTATION_SETTINGS_HASH = "peon.dev/settings-hash"
# A start (now) and a stop asked for (now or at a time), by the API, kubectl peon or a person;
# a later wake cancels a sleep.
ANNOTATION_WAKE = "peon.dev/wake"
ANNOTATION_SLEEP = "peon.dev/sleep"
