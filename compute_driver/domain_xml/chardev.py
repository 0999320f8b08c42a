"""Character devices: ``<serial>``, ``<console>`` and ``<channel>``."""

from __future__ import annotations

from .base import XMLBuilder, xml_property


class CharDevice(XMLBuilder):
    """Fields shared by all character devices (libvirt's one chardev model)."""

    type: str | None = xml_property("./@type", required=True, choices=("pty", "file", "unix"))
    source_mode: str | None = xml_property("./source/@mode", choices=("bind", "connect"))
    source_path: str | None = xml_property("./source/@path")
    log_file: str | None = xml_property("./log/@file")
    log_append: bool | None = xml_property("./log/@append", bool)
    target_type: str | None = xml_property("./target/@type")
    target_name: str | None = xml_property("./target/@name")
    target_port: int | None = xml_property("./target/@port", int, minimum=0)

    def _validate(self) -> None:
        if self.type == "file" and self.source_path is None:
            raise self.error("type 'file' needs source_path")
        if self.log_append is not None and self.log_file is None:
            raise self.error("log_append needs log_file")


class Serial(CharDevice):
    """``<serial>``: a guest serial port; ``log_file`` keeps its output."""

    XML_NAME = "serial"


class Console(CharDevice):
    """``<console>``: usually ``target_type='serial'`` aliasing serial port 0."""

    XML_NAME = "console"


class Channel(CharDevice):
    """``<channel>``: e.g. the guest agent on ``target_type='virtio'``."""

    XML_NAME = "channel"
