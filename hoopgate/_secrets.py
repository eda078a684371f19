"""
Secrets from configuration: inline, from the environment, or from a file.

A L{Secret} never shows its value in C{repr}, C{str} or a log; code that
needs the value asks for it with L{Secret.reveal}.

test-case-name: tests.unit.test_config
"""

from __future__ import annotations

import os
from pathlib import Path

from attrs import field, frozen


class SecretUnavailableError(Exception):
    """
    A secret's source could not be read.
    """


@frozen
class Secret:
    """
    A value that must never reach logs, recordings or clients.

    Attributes:
        source: Where it comes from, for messages: C{inline}, C{env:NAME}
            or C{file:PATH}.
    """

    source: str
    _value: str = field(repr=False, alias="value")

    def reveal(self) -> str:
        """
        Return the secret value; keep it out of anything written down.
        """
        return self._value

    def __str__(self) -> str:
        return f"<secret from {self.source}>"


def secret_from_env(name: str) -> Secret:
    """
    Read a secret from environment variable C{name}.

    Raises:
        SecretUnavailableError: The variable is not set.
    """
    value = os.environ.get(name)
    if value is None:
        raise SecretUnavailableError(f"environment variable {name} is not set")

    return Secret(f"env:{name}", value=value)


def secret_from_file(path: str) -> Secret:
    """
    Read a secret from a file, without its trailing newline.

    Raises:
        SecretUnavailableError: The file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SecretUnavailableError(f"cannot read {path}: {e.strerror}") from None

    return Secret(f"file:{path}", value=text.rstrip("\r\n"))


def inline_secret(value: str) -> Secret:
    """
    Wrap a value written in the configuration itself.
    """
    return Secret("inline", value=value)
