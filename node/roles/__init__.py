"""The roles and the application cores they drive.

Pure cores (no I/O, time passed in): judging (claims, BUSY, evidence), session (one challenge),
rounds and agreed (beacon, agreed scores), admission, profiles, gpu_identity, verdicts.
Thin trio drivers: validator, miner, executor, agreement; the ledger is the durable state."""
