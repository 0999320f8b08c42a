"""A cloud whose agent offers all four storage backends, on real storage servers.

:func:`running_storage_cloud` starts nfs-ganesha (``nfs_server.py``) and
tgtd (``iscsi_target.py``), takes a running Ceph cluster (the ``ceph``
fixture), and then its own compute-scheduler and compute-agent, like the
``cloud`` fixture (``tests/functional/conftest.py``): its own RabbitMQ vhost,
host name and state directory, all removed at the end, domains included.
The agent's configuration has ``[storage] backends = dir,nfs,iscsi,rbd``
and one group per backend pointing at those servers::

    with running_storage_cloud(ceph) as env:
        env.cloud.ok("volume", "create", "v", "--size", "1", "--backend", "rbd")

Secrets are handed over the way an operator would: the CHAP password in a
0600 file the agent reads (``[iscsi] chap_password_file``; the agent defines
the libvirt secret), the cephx key in a keyring file and in a libvirt secret
this module defines through the API (never on a command line).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import libvirt
from cloud_env import (
    CONFIG,
    LIBVIRT_URI,
    STATE_ROOT,
    TRANSPORT_URL,
    Cloud,
    add_vhost,
    delete_vhost,
    guest_import_args,
    remove_domains_of,
    require_services,
)

from tests.functional.storage.ceph_cluster import CephCluster
from tests.functional.storage.iscsi_target import (
    INSTALL_HINT,
    IscsiTarget,
    missing_programs,
    running_target,
)
from tests.functional.storage.nfs_server import NfsServer, running_nfs_server

GiB = 1024**3
MiB = 1024**2
BACKENDS = ("dir", "nfs", "iscsi", "rbd")
CLAIM_LUN = 1
#: LUN number -> bytes: the claim LUN, then the pool (sparse files). The flow
#: needs at most two volumes of 1 GiB at a time; the 2 GiB LUNs stay for the
#: bench-sized and boot volumes.
LUNS = {CLAIM_LUN: MiB, 2: GiB, 3: GiB, 4: 2 * GiB, 5: 2 * GiB}

STORAGE_CONFIG = """
[storage]
backends = {backends}
root_backend = dir

[nfs]
access_mode = direct
server = {nfs_host}
export = {nfs_export}
timeout = 10

[iscsi]
portal = {portal}
targets = {iqn}
initiator_iqn = {initiator}
claim_lun = {claim_lun}
chap_username = {chap_user}
chap_secret_uuid = {chap_secret_uuid}
chap_password_file = {chap_password_file}
connect_timeout = 5
op_timeout = 20

