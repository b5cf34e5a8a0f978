"""The PEON API (`peon-api`): PEON's REST routes and Peon's own, over the shared verbs."""
