"""Role logic: validator, miner, executor; scheduler, GPU profiles, ledger."""