[rbd]
pool = rbd
ceph_conf = {ceph_conf}
user = {ceph_user}
keyring = {ceph_keyring}
secret_uuid = {ceph_secret_uuid}
connect_timeout = 5
op_timeout = 20
"""


@dataclass
class StorageCloud:
    """The running cloud, its storage servers, and the test guest image in it."""

    cloud: Cloud
    ceph: CephCluster
    nfs: NfsServer
    target: IscsiTarget
    image: dict[str, Any]
    chap_secret_uuid: str
    ceph_secret_uuid: str
    #: The secrets the tests look for where they must never be.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@contextlib.contextmanager
def _ceph_secret(secret_uuid: str, key: str) -> Iterator[None]:
    """A libvirt secret (usage ceph) holding ``key``, set through the API only."""
    conn = libvirt.open(LIBVIRT_URI)
    try:
        secret = conn.secretDefineXML(
            "<secret ephemeral='yes' private='yes'><uuid>%s</uuid>"
            "<usage type='ceph'><name>cd-flow-%s</name></usage></secret>"
            % (secret_uuid, secret_uuid)
        )
        secret.setValue(base64.b64decode(key))
        yield
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.secretLookupByUUIDString(secret_uuid).undefine()
        conn.close()


def _undefine_secret(secret_uuid: str) -> None:
    conn = libvirt.open(LIBVIRT_URI)
    try:
        with contextlib.suppress(libvirt.libvirtError):
            conn.secretLookupByUUIDString(secret_uuid).undefine()
    finally:
        conn.close()


def _cleanup(env: Cloud) -> None:
    """Delete every server, then every volume, of the cloud (before its storage goes)."""
    listed = env.ctl("server", "list")
    for server in listed.json() if listed.rc == 0 else []:
        env.ctl("server", "delete", server["uuid"], "--wait", timeout=120)
    listed = env.ctl("volume", "list")
    for volume in listed.json() if listed.rc == 0 else []:
        env.ctl("volume", "delete", volume["uuid"], timeout=120)


@contextlib.contextmanager
def running_storage_cloud(ceph: CephCluster) -> Iterator[StorageCloud]:
    """Start ganesha, tgtd, then a scheduler and an agent offering every backend.

    :raises RuntimeError: a storage server did not come up.
    """
    require_services()
    missing = missing_programs()
    if missing:
        raise RuntimeError("%s not installed: %s" % (", ".join(missing), INSTALL_HINT))
    tag = uuid.uuid4().hex[:8]
    os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
    state = os.path.join(STATE_ROOT, "storage-" + tag)
    # NOTE: 0755: QEMU (libvirt-qemu) reaches the dir backend's files below it.
    os.makedirs(state, mode=0o755)
    chap_secret_uuid, ceph_secret_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    vhost = "cdst-" + tag
    host = "st-" + tag
    with contextlib.ExitStack() as stack:
        if not os.environ.get("CD_TEST_KEEP_STATE"):
            stack.callback(shutil.rmtree, state, True)
        nfs = stack.enter_context(running_nfs_server())
        target = stack.enter_context(running_target(luns=LUNS))
        stack.enter_context(_ceph_secret(ceph_secret_uuid, ceph.client_key))
        # The agent defines the CHAP secret from the password file; it goes at the end.
        stack.callback(_undefine_secret, chap_secret_uuid)
        chap_password_file = os.path.join(state, "chap-password")
        _write_private(chap_password_file, target.password)
        config_file = os.path.join(state, "compute-driver.conf")
        with open(config_file, "w") as f:
            f.write(
                CONFIG.format(
                    host=host,
                    state=state,
                    transport_url=TRANSPORT_URL.rstrip("/") + "/" + vhost,
                    exchange="compute_driver",
                    uri=LIBVIRT_URI,
                )
            )
            f.write(
                STORAGE_CONFIG.format(
                    backends=",".join(BACKENDS),
                    nfs_host=nfs.host,
                    nfs_export=nfs.export,
                    portal=target.portal,
                    iqn=target.iqn,
                    initiator=target.initiator,
                    claim_lun=CLAIM_LUN,
                    chap_user=target.username,
                    chap_secret_uuid=chap_secret_uuid,
                    chap_password_file=chap_password_file,
                    ceph_conf=ceph.client_conf,
                    ceph_user=ceph.client_id,
                    ceph_keyring=ceph.client_keyring,
                    ceph_secret_uuid=ceph_secret_uuid,
                )
            )
        add_vhost(vhost)
        stack.callback(delete_vhost, vhost)
        env = Cloud(state=state, host=host, config_file=config_file)
        stack.callback(remove_domains_of, state)
        stack.callback(env.stop, "compute-scheduler")
        stack.callback(env.stop, "compute-agent")
        env.start("compute-scheduler")
        env.start("compute-agent")
        env.wait_for_host("up")
        stack.callback(_cleanup, env)
        image = env.ok(*guest_import_args())
        yield StorageCloud(
            cloud=env,
            ceph=ceph,
            nfs=nfs,
            target=target,
            image=image,
            chap_secret_uuid=chap_secret_uuid,
            ceph_secret_uuid=ceph_secret_uuid,
            secrets={"iscsi": target.password, "rbd": ceph.client_key},
        )
