"""
Reading YAML with line numbers, and validating it key by key.

Every error names the key path and the line it is on, so an operator can
go straight to the mistake.  Plugins read their own keys with the same
L{ConfigReader}, so their errors look the same.

test-case-name: tests.unit.test_config
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

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
    """


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


def load_yaml(text: str, source: str) -> ConfigReader:
    """
    Parse YAML text into a reader for its top-level mapping.

    Raises:
        ConfigError: The text is not YAML, or its top is not a mapping.
    """
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - safe loader
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        raise ConfigError(f"{source} (line {line}): {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {e}") from None

    if not isinstance(data, _Map):
        raise ConfigError(f"{source}: the top level must be a mapping")

    return ConfigReader(data, "", 1)


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
    """

    def __init__(self, data: dict[str, Any], path: str, line: int) -> None:
        self._data = data
        self.path = path
        self.line = line
        self._seen: set[str] = set()

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
        return key in self._data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """
        The value of C{key} as parsed, or C{default}.
        """
        self._seen.add(key)
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
        try:
            return _read_secret(value)
        except SecretUnavailableError as e:
            raise self.error(key, str(e)) from None
        except ValueError:
            raise self.error(key, "must be text, {env: NAME} or {file: PATH}") from None

    def section(self, key: str, required: bool = False) -> ConfigReader:
        """
        A nested mapping (empty when absent and not required).
        """
        value = self.raw(key, _MISSING if required else None)
        if value is None:
            empty = _Map()
            empty.line, empty.key_lines = self.line_of(key), {}
            return ConfigReader(empty, self._key_path(key), self.line_of(key))
        if not isinstance(value, dict):
            raise self.error(key, "must be a mapping")
        return ConfigReader(value, self._key_path(key), getattr(value, "line", 0))

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
            yield ConfigReader(item, path, lines[index])

    def done(self) -> None:
        """
        Refuse keys that nobody read.
        """
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise self.error(unknown[0], "is not a known key")


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
