"""compute-driver: turn Linux hosts into a private KVM cloud."""
