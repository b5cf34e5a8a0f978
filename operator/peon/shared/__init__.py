"""What Peon's programs share: the typed model of its resources (model, backup, status, uptime,
clock), the rendering of a server's children (render), the Kubernetes client (kube, metrics),
PEON's payloads (convert), the verbs people use (actions, download), and the game protocols
spoken from outside a pod (players, rcon, notify). Imports nothing of the programs."""
