"""The tools Peon's Jobs and init steps run in pods: the archive and the off-site store."""
