"""The gate (`peon-gate`): it stands in for sleeping servers, answers their players' queries and
wakes a server when a player connects."""
