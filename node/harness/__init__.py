"""The local multi-node harness: real node processes, live view, report, cheater miners."""
