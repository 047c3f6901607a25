"""The run: small steps that record facts in a ledger, and a pure classifier of its outcome."""
