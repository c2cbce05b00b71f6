"""The gRPC edge: thin servicers over the domain, the error-to-status table, the server."""
