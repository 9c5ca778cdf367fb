"""The search domain: the ``indexing`` job (service.py), the WebSocket ``search`` action (client.py), the
engine behind both (engine.py: an interface and its PostgreSQL implementation) and its queries
(repository.py)."""
