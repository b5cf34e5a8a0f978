"""The user's commands: `peon` and `kubectl peon`."""
