"""The compute agent: RPC endpoint, build and delete, periodic reports."""
