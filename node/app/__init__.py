"""The composition root: config -> objects -> one nursery (node, runner, status, metrics)."""
