"""Operator tools for the management API (docs/contracts.md §8): a SigV4-signing client, the
``switchboard ops`` commands and a local dashboard. Operator-side only: never part of a function's package."""
