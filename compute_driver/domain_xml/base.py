"""The builder framework: declared members that both parse and write XML.

Modelled on virt-manager's ``virtinst.xmlbuilder``. A builder class names its
element (``XML_NAME``) and declares members with :func:`xml_property`,
:func:`xml_child` and :func:`xml_children`; declaration order is output order.
Parsing reads only what is declared and skips the rest, so the output of
``virsh dumpxml`` parses cleanly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from lxml import etree

_B = TypeVar("_B", bound="XMLBuilder")
_WORDS = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}


class XMLBuilderError(ValueError):
    """A value libvirt cannot accept, or XML that cannot be parsed."""


def _find(node: etree._Element, names: Sequence[str]) -> etree._Element | None:
    for name in names:
        node = node.find(name)
        if node is None:
            return None
    return node


def _ensure(node: etree._Element, names: Sequence[str]) -> etree._Element:
    for name in names:
        child = node.find(name)
        node = etree.SubElement(node, name) if child is None else child
    return node


class XMLMember:
    """A declared member: a descriptor that knows its XML path ``./a/b[/@attr]``."""

    def __init__(self, path: str, required: bool = False) -> None:
        self.path, self.required = path, required
        self.name = self.owner = ""
        self.names: list[str] = []
        self.attr: str | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.owner = name, owner.__name__
        xml_ns = getattr(owner, "XML_NS", None)
        ns = xml_ns[1] if xml_ns else None
        parts = [p for p in self.path.split("/") if p not in ("", ".")]
        self.attr = parts.pop()[1:] if parts and parts[-1].startswith("@") else None
        self.names = [f"{{{ns}}}{p}" if ns else p for p in parts]

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else obj.__dict__[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        value = self.convert(value)
        self.check(value)
        obj.__dict__[self.name] = value

    def fail(self, value: Any, why: str) -> XMLBuilderError:
        return XMLBuilderError(f"{self.owner}.{self.name}: {value!r} {why}")

    def default(self) -> Any:
        return None

    def convert(self, value: Any) -> Any:
        return value

    def check(self, value: Any) -> None:
        """Raise XMLBuilderError when the (converted) value is invalid."""

    def read(self, node: etree._Element) -> Any:
        raise NotImplementedError

    def write(self, node: etree._Element, value: Any) -> None:
        raise NotImplementedError

    def builders(self, value: Any) -> list[XMLBuilder]:
        """The nested builders held in ``value``."""
        return []


class XMLProperty(XMLMember):
    """A str/int/bool at an element's text or attribute; a list with ``multi``.

    A bool at an element path means "element present" (default False); at an
    attribute it is written ``on``/``off`` (None leaves it out).
    """

    def __init__(
        self,
        path: str,
        kind: type = str,
        *,
        required: bool = False,
        choices: Sequence[str] | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
        check: Callable[[str], str | None] | None = None,
        multi: bool = False,
    ) -> None:
        super().__init__(path, required)
        self.kind, self.choices, self.minimum, self.maximum = kind, choices, minimum, maximum
        self.validator, self.multi = check, multi

    @property
    def presence(self) -> bool:
        return self.kind is bool and self.attr is None

    def default(self) -> Any:
        return [] if self.multi else False if self.presence else None

    def convert(self, value: Any) -> Any:
        if value is None:
            return self.default()
        return [self._convert(v) for v in value] if self.multi else self._convert(value)

    def _convert(self, value: Any) -> Any:
        if self.kind is bool:
            if not isinstance(value, bool):
                raise self.fail(value, "is not a bool")
            return value
        if self.kind is int:
            try:
                if isinstance(value, bool):
                    raise TypeError
                return int(value)
            except (TypeError, ValueError):
                raise self.fail(value, "is not an integer") from None
        return str(value)

    def check(self, value: Any) -> None:
        for item in value if self.multi else [value]:
            if item is None or isinstance(item, bool):
                continue
            if self.choices is not None and item not in self.choices:
                raise self.fail(item, "is not one of " + ", ".join(map(repr, self.choices)))
            if self.minimum is not None and item < self.minimum:
                raise self.fail(item, f"is less than {self.minimum}")
            if self.maximum is not None and item > self.maximum:
                raise self.fail(item, f"is greater than {self.maximum}")
            why = self.validator(item) if self.validator else None
            if why:
                raise self.fail(item, why)

    def from_text(self, raw: str) -> Any:
        if self.kind is not bool:
            return self._convert(raw)
        if raw.lower() not in _WORDS:
            raise self.fail(raw, "is not an on/off word")
        return _WORDS[raw.lower()]

    def _text_of(self, el: etree._Element) -> str | None:
        raw: str | None = el.get(self.attr) if self.attr else el.text
        return raw

    def read(self, node: etree._Element) -> Any:
        if self.multi:
            found = node.findall("/".join(self.names))
            return [self.from_text(raw) for el in found if (raw := self._text_of(el)) is not None]
        el = _find(node, self.names)
        if self.presence:
            return el is not None
        raw = None if el is None else self._text_of(el)
        return self.default() if raw is None else self.from_text(raw)

    def write(self, node: etree._Element, value: Any) -> None:
        if value is None or (value is False and self.presence):
            return
        if self.multi:
            parent = _ensure(node, self.names[:-1])
            targets = [(etree.SubElement(parent, self.names[-1]), item) for item in value]
        else:
            targets = [(_ensure(node, self.names), value)]
        for el, item in targets:
            text = ("on" if item else "off") if isinstance(item, bool) else str(item)
            if self.attr:
                el.set(self.attr, text)
            elif not self.presence:
                el.text = text


class XMLChildren(XMLMember):
    """Nested builders of the given classes under ``path``, in document order.

    With ``single`` the value is one builder or None instead of a list.
    Child elements of other kinds are skipped on parse.
    """

    def __init__(
        self,
        *classes: type[XMLBuilder],
        path: str = ".",
        single: bool = False,
        required: bool = False,
    ) -> None:
        super().__init__(path, required)
        self.classes, self.single = classes, single

    def default(self) -> Any:
        return None if self.single else []

    def convert(self, value: Any) -> Any:
        return value if self.single else list(value or [])

    def check(self, value: Any) -> None:
        for item in self.builders(value):
            if not isinstance(item, self.classes):
                raise self.fail(item, "is not a " + " or ".join(c.__name__ for c in self.classes))

    def builders(self, value: Any) -> list[XMLBuilder]:
        return list(value or []) if not self.single else [] if value is None else [value]

    def read(self, node: etree._Element) -> Any:
        parent = _find(node, self.names)
        by_tag = {cls.xml_tag(): cls for cls in self.classes}
        found = [
            by_tag[el.tag].from_element(el)
            for el in (parent if parent is not None else [])
            if el.tag in by_tag
        ]
        return (found[0] if found else None) if self.single else found

    def write(self, node: etree._Element, value: Any) -> None:
        items = self.builders(value)
        if items:
            parent = _ensure(node, self.names)
            for item in items:
                item.build(parent)


def xml_property(path: str, kind: type = str, **kwargs: Any) -> Any:
    """Declare a scalar member; keywords as :class:`XMLProperty`."""
    return XMLProperty(path, kind, **kwargs)


def xml_child(cls: type[XMLBuilder], path: str = ".", required: bool = False) -> Any:
    """Declare one optional nested builder (a ``<cls.XML_NAME>`` under ``path``)."""
    return XMLChildren(cls, path=path, single=True, required=required)


def xml_children(*classes: type[XMLBuilder], path: str = ".") -> Any:
    """Declare a list of nested builders of any of ``classes`` under ``path``."""
    return XMLChildren(*classes, path=path)


def parse_xml(text: str | bytes) -> etree._Element:
    """Parse a document safely (no entities, no network), dropping blank text."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    try:
        return etree.fromstring(text.encode() if isinstance(text, str) else text, parser)
    except etree.XMLSyntaxError as exc:
        raise XMLBuilderError(f"cannot parse XML: {exc}") from exc


