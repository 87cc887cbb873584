"""libvirt's errors in the project's taxonomy (``autoballoon.hypervisor``), mapped here once."""

from __future__ import annotations

import libvirt

from autoballoon.hypervisor import (
    DomainGone,
    GuestError,
    HypervisorError,
    PermanentError,
    TransientError,
)

# Connection-level: the connection is unusable for every guest. VIR_ERR_SYSTEM_ERROR is not in
# the list: from the QEMU driver it is one guest's monitor ("Unable to read from monitor"); the
# same code from the RPC layer ("Cannot recv data") is caught by its error domain.
_CONNECTION_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC}
_CONNECTION_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}
_GONE_CODES = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID}
_PERMANENT_CODES = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_INVALID_ARG,
    libvirt.VIR_ERR_OPERATION_DENIED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
}
_AUTH_CODES = {
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_OPERATION_DENIED,
}


def map_error(err: libvirt.libvirtError) -> HypervisorError:
    """The single place where libvirt errors become the project's taxonomy."""
    code, domain = err.get_error_code(), err.get_error_domain()
    msg = err.get_error_message() or str(err)
    if code in _CONNECTION_CODES or domain in _CONNECTION_DOMAINS:
        return TransientError(msg)
    if code in _GONE_CODES:
        return DomainGone(msg)
    if code in _PERMANENT_CODES:
        return PermanentError(msg)
    return GuestError(msg)


def refused_for_good(err: libvirt.libvirtError) -> bool:
    """An open() failure that retrying cannot fix: authentication or permission refused, or
    anything not from the RPC layer (no such driver, a malformed URI, a test driver file that
    does not parse). From the RPC layer, a socket that is missing or refuses is libvirt not
    running (yet): worth trying again."""
    code, domain = err.get_error_code(), err.get_error_domain()
    if code in _AUTH_CODES or "Permission denied" in (err.get_error_message() or ""):
        return True
    return domain not in _CONNECTION_DOMAINS
