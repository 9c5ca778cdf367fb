"""The receipts domain: delivery-confirmation (service.py) and its queries (repository.py)."""