class XMLBuilder:
    """Base of every builder: keyword construction, validation, parse, write.

    Construct with keywords named after the declared members; unset members
    are None (False for presence flags, [] for lists). Values are checked on
    assignment, cross-member rules when writing. ``==`` compares every member.
    """

    XML_NAME: ClassVar[str] = ""
    XML_NS: ClassVar[tuple[str, str] | None] = None  # (prefix, uri)
    _members: ClassVar[tuple[XMLMember, ...]] = ()
    _names: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        members: dict[str, XMLMember] = {}
        for klass in reversed(cls.__mro__):
            members.update((k, v) for k, v in vars(klass).items() if isinstance(v, XMLMember))
        cls._members, cls._names = tuple(members.values()), frozenset(members)

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - self._names)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected arguments: {', '.join(unknown)}"
            )
        for member in self._members:
            self.__dict__[member.name] = member.default()
        for name, value in kwargs.items():
            setattr(self, name, value)

    if not TYPE_CHECKING:  # NOTE: hidden from mypy so it still flags unknown attributes.

        def __setattr__(self, name: str, value: Any) -> None:
            # An undeclared attribute would be silently left out of the XML.
            if not name.startswith("_") and name not in self._names:
                raise AttributeError(f"{type(self).__name__} has no XML member {name!r}")
            super().__setattr__(name, value)

    @classmethod
    def declared(cls) -> tuple[str, ...]:
        """Names of the declared members, in output order."""
        return tuple(m.name for m in cls._members)

    @classmethod
    def members(cls) -> tuple[XMLMember, ...]:
        """The declared member descriptors, in output order."""
        return cls._members

    @classmethod
    def xml_tag(cls) -> str:
        """The element's tag in lxml's ``{uri}name`` form."""
        return f"{{{cls.XML_NS[1]}}}{cls.XML_NAME}" if cls.XML_NS else cls.XML_NAME

    def non_default(self) -> dict[str, Any]:
        """The members whose value differs from the unset default."""
        return {m.name: v for m in self._members if (v := self.__dict__[m.name]) != m.default()}

    def walk(self) -> Iterator[XMLBuilder]:
        """Yield this builder and every nested builder, depth first."""
        yield self
        for member in self._members:
            for child in member.builders(self.__dict__[member.name]):
                yield from child.walk()

    def validate(self) -> None:
        """Raise XMLBuilderError for a missing or invalid value (nested ones excluded)."""
        for member in self._members:
            value = self.__dict__[member.name]
            if member.required and value is None:
                raise XMLBuilderError(f"{type(self).__name__}.{member.name} is required")
            member.check(value)
        self._validate()

    def _validate(self) -> None:
        """Cross-member rules; subclasses raise ``self.error(...)``."""

    def error(self, message: str) -> XMLBuilderError:
        return XMLBuilderError(f"{type(self).__name__}: {message}")

    def build(self, parent: etree._Element | None = None) -> etree._Element:
        """Validate and write this builder as a new element (appended to ``parent``)."""
        self.validate()
        ns = self.XML_NS
        nsmap = dict([ns]) if ns and (parent is None or parent.nsmap.get(ns[0]) != ns[1]) else None
        tag = self.xml_tag()
        el = (
            etree.Element(tag, nsmap=nsmap)
            if parent is None
            else etree.SubElement(parent, tag, nsmap=nsmap)
        )
        for member in self._members:
            member.write(el, self.__dict__[member.name])
        return el

    def to_string(self) -> str:
        """Pretty-printed XML; equal objects give identical text."""
        return str(etree.tostring(self.build(), pretty_print=True, encoding="unicode"))

    @classmethod
    def from_element(cls: type[_B], el: etree._Element) -> _B:
        """Read every declared member from ``el``; values are not validated."""
        if el.tag != cls.xml_tag():
            raise XMLBuilderError(f"{cls.__name__}: expected <{cls.XML_NAME}>, got <{el.tag}>")
        obj = cls.__new__(cls)
        for member in cls._members:
            obj.__dict__[member.name] = member.read(el)
        return obj

    @classmethod
    def parse(cls: type[_B], text: str | bytes) -> _B:
        """Parse a document whose root is this builder's element."""
        return cls.from_element(parse_xml(text))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(self.__dict__[m.name] == other.__dict__[m.name] for m in self._members)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.non_default().items())
        return f"{type(self).__name__}({args})"
