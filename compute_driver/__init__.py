"""compute-driver: turn Linux hosts into a private KVM cloud."""

import warnings

# NOTE: oslo.messaging imports oslo.service, which imports eventlet for an
# optional backend we never use (we run native threads and never
# monkey-patch); eventlet then warns on every start of every command.
warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")
