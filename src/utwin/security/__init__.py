"""Security building blocks with no gRPC: identities, the authorization policy, denial logging."""
