"""Loading and checking the configuration at service start.

oslo.config checks a value only when it is read, so a typo in a file would
surface minutes later in the middle of a request. :func:`load` reads every
registered option once, at start, and turns the first bad one into an
:class:`~compute_driver.exception.InvalidConfig` whose message is one line
naming the file, section, option, the bad value and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from oslo_config import cfg

from compute_driver import conf as _conf  # noqa: F401 - registers every option on cfg.CONF
from compute_driver import exception

DEFAULT_CONFIG_FILE = "/etc/compute-driver/compute-driver.conf"


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
                cause = exc.__cause__ or exc.__context__ or exc
                raise exception.InvalidConfig(
                    reason="%s: [%s] %s = %r is invalid: %s" % (path, section, name, raw, cause)
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
    except SystemExit as exc:
        # NOTE: oslo.config hands options that are also command-line flags
        # (debug, ...) to argparse, which prints and exits on a bad value.
        raise exception.InvalidConfig(reason=_cli_opt_error(conf, argv)) from exc
    _check_every_option(conf)
    return conf


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
