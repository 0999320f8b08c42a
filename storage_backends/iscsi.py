"""The ``iscsi`` backend: volumes are LUNs pre-provisioned on iSCSI targets.

The operator makes LUNs of fixed sizes on one or more targets (tgt, LIO, an
array); they are the pool. A volume claims the smallest unused LUN that is
big enough and keeps it until it is deleted, when its first MiB is zeroed
so the next owner does not find the old partition table and file systems.
LUNs cannot grow and have no snapshots here; a root disk is a full copy of
its image (no linked clones). Every host reaches the same targets, so
volumes are shared.

QEMU opens the LUN itself with libiscsi (a network disk, as this host's
initiator IQN, CHAP password from a libvirt secret by UUID); the agent talks
iSCSI in-process with libiscsi too (:mod:`storage_backends.iscsi_utils`),
and runs ``qemu-img convert`` to write an image into a LUN. The CHAP
password is in the libvirt secret, in the agent's memory, and for the
length of a conversion in a 0600 file that qemu-img reads: never in a log,
a domain's XML, a process's arguments or environment, or an RPC payload.

NOTE: where a claim is recorded. Each target has one reserved *claim LUN*
(``[iscsi] claim_lun``, 1 MiB is plenty): block 0 holds a header naming it,
block *n* the claim record of the target's LUN *n* (all zeros: free). The
target is the one thing every host already reaches, so every host sees
every claim, with no shared directory or database to keep beside it; and
a record lives and dies with the LUN it describes. A claim is a read of the
records and a one-block write, done while holding the SCSI-2 reservation
of the claim LUN (tgt offers no COMPARE AND WRITE): two hosts never claim
one LUN. A one-block write is all or nothing, and records carry a CRC, so
a crash leaves either the old record or the new one; the reservation
belongs to the iSCSI session, so the target drops it when a crashed agent's
connection closes. A volume being written is recorded as ``creating`` and
only becomes a volume once complete; a host-local file (or libvirt's
state) would be invisible to the other hosts, and a file in a shared state
directory would make that directory a second source of truth.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from oslo_config import cfg

from compute_driver import domain_xml as lvxml
from compute_driver import exception as cd_exception
from compute_driver.disk_image import qemu_img
from compute_driver.objects import ImageSpec
from storage_backends import base, exception, iscsi_utils

LOG = logging.getLogger(__name__)

GiB = 1024**3
#: Bytes zeroed at the start of a LUN when it is claimed and when it is released.
WIPE_BYTES = 1024**2
_UUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
CREATING, READY = "creating", "ready"

GROUP = cfg.OptGroup(
    "iscsi",
    title="iscsi storage backend",
    help="Volumes as LUNs pre-provisioned on iSCSI targets, shared by every host.",
)

OPTS = [
    cfg.StrOpt(
        "portal",
        regex=iscsi_utils.PORTAL_RE,
        help="host:port of the iSCSI portal ([addr]:port for IPv6), the same on every "
        "host; guests' disks name it. Required. Related options: targets.",
    ),
    cfg.ListOpt(
        "targets",
        default=[],
        item_type=cfg.types.String(regex=iscsi_utils.IQN_RE),
        help="IQNs of the targets whose LUNs are the pool, in the order LUNs are tried "
        "when two fit equally. Each needs a claim LUN (claim_lun). Required.",
    ),
    cfg.StrOpt(
        "initiator_iqn",
        regex=iscsi_utils.IQN_RE,
        help="This host's initiator IQN, used by the agent and by QEMU; the targets' ACLs "
        "must list it. Required (libiscsi's and QEMU's default names are never allowed).",
    ),
    cfg.IntOpt(
        "claim_lun",
        default=1,
        min=0,
        max=16383,
        help="LUN number, on every target, of the reserved LUN that records which volume "
        "holds each LUN (it is never handed out). It needs one block per LUN number on "
        "the target (1 MiB covers 2048). A LUN whose first block is all zeros is made a "
        "claim LUN on first use; one holding anything else is refused.",
    ),
    cfg.StrOpt(
        "chap_username",
        help="CHAP user name for logins; unset: no CHAP. Related options: chap_secret_uuid.",
    ),
    cfg.StrOpt(
        "chap_secret_uuid",
        regex=_UUID_RE,
        help="UUID of the libvirt secret (usage type 'iscsi') holding the CHAP password; "
        "guests' disks refer to it, so it must exist with this UUID on every host. "
        "Required with chap_username. Related options: chap_password_file.",
    ),
    cfg.StrOpt(
        "chap_password_file",
        help="File (mode 0600) holding the CHAP password. When set, the agent defines the "
        "libvirt secret chap_secret_uuid if missing and sets its value from this file at "
        "start. Unset: the password is read from that secret, which must then be defined "
        "with private='no'. The password is never logged or passed on a command line.",
    ),
    cfg.IntOpt(
        "connect_timeout",
        default=10,
        min=1,
        max=300,
        help="Seconds a login to a target may take before the operation fails with "
        "storage_backend_unavailable. Related options: op_timeout.",
    ),
    cfg.IntOpt(
        "op_timeout",
        default=30,
        min=1,
        max=3600,
        help="Seconds one SCSI command (a read, a 1 MiB write) may take. Related options: "
        "connect_timeout, lock_timeout.",
    ),
    cfg.IntOpt(
        "lock_timeout",
        default=30,
        min=1,
        max=600,
        help="Seconds to wait for another host's claim to finish (the reservation of a "
        "claim LUN) before failing with storage_backend_unavailable.",
    ),
    cfg.IntOpt(
        "image_write_timeout",
        default=3600,
        min=10,
        help="Seconds qemu-img may take to write an image into a LUN.",
    ),
]


def list_opts() -> dict:
    return {GROUP: OPTS}


@dataclass(frozen=True, order=True)
class Lun:
    """A data LUN of a target (never the claim LUN or a controller)."""

    target: str
    number: int
    size: int = field(compare=False)

    @property
    def location(self) -> str:
        return "%s/%d" % (self.target, self.number)


#: Marks a record that could not be read: the LUN is neither free nor anyone's.
CORRUPT: dict[str, Any] = {"volume": "", "state": "corrupt"}


@dataclass
class _Pool:
    """The LUNs and claim records of every target, as read in one operation."""

    sessions: dict[str, iscsi_utils.Session]
    luns: list[Lun]
    #: target -> (claim LUN number, its block size)
    claim_luns: dict[str, tuple[int, int]]
    records: dict[Lun, dict[str, Any] | None]

    def claims_of(self, volume_id: str) -> list[tuple[Lun, dict[str, Any]]]:
        return [
            (lun, rec) for lun, rec in self.records.items() if rec and rec["volume"] == volume_id
        ]

    def write_record(self, lun: Lun, record: dict[str, Any] | None) -> None:
        number, block = self.claim_luns[lun.target]
        data = iscsi_utils.encode_record(record, block) if record else bytes(block)
        self.sessions[lun.target].write(number, lun.number, data, block)
        self.records[lun] = record


class IscsiStorageBackend(base.StorageBackend):
    """Volumes as whole pre-provisioned LUNs, claimed through a claim LUN per target."""

    name = "iscsi"

    def __init__(self, conf: cfg.ConfigOpts, services: base.Services | None = None) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.opts = conf.iscsi
        for option in ("portal", "initiator_iqn"):
            if not getattr(self.opts, option):
                raise cd_exception.InvalidConfig(reason="[iscsi] %s is not set" % option)
        if not self.opts.targets:
            raise cd_exception.InvalidConfig(reason="[iscsi] targets is empty")
        self.host, self.port = iscsi_utils.portal_host_port(self.opts.portal)
        iscsi_utils.libiscsi()
        password = None
        if self.opts.chap_username:
            if not self.opts.chap_secret_uuid:
                raise cd_exception.InvalidConfig(
                    reason="[iscsi] chap_username is set but chap_secret_uuid is not: QEMU "
                    "takes the CHAP password from a libvirt secret (usage type 'iscsi')"
                )
            from_file = None
            if self.opts.chap_password_file:
                from_file = iscsi_utils.read_password_file(self.opts.chap_password_file)
            if services is None or services.hypervisor is None:
                raise cd_exception.InvalidConfig(
                    reason="[iscsi] chap_username is set but no libvirt connection was "
                    "given to the backend: the CHAP password is a libvirt secret"
                )
            password = iscsi_utils.libvirt_chap_password(
                services.hypervisor(), self.opts.chap_secret_uuid, from_file
            )
        self.settings = iscsi_utils.Settings(
            backend=self.name,
            portal=self.opts.portal,
            initiator=self.opts.initiator_iqn,
            username=self.opts.chap_username,
            password=password,
            connect_timeout=self.opts.connect_timeout,
            op_timeout=self.opts.op_timeout,
        )
        self._warned: set[str] = set()

    def describe(self) -> base.Description:
        return base.Description(name=self.name, shared=True, formats=("raw",))

    # --- the pool ---------------------------------------------------------------------

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            LOG.warning(message, *args)

    @contextlib.contextmanager
    def _pool(self, lock: bool = False) -> Iterator[_Pool]:
        """Sessions to every target, their LUNs and claim records.

        With ``lock``, the claim LUN of every target is reserved (in the
        configured order, so two hosts never wait on each other) until exit,
        and a blank claim LUN gets its header.

        :raises InvalidConfig: a claim LUN is missing or holds other data.
        """
        with contextlib.ExitStack() as stack:
            sessions = {
                target: stack.enter_context(iscsi_utils.Session(self.settings, target))
                for target in self.opts.targets
            }
            claim_luns, luns = {}, []
            for target, session in sessions.items():
                number = self.opts.claim_lun
                found = {
                    n: self._patiently(session, n, functools.partial(session.read_capacity, n))
                    for n in session.report_luns()
                }
                claim = found.pop(number, None)
                if claim is None:
                    raise cd_exception.InvalidConfig(
                        reason="[iscsi] claim_lun: target %s has no disk LUN %d to record "
                        "claims in (make a 1 MiB LUN there)" % (target, number)
                    )
                claim_luns[target] = (number, claim[1])
                max_lun = claim[0] // claim[1] - 1
                for n, capacity in sorted(found.items()):
                    if capacity is None:
                        continue  # a controller, not a disk
                    if n > max_lun:
                        self._warn_once(
                            "%s/%d" % (target, n),
                            "LUN %s/%d is not used: claim LUN %d has no block %d",
                            target,
                            n,
                            number,
                            n,
                        )
                        continue
                    luns.append(Lun(target, n, capacity[0]))
            if lock:
                stack.enter_context(
                    iscsi_utils.reserved(
                        [(sessions[t], claim_luns[t][0]) for t in self.opts.targets],
                        self.opts.lock_timeout,
                    )
                )
            pool = _Pool(sessions=sessions, luns=luns, claim_luns=claim_luns, records={})
            for target, session in sessions.items():
                self._read_records(pool, target, session, lock)
            yield pool

    def _read_records(
        self, pool: _Pool, target: str, session: iscsi_utils.Session, locked: bool
    ) -> None:
        number, block = pool.claim_luns[target]
        mine = [lun for lun in pool.luns if lun.target == target]
        blocks = max([lun.number for lun in mine], default=0) + 1
        # NOTE: without the lock, another host's claim may hold the LUN a moment.
        data = self._patiently(
            session, number, functools.partial(session.read, number, 0, blocks * block, block)
        )
        head = data[:block]
        if not iscsi_utils.is_header(head):
            if head.strip(b"\0"):
                raise cd_exception.InvalidConfig(
                    reason="[iscsi] claim_lun: LUN %s/%d holds data that is not a claim "
                    "table; it is not a claim LUN (or a guest wrote to it)" % (target, number)
                )
            if locked:
                session.write(number, 0, iscsi_utils.header_block(block), block)
                LOG.info("Initialised claim LUN %s/%d", target, number)
            for lun in mine:
                pool.records[lun] = None
            return
        for lun in mine:
            raw = data[lun.number * block : (lun.number + 1) * block]
            try:
                pool.records[lun] = iscsi_utils.decode_record(raw)
            except iscsi_utils.CorruptRecord as exc:
                self._warn_once(
                    "corrupt " + lun.location,
                    "Claim record of LUN %s is unreadable (%s): the LUN is left alone",
                    lun.location,
                    exc,
                )
                pool.records[lun] = CORRUPT

    def _patiently(self, session: iscsi_utils.Session, lun: int, call: Any) -> Any:
        return iscsi_utils.patiently(session, lun, self.opts.lock_timeout, call)

    def _volume(self, volume_id: str, lun: Lun) -> base.Volume:
        return base.Volume(
            id=volume_id,
            backend=self.name,
            # NOTE: rounded down: what the volume surely holds (LUN sizes are the operator's).
            size_gb=lun.size // GiB,
            format="raw",
            location=lun.location,
        )

    def _wipe(self, pool: _Pool, lun: Lun) -> None:
        """Zero the first :data:`WIPE_BYTES` of ``lun`` (its old partition table, file systems)."""
        session = pool.sessions[lun.target]
        capacity = session.read_capacity(lun.number)
        if capacity is None:
            raise cd_exception.StorageError(
                operation="wipe", volume=lun.location, reason="the LUN is gone from the target"
            )
        block = capacity[1]
        length = min(WIPE_BYTES, lun.size) // block * block
        session.write(lun.number, 0, bytes(length), block)

    # --- capacity ---------------------------------------------------------------------

    def capacity(self) -> base.Capacity:
        """Sizes of the data LUNs: all of them, the unclaimed ones, the claimed ones."""
        with self._pool() as pool:
            total = sum(lun.size for lun in pool.luns)
            free = sum(lun.size for lun in pool.luns if pool.records.get(lun) is None)
        return base.Capacity(total=total, free=free, provisioned=total - free)

    # --- volumes ----------------------------------------------------------------------

    def _claim(self, volume_id: str, needed: int) -> tuple[Lun, dict[str, Any]]:
        """The LUN recorded for ``volume_id``, or the smallest free one of ``needed`` bytes.

        A new claim is recorded ``creating`` and its first MiB zeroed.

        :raises NoSpace: no free LUN is big enough.
        """
        with self._pool(lock=True) as pool:
            claims = pool.claims_of(volume_id)
            if claims:
                lun, record = min(claims, key=lambda c: c[0])
                if record["state"] == CREATING:
                    self._wipe(pool, lun)  # a crashed attempt's leftover: start again
                return lun, record
            free = [lun for lun in pool.luns if pool.records.get(lun) is None]
            fitting = [lun for lun in free if lun.size >= needed]
            if not fitting:
                raise exception.NoSpace(
                    backend=self.name,
                    volume=volume_id,
                    needed="a LUN of %d bytes" % needed,
                    free="%d free LUNs, the largest of %d bytes"
                    % (len(free), max((lun.size for lun in free), default=0)),
                )
            order = {t: i for i, t in enumerate(self.opts.targets)}
            lun = min(fitting, key=lambda x: (x.size, order[x.target], x.number))
            record = {
                "volume": volume_id,
                "state": CREATING,
                "host": socket.gethostname(),
                "claimed_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "size": lun.size,
            }
            pool.write_record(lun, record)
            LOG.info("Claimed LUN %s (%d bytes) for volume %s", lun.location, lun.size, volume_id)
            self._wipe(pool, lun)
            return lun, record

    def _mark_ready(self, volume_id: str, lun: Lun) -> None:
        with self._pool(lock=True) as pool:
            record = pool.records.get(lun)
            if not record or record["volume"] != volume_id:
                raise cd_exception.StorageError(
                    operation="create",
                    volume=volume_id,
                    reason="the claim of LUN %s vanished while it was written" % lun.location,
                )
            pool.write_record(lun, dict(record, state=READY))

    def _create(self, volume_id: str, needed: int, fill: Any) -> base.Volume:
        lun, record = self._claim(volume_id, needed)
        if record["state"] == READY:
            return self._volume(volume_id, lun)
        try:
            fill(lun)
            self._mark_ready(volume_id, lun)
        except BaseException:
            try:
                self.delete_volume(volume_id)
            except Exception:
                LOG.exception("Could not release LUN %s of failed volume %s", lun, volume_id)
            raise
        return self._volume(volume_id, lun)

    def create_volume(self, volume_id: str, size_gb: int) -> base.Volume:
        """Claim the smallest free LUN of at least ``size_gb`` GiB; its first MiB reads zeros.

        :raises NoSpace: no free LUN is that big.
        """
        base.check_volume_name(volume_id)
        volume = self._create(volume_id, size_gb * GiB, lambda lun: None)
        LOG.info("Created volume %s on LUN %s", volume_id, volume.location)
        return volume

    def create_from_image(
        self, volume_id: str, image: ImageSpec, size_gb: int, linked: bool = True
    ) -> base.Volume:
        """Claim a LUN of at least ``size_gb`` GiB and the image's size; write the image in.

        NOTE: ``linked`` is ignored, not refused: a LUN cannot be a
        copy-on-write child of anything (``describe().linked_clone`` is
        False), so every volume is a full copy, as a caller asking for a
        linked clone on any backend without them gets.

        :raises InvalidImage: not raw or qcow2, or with a backing or data file.
        :raises NoSpace: no free LUN is big enough.
        """
        base.check_volume_name(volume_id)
        base.check_volume_name(image.uuid)
        virtual_size = self._check_image(image)
        volume = self._create(
            volume_id,
            max(size_gb * GiB, virtual_size),
            lambda lun: self._write_image(image, lun, volume_id),
        )
        LOG.info(
            "Created volume %s on LUN %s from image %s", volume_id, volume.location, image.uuid
        )
        return volume

    def _check_image(self, image: ImageSpec) -> int:
        """The image's virtual size.

        :raises InvalidImage: a format other than raw/qcow2, or a backing or data file.
        """
        if image.disk_format not in ("raw", "qcow2"):
            raise cd_exception.InvalidImage(
                image=image.uuid, reason="format %r cannot go to a LUN" % image.disk_format
            )
        info = json.loads(
            qemu_img.run("info", "--output=json", "-f", image.disk_format, image.path)
        )
        data_file = info.get("format-specific", {}).get("data", {}).get("data-file")
        if info.get("backing-filename") or data_file:
            raise cd_exception.InvalidImage(
                image=image.uuid,
                reason="it has a backing or data file; the store holds whole images",
            )
        return int(info["virtual-size"])

    def _write_image(self, image: ImageSpec, lun: Lun, volume_id: str) -> None:
        """``qemu-img convert -n`` of the image into the LUN; the password goes in a 0600 file."""
        args = ["convert", "-q", "-n", "-f", image.disk_format, image.path]
        with contextlib.ExitStack() as stack:
            secret_id = None
            if self.settings.username:
                path = stack.enter_context(iscsi_utils.secret_file(self.settings.password or ""))
                secret_id = "iscsi-chap"
                args += ["--object", "secret,id=%s,file=%s,format=raw" % (secret_id, path)]
            opts = iscsi_utils.image_opts(self.settings, lun.target, lun.number, secret_id)
            try:
                qemu_img.run(
                    *args, "--target-image-opts", opts, timeout=self.opts.image_write_timeout
                )
            except cd_exception.StorageError as exc:
                raise cd_exception.StorageError(
                    operation="write image %s" % image.uuid,
                    volume=volume_id,
                    reason="qemu-img into LUN %s: %s" % (lun.location, exc.kwargs.get("reason")),
                ) from exc

    def get_volume(self, volume_id: str) -> base.Volume:
        """The volume on its LUN (size_gb: the LUN's size in whole GiB).

        :raises BackendVolumeNotFound: no LUN is claimed by it, or it is still being made.
        """
        base.check_volume_name(volume_id)
        with self._pool() as pool:
            for lun, record in sorted(pool.claims_of(volume_id), key=lambda c: c[0]):
                if record["state"] == READY:
                    return self._volume(volume_id, lun)
        raise exception.BackendVolumeNotFound(volume=volume_id, backend=self.name)

    def delete_volume(self, volume_id: str) -> None:
        """Zero the first MiB of the volume's LUN and release it. Idempotent.

        NOTE: only the first MiB: enough for the next owner's guest to see no
        partition table or file system, and cheap; data further in stays on
        the LUN until overwritten.
        """
        base.check_volume_name(volume_id)
        with self._pool(lock=True) as pool:
            for lun, _record in pool.claims_of(volume_id):
                self._wipe(pool, lun)
                pool.write_record(lun, None)
                LOG.info("Deleted volume %s: released LUN %s", volume_id, lun.location)

    def disk_config(self, volume: base.Volume) -> lvxml.Disk:
        """A network disk QEMU opens with libiscsi as this initiator, CHAP from the secret."""
        target, _, number = volume.location.rpartition("/")
        disk = lvxml.Disk(
            type="network",
            device="disk",
            driver_name="qemu",
            driver_type="raw",
            # NOTE: no host page cache for a shared LUN: another host may open it next.
            cache="none",
            source_protocol="iscsi",
            source_name="%s/%d" % (target, int(number)),
            hosts=[lvxml.DiskHost(name=self.host, port=self.port)],
            source_initiator_iqn=self.settings.initiator,
        )
        if self.settings.username:
            disk.auth_username = self.settings.username
            disk.auth_secret_type = "iscsi"
            disk.auth_secret_uuid = self.opts.chap_secret_uuid
        return disk
