"""Encryption at rest (docs/contracts.md §5 encryption): envelope encryption with per-conversation data keys
(keys.py), the ``encryption`` job (service.py), crypto-shredding, and every query (repository.py)."""
