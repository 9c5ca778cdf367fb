"""The connections domain: WebSocket clients' tokens (auth.py), their connections (service.py, queries in
repository.py), the frames they send (client_frames.py) and the frames sent to them (broadcast.py), through
the one management API client (gateway.py)."""
