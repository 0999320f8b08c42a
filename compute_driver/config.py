"""Loading and checking the configuration at service start.

oslo.config checks a value only when it is read, so a typo in a file would
surface minutes later in the middle of a request. :func:`load` reads every
registered option once, at start, and turns the first bad one into an
:class:`~compute_driver.exception.InvalidConfig` whose message is one line
naming the file, section, option, the bad value and what is allowed.
A config file that is a directory or not UTF-8 text is one such line too,
and :func:`unknown_options` lists the sections and options of the files that
nothing reads (typos), as ``oslo-config-validator`` would.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Sequence

from oslo_config import cfg

from compute_driver import conf as _conf  # registers every option on cfg.CONF
from compute_driver import exception

DEFAULT_CONFIG_FILE = "/etc/compute-driver/compute-driver.conf"
#: The libraries' option namespaces in the sample config (config-generator.conf).
LIBRARY_NAMESPACES = ("oslo.messaging", "oslo.log")
#: oslo.config.opts namespaces of the plugin families: their options are
#: registered when a plugin is loaded, but every installed plugin's are known
#: (an agent's file may hold [ovs] while it loads only linux_bridge).
PLUGIN_NAMESPACES = ("compute_driver.network", "compute_driver.storage")
#: Where oslo.messaging's transport drivers are registered.
DRIVERS_NAMESPACE = "oslo.messaging.drivers"
#: What a value of a secret option is shown as in errors.
MASK = "***"


def _config_files(conf: cfg.ConfigOpts) -> list[str]:
    files = list(conf.config_file or [])
    if conf.config_dir and os.path.isdir(conf.config_dir):
        files += sorted(
            os.path.join(conf.config_dir, name)
            for name in os.listdir(conf.config_dir)
            if name.endswith(".conf")
        )
    return files


def _raw_value(conf: cfg.ConfigOpts, section: str, option: str) -> tuple[str, str]:
    """The last file that sets section/option, and the raw text it gives."""
    found = ("<command line or default>", "?")
    for path in _config_files(conf):
        sections: dict = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except Exception:  # noqa: BLE001 - a parse error was reported earlier
            continue
        values = sections.get(section, {}).get(option)
        if values:
            found = (path, values[-1])
    return found


def check_options(conf: cfg.ConfigOpts) -> None:
    """Check every registered option of a loaded ``conf`` (those registered since too).

    For the plugin loader: a plugin's groups are registered after the files
    were read, and a bad value must still be one line naming the file.

    :raises InvalidConfig: the first invalid value.
    """
    try:
        conf.config_file  # noqa: B018 - registered only when conf is loaded
    except cfg.NoSuchOptError:
        return  # never loaded (tests, embedding): no file to check
    _check_every_option(conf)


def _check_every_option(conf: cfg.ConfigOpts) -> None:
    groups: list[str | None] = [None] + sorted(conf.list_all_sections())
    for group_name in groups:
        try:
            group = conf if group_name is None else getattr(conf, group_name)
        except cfg.NoSuchOptError:
            continue  # a section in a file that no code registered
        opt_names = conf._opts if group_name is None else conf._groups[group_name]._opts
        for name in list(opt_names):
            try:
                getattr(group, name)
            except (cfg.Error, ValueError) as exc:
                section = group_name or "DEFAULT"
                path, raw = _raw_value(conf, section, name)
                cause = str(exc.__cause__ or exc.__context__ or exc)
                if opt_names[name]["opt"].secret:
                    # NOTE: a password must not reach a terminal or a log.
                    cause, raw = cause.replace(raw, MASK) if raw else cause, MASK
                raise exception.InvalidConfig(
                    reason="%s: [%s] %s = %r is invalid: %s"
                    % (path, section, name, raw, cause.splitlines()[0] if cause else "")
                ) from exc


def load(
    argv: Sequence[str],
    prog: str,
    conf: cfg.ConfigOpts = cfg.CONF,
    default_config_files: list[str] | None = None,
) -> cfg.ConfigOpts:
    """Parse ``argv`` into ``conf`` and check every registered option.

    :param argv: command-line arguments without the program name.
    :param prog: the program name, for messages.
    :param conf: the ConfigOpts to fill (the global one in services).
    :param default_config_files: files read when no --config-file is given.
    :raises InvalidConfig: the files cannot be read or parsed, or a value
        is not valid; the message is one line.
    """
    if default_config_files is None:
        default_config_files = [DEFAULT_CONFIG_FILE] if os.path.exists(DEFAULT_CONFIG_FILE) else []
    try:
        conf(
            list(argv),
            project="compute-driver",
            prog=prog,
            default_config_files=default_config_files,
        )
    except cfg.ConfigFilesNotFoundError as exc:
        raise exception.InvalidConfig(
            reason="cannot read config file(s): %s" % ", ".join(exc.config_files)
        ) from exc
    except cfg.ConfigFileParseError as exc:
        raise exception.InvalidConfig(
            reason="%s: cannot parse: %s" % (exc.config_file, exc.msg)
        ) from exc
    except cfg.Error as exc:
        raise exception.InvalidConfig(reason=str(exc).splitlines()[0]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        # NOTE: oslo.config lets these through: a directory given as a file,
        # a binary or Latin-1 file.
        raise exception.InvalidConfig(
            reason=_unreadable_file(argv, default_config_files) or str(exc).splitlines()[0]
        ) from exc
    except SystemExit as exc:
        # NOTE: oslo.config hands options that are also command-line flags
        # (debug, ...) to argparse, which prints and exits on a bad value.
        raise exception.InvalidConfig(reason=_cli_opt_error(conf, argv)) from exc
    _check_every_option(conf)
    _check_ranges(conf)
    check_transport_url(conf)
    return conf


def check_transport_url(conf: cfg.ConfigOpts) -> None:
    """``[DEFAULT] transport_url`` parses and names an installed driver.

    NOTE: only its transport options are registered here (oslo.messaging
    registers the rest when the transport is made), and only the URL is
    read: control_exchange must not be read before transport.py sets its
    default.

    :raises InvalidConfig: one line, the password masked.
    """
    import oslo_messaging as messaging

    where = option_location(conf, "DEFAULT", "transport_url")
    try:
        url = messaging.TransportURL.parse(conf)  # registers and reads transport_url
        # NOTE: names only: loading every driver logs errors for the optional ones.
        drivers = {ep.name for ep in importlib.metadata.entry_points(group=DRIVERS_NAMESPACE)}
        # NOTE: as oslo.messaging does: "kombu+memory" is the kombu driver.
        driver = (url.transport or "").split("+")[0]
        if driver not in drivers:
            raise messaging.InvalidTransportURL(
                conf.transport_url or "",
                "no driver %r (installed: %s)" % (driver, ", ".join(sorted(drivers))),
            )
    except (messaging.InvalidTransportURL, ValueError) as exc:
        raise exception.InvalidConfig(
            reason="%s: [DEFAULT] transport_url is invalid: %s" % (where, masked(conf, exc))
        ) from exc


def masked(conf: cfg.ConfigOpts, exc: BaseException) -> str:
    """The first line of an oslo.messaging error, the transport URL (and password) masked."""
    reason = str(getattr(exc, "msg", None) or exc).splitlines()[0]
    url = getattr(conf, "transport_url", None)
    return reason.replace(url, MASK) if url else reason


def _check_ranges(conf: cfg.ConfigOpts) -> None:
    """Refuse a range whose low end is above its high end (``RANGES`` of an option module)."""
    for module in _conf.CORE_MODULES:
        group = getattr(module, "GROUP", None)
        for low, high in getattr(module, "RANGES", ()):
            section = group.name if group is not None else "DEFAULT"
            opts = conf if group is None else conf[section]
            if opts[low] > opts[high]:
                path, _raw = _raw_value(conf, section, low)
                if path.startswith("<"):
                    path, _raw = _raw_value(conf, section, high)
                raise exception.InvalidConfig(
                    reason="%s: [%s] %s = %s is more than %s = %s: the range is empty"
                    % (path, section, low, opts[low], high, opts[high])
                )


def _named_files(argv: Sequence[str], default_config_files: list[str]) -> list[str]:
    """The config files and files of config dirs that ``argv`` (or the defaults) name."""
    files: list[str] = []
    dirs: list[str] = []
    args = list(argv)
    for i, arg in enumerate(args):
        for flag, into in (("--config-file", files), ("--config-dir", dirs)):
            if arg == flag and i + 1 < len(args):
                into.append(args[i + 1])
            elif arg.startswith(flag + "="):
                into.append(arg.split("=", 1)[1])
    files = files or list(default_config_files)
    for directory in dirs:
        if os.path.isdir(directory):
            files += sorted(
                os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".conf")
            )
    return files


def _unreadable_file(argv: Sequence[str], default_config_files: list[str]) -> str | None:
    """One line on the first named config file that is not readable UTF-8 text."""
    for path in _named_files(argv, default_config_files):
        if os.path.isdir(path):
            return "%s: is a directory, not a config file" % path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            return "%s: cannot read: %s" % (path, exc.strerror or exc)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            return "%s: line %d: not UTF-8 text (byte 0x%02x)" % (path, line, data[exc.start])
    return None


def _known_options(conf: cfg.ConfigOpts) -> dict[str, set[str]]:
    """Section -> option names anything of ours reads (deprecated names included).

    The registered options, and the libraries' (oslo.messaging registers its
    own only when a transport is made) and the installed plugins': the
    namespaces of the sample config.
    """
    known: dict[str, set[str]] = {"DEFAULT": set()}

    def add(section: str, opt: cfg.Opt) -> None:
        known.setdefault(section, set()).update({opt.name, opt.dest})
        for old in opt.deprecated_opts:
            known.setdefault(old.group or section, set()).add(old.name or opt.dest)

    for info in conf._opts.values():
        add("DEFAULT", info["opt"])
    for name, group in conf._groups.items():
        known.setdefault(name, set())
        for info in group._opts.values():
            add(name, info["opt"])
    for entry_point in importlib.metadata.entry_points(group="oslo.config.opts"):
        if entry_point.name in LIBRARY_NAMESPACES + PLUGIN_NAMESPACES:
            for group, opts in entry_point.load()():
                section = getattr(group, "name", group) or "DEFAULT"
                for opt in opts:
                    add(section, opt)
    return known


def unknown_options(conf: cfg.ConfigOpts) -> list[str]:
    """One line per section or option of the loaded files that nothing reads.

    A typo (``[schedular]``, ``stat_path``) is otherwise silently ignored and
    the default used; services log these lines as warnings at start.
    """
    try:
        paths = _config_files(conf)
    except cfg.NoSuchOptError:
        return []  # a ConfigOpts never loaded from files (tests, embedding)
    known = _known_options(conf)
    lines = []
    for path in paths:
        sections: dict = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except Exception:  # noqa: BLE001 - a parse error was reported by load()
            continue
        for section, options in sections.items():
            if section not in known:
                lines.append("%s: [%s]: unknown section, ignored" % (path, section))
                continue
            for option in options:
                if option not in known[section]:
                    lines.append("%s: [%s] %s: unknown option, ignored" % (path, section, option))
    return lines


def _cli_opt_error(conf: cfg.ConfigOpts, argv: Sequence[str]) -> str:
    """Say which file value argparse refused (it only printed a usage line)."""
    files = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config-file"]
    for path in files:
        sections: dict = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except Exception:  # noqa: BLE001 - unreadable files were reported already
            continue
        for name, values in sections.get("DEFAULT", {}).items():
            info = conf._opts.get(name)
            if info is None or not info["cli"]:
                continue
            try:
                info["opt"].type(values[-1])
            except ValueError as exc:
                return "%s: [DEFAULT] %s = %r is invalid: %s" % (path, name, values[-1], exc)
    return "a command-line argument is invalid (see the usage line above)"


def option_location(conf: cfg.ConfigOpts, group: str, name: str) -> str:
    """Where ``[group] name`` was set: a file path, or 'default'."""
    path, _raw = _raw_value(conf, group, name)
    return path if not path.startswith("<") else "default"
