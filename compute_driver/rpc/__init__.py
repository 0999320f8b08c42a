"""The versioned RPC APIs of compute-driver (client classes, endpoints, schemas)."""
