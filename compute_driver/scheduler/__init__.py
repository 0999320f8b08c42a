"""The scheduler service: store, placement, claims, image registry."""
