"""Where routes live and change: the route store, and local deployments."""
