"""The networked service: ``fedvault serve`` (FastAPI app, signed requests, an HTTP round manager
with deadlines and a crash-safe round journal). The client process is ``federation.http_client``."""
