"""
Reading YAML with line numbers, and validating it key by key.

Every error names the key path and the line it is on, so an operator can
go straight to the mistake; an unknown key's error lists the keys known
at its place.  Plugins read their own keys with the same L{ConfigReader},
so their errors look the same.

A reader may defer secrets (C{lazy_secrets}): for tools that read the
configuration without running the gateway, a secret's source is then
read only when something reveals it.

test-case-name: tests.unit.test_config
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from attrs import field, frozen

from hoopgate._secrets import (
    Secret,
    SecretUnavailableError,
    inline_secret,
    secret_from_env,
    secret_from_file,
)


class ConfigError(Exception):
    """
    The configuration is not valid.  The message names key and line.

    Args:
        message: What is wrong, and where.
        source: The file the message already names, if it names one.

    Attributes:
        source: The file the message names, or C{""}.
    """

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(message)
        self.source = source

    def in_file(self, source: str) -> ConfigError:
        """
        This error naming the file C{source} first, unless it names a
        file already.
        """
        if self.source:
            return self
        return ConfigError(f"{source}: {self}", source)


class _Map(dict[str, Any]):
    """
    A mapping that remembers the line of each key.
    """

    line: int = 0
    key_lines: dict[str, int]


class _Seq(list[Any]):
    """
    A sequence that remembers the line of each item.
    """

    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """
    A safe loader whose mappings and sequences know their lines.
    """


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    result = _Map()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(f"line {key_node.start_mark.line + 1}: keys must be text")
        if key in result:
            raise ConfigError(
                f"{key} (line {key_node.start_mark.line + 1}): duplicate key"
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1

    return result


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(n, deep=True) for n in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [n.start_mark.line + 1 for n in node.value]
    return result


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_map,
)
_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
    _construct_seq,
)


def load_yaml(text: str, source: str, *, lazy_secrets: bool = False) -> ConfigReader:
    """
    Parse YAML text into a reader for its top-level mapping.

    Args:
        text: The YAML.
        source: Its file name, for messages.
        lazy_secrets: Read secrets only when revealed (see
            L{ConfigReader}).

    Raises:
        ConfigError: The text is not YAML, or its top is not a mapping.
    """
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - safe loader
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        raise ConfigError(f"{source} (line {line}): {e.problem}", source) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {e}", source) from None

    if not isinstance(data, _Map):
        raise ConfigError(f"{source}: the top level must be a mapping", source)

    return ConfigReader(data, "", 1, lazy_secrets=lazy_secrets)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_MISSING: Any = object()


class ConfigReader:
    """
    Reads one mapping of the configuration, key by key.

    Each accessor records the key as known; L{done} then refuses any key
    nobody asked for, so a misspelt key is an error, never ignored.

    Args:
        data: The mapping.
        path: Its dotted key path (C{""} for the top).
        line: The line it starts on.
        lazy_secrets: Whether L{secret} checks only the form of a secret
            and leaves reading its source (a file, a variable) to the
            first L{Secret.reveal}, for tools that use none; nested
            readers inherit it.
    """

    def __init__(
        self, data: dict[str, Any], path: str, line: int, *, lazy_secrets: bool = False
    ) -> None:
        self._data = data
        self.path = path
        self.line = line
        self.lazy_secrets = lazy_secrets
        self._seen: set[str] = set()
        # Keys asked about, present or not: the known keys an unknown
        # key's error lists.
        self._asked: set[str] = set()

    def _key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int:
        """
        The line of C{key}, or of this mapping when it is absent.
        """
        lines = getattr(self._data, "key_lines", {})
        return int(lines.get(key, self.line))

    def error(self, key: str, message: str) -> ConfigError:
        """
        Build an error about C{key} naming its path and line.
        """
        return ConfigError(
            f"{self._key_path(key)} (line {self.line_of(key)}): {message}"
        )

    def has(self, key: str) -> bool:
        """
        Whether C{key} is present.
        """
        self._asked.add(key)
        return key in self._data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """
        The value of C{key} as parsed, or C{default}.
        """
        self._seen.add(key)
        self._asked.add(key)
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def string(self, key: str, default: Any = _MISSING) -> str:
        """
        A non-empty text value.
        """
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value  # type: ignore[no-any-return]
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be non-empty text")
        return value

    def integer(
        self, key: str, default: Any = _MISSING, low: int = 0, high: int = 2**31
    ) -> int:
        """
        A whole number within C{low} and C{high}.
        """
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "must be a whole number")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        """
        C{true} or C{false}.
        """
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def choice(
        self, key: str, choices: tuple[str, ...], default: Any = _MISSING
    ) -> str:
        """
        One of C{choices}.
        """
        value = self.raw(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}")
        return str(value)

    def duration(self, key: str, default: Any = _MISSING) -> float:
        """
        A duration in seconds, written C{90s}, C{10m}, C{8h}, C{2d} or as
        a plain number of seconds.
        """
        value = self.raw(key, default)
        if isinstance(value, bool):
            raise self.error(key, "must be a duration such as 30s, 10m or 8h")
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            match = _DURATION.match(str(value))
            if match is None:
                raise self.error(key, "must be a duration such as 30s, 10m or 8h")
            seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
        if seconds <= 0:
            raise self.error(key, "must be more than zero")
        return seconds

    def strings(self, key: str, default: Any = _MISSING) -> tuple[str, ...]:
        """
        A list of non-empty texts; a single text counts as a list of one.
        """
        value = self.raw(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, str) and v for v in value
        ):
            raise self.error(key, "must be a list of non-empty texts")
        return tuple(value)

    def secret(self, key: str, default: Any = _MISSING) -> Secret:
        """
        A secret: inline text, C{{env: NAME}} or C{{file: PATH}}.
        """
        value = self.raw(key, default)
        if isinstance(value, Secret):
            return value
        if self.lazy_secrets:
            return self._lazy_secret(key, value)
        try:
            return _read_secret(value)
        except SecretUnavailableError as e:
            raise self.error(key, str(e)) from None
        except ValueError:
            raise self.error(key, "must be text, {env: NAME} or {file: PATH}") from None

    def _lazy_secret(self, key: str, value: Any) -> Secret:
        try:
            source = _secret_source(value)
        except ValueError:
            raise self.error(key, "must be text, {env: NAME} or {file: PATH}") from None

        def read() -> Secret:
            try:
                return _read_secret(value)
            except SecretUnavailableError as e:
                raise self.error(key, str(e)) from None

        return LazySecret(source, value="", read=read)

    def _nested(self, data: dict[str, Any], path: str, line: int) -> ConfigReader:
        return ConfigReader(data, path, line, lazy_secrets=self.lazy_secrets)

    def section(self, key: str, required: bool = False) -> ConfigReader:
        """
        A nested mapping (empty when absent and not required).
        """
        value = self.raw(key, _MISSING if required else None)
        if value is None:
            empty = _Map()
            empty.line, empty.key_lines = self.line_of(key), {}
            return self._nested(empty, self._key_path(key), self.line_of(key))
        if not isinstance(value, dict):
            raise self.error(key, "must be a mapping")
        return self._nested(value, self._key_path(key), getattr(value, "line", 0))

    def sections(self, key: str) -> Iterator[ConfigReader]:
        """
        Each mapping in a list of mappings (none when absent).
        """
        value = self.raw(key, None)
        if value is None:
            return
        if not isinstance(value, list):
            raise self.error(key, "must be a list")
        lines = getattr(value, "item_lines", [self.line_of(key)] * len(value))
        for index, item in enumerate(value):
            path = f"{self._key_path(key)}[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{path} (line {lines[index]}): must be a mapping")
            yield self._nested(item, path, lines[index])

    def done(self) -> None:
        """
        Refuse keys that nobody read, listing the keys known here.
        """
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            known = ", ".join(sorted(self._asked)) or "none"
            raise self.error(unknown[0], f"is not a known key (known: {known})")


@frozen
class LazySecret(Secret):
    """
    A secret whose source is read each time it is revealed, never when
    the configuration is.
    """

    _read: Callable[[], Secret] = field(repr=False, eq=False, alias="read")

    def reveal(self) -> str:
        """
        Read the source and return the secret value.

        Raises:
            ConfigError: The source cannot be read; naming key and line.
        """
        return self._read().reveal()


def _secret_source(value: Any) -> str:
    """
    Where a secret written as C{value} comes from, without reading it.

    Raises:
        ValueError: C{value} is not a secret's form.
    """
    if isinstance(value, str):
        return "inline"
    if isinstance(value, dict) and len(value) == 1:
        ((kind, where),) = value.items()
        if kind in ("env", "file") and isinstance(where, str):
            return f"{kind}:{where}"
    raise ValueError(value)


def _read_secret(value: Any) -> Secret:
    if isinstance(value, str):
        return inline_secret(value)
    if isinstance(value, dict) and len(value) == 1:
        ((kind, where),) = value.items()
        if kind == "env" and isinstance(where, str):
            return secret_from_env(where)
        if kind == "file" and isinstance(where, str):
            return secret_from_file(where)
    raise ValueError(value)
