"""The notifications domain: the job (service.py), its queries (repository.py), the routing rules (routing.py,
pure) and the providers' requests (channels.py)."""
