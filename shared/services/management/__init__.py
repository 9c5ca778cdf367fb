"""The management API (docs/contracts.md §8): health, the failure ledger, redrive, bulk enqueue, batches.
Routes in api.py; one module per use case; every query in repository.py."""
