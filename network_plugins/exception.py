"""Errors of the network plugins."""

from compute_driver import exception


class NetworkTypeNotSupported(exception.Invalid):
    msg_fmt = "Network plugin %(plugin)s does not offer %(network_type)s networks"
    code = "network_type_not_supported"


class OpenFlowError(exception.ComputeDriverError):
    msg_fmt = "OpenFlow %(operation)s on bridge %(bridge)s failed: %(reason)s"
    code = "openflow_error"


class NftablesError(exception.ComputeDriverError):
    msg_fmt = "nftables %(operation)s failed: %(reason)s"
    code = "nftables_error"
