"""
Guardrails: what a session may do once it is open, in any protocol.

A guardrail rule names whom it is about (subjects, groups), where
(targets), how it acts (C{enforce} or C{dry-run}) and what it refuses:
a C{deny} block of conditions of which any one refuses, an C{allow_only}
block of conditions that must all hold, or both.  One rule can hold
conditions for each kind of event:

  - statements (L{StatementReceived}, judged part by part through the
    plugin's classification): C{commands}, C{effects}, C{shapes},
    C{reads}, C{writes};
  - command lines (L{CommandReceived}): C{command_lines} (globs),
    C{command_patterns} (regular expressions), C{shell};
  - HTTP requests (L{HttpRequestReceived}): C{methods}, C{paths}
    (globs), C{requests} (C{"METHOD /path/glob"});
  - file operations (L{FileOperationRequested}, SFTP): C{file_paths}
    (globs) and C{file_operations}, which together are one condition;
  - forwards (L{ForwardRequested}): C{destinations} (C{host:port}, the
    host a name glob or an address range).

Conditions for one kind say nothing about events of another kind.  Every
rule that applies to the session is evaluated; the event is refused when
any enforce rule fails it, and every failing rule is reported together.
Dry-run rules that fail it are noted on the verdict and never change it.
A statement part the plugin could not classify (its C{problem} is set),
or an HTTP path that servers may read in more than one way, fails every
rule that applies: uncertainty fails closed.  C{docs/configuration.md}
is the user's reference for all of this.

test-case-name: tests.unit.test_guardrails
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import lru_cache
from typing import Final, TypeVar
from urllib.parse import unquote

from attrs import field, frozen
from twisted.logger import Logger
from zope.interface import implementer

from hoopgate._chain import Context
from hoopgate._configreader import ConfigReader
from hoopgate._events import (
    CommandReceived,
    Event,
    FileOperationRequested,
    ForwardRequested,
    HttpRequestReceived,
    StatementPart,
    StatementReceived,
)
from hoopgate._identity import Identity
from hoopgate._interfaces import IInterceptor
from hoopgate._scope import check_scope_targets, in_scope
from hoopgate._verdicts import ALLOW, Allow, Deny, DenyReason, Note, Verdict

MODES: Final = ("enforce", "dry-run")

#: What a statement part's C{effect} may be.
EFFECTS: Final = frozenset(
    {"read", "write", "ddl", "privilege", "transaction", "session", "unknown"}
)

#: The risky shapes classifiers report, whatever the SQL dialect.
SHAPES: Final = frozenset(
    {
        "update_without_where",
        "delete_without_where",
        "truncate",
        "drop",
        "grant",
        "revoke",
        "copy_program",
        "copy_to",
        "copy_from",
        "writing_cte",
        "select_into",
        "lock",
        "function_call",
        "dynamic_sql",
    }
)

#: What a file operation may be (L{FileOperationRequested.operations}).
FILE_OPERATIONS: Final = frozenset(
    {
        "read",
        "write",
        "remove",
        "rename",
        "mkdir",
        "rmdir",
        "setstat",
        "symlink",
        "link",
        "list",
        "stat",
    }
)

#: The most reasons one rule reports about one event.
MAX_REASONS: Final = 10

_T = TypeVar("_T")

_PLAIN_NAME: Final = re.compile(r"[a-z_][a-z0-9_$]*")
_COMMAND_WORDS: Final = re.compile(r"[A-Za-z_]+(?: [A-Za-z_]+)*")
_METHOD: Final = re.compile(r"[A-Za-z]+")
_HOST_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_NUMERIC_LABEL: Final = re.compile(r"0x[0-9a-f]*|[0-9]+")
_HOST_GLOB: Final = re.compile(r"[a-z0-9_.*?-]+")

# What a wildcard of a command-line glob never matches: the characters
# with which a shell ends a command, starts another, substitutes one or
# redirects, so that "ls *" cannot stretch to "ls; rm -rf /".
_SHELL_CONTROL: Final = r";&|<>`$()\n\r\x00"


# Relation names.


def _quoted(name: str) -> str:
    if _PLAIN_NAME.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _name_parts(text: str) -> list[tuple[str, bool]] | None:
    """
    Split a dotted name into its parts, each with whether it was quoted;
    C{None} when the quotes or dots do not add up.
    """
    parts = []
    position = 0
    while True:
        if text.startswith('"', position):
            end = position + 1
            while True:
                end = text.find('"', end)
                if end < 0:
                    return None
                if not text.startswith('""', end):
                    break
                end += 2
            name = text[position + 1 : end].replace('""', '"')
            if not name:
                return None
            parts.append((name, True))
            position = end + 1
        else:
            end = text.find(".", position)
            end = len(text) if end < 0 else end
            name = text[position:end]
            if not name or '"' in name:
                return None
            parts.append((name, False))
            position = end

        if position == len(text):
            return parts
        if text[position] != ".":
            return None
        position += 1


@lru_cache(maxsize=4096)
def _relation(text: str) -> tuple[str | None, str] | None:
    """
    A classified relation as (schema, name) in their rendered forms, the
    schema C{None} when the classifier could not tell it; C{None} when
    the text is not a name.  A database part in front is dropped.
    """
    parts = _name_parts(text)
    if parts is None:
        return None

    names = [_quoted(name) if quoted else name for name, quoted in parts]
    if len(names) == 1:
        return None, names[0]
    return names[-2], names[-1]


@frozen
class RelationPattern:
    """
    A relation name in a rule, matched against classified relations.

    Names are compared case-sensitively in the classifier's rendering:
    each part as a plain lower-case identifier or double-quoted.  A bare
    name (C{canary}) stands for that name in any schema; C{public.*} for
    every relation of a schema; C{*} for every relation.

    Attributes:
        text: The pattern as written.
        schema: The rendered schema, or C{None} for any schema.
        name: The rendered name, or C{*} for any name.
    """

    text: str
    schema: str | None
    name: str

    def _name_matches(self, name: str) -> bool:
        return self.name in ("*", name)

    def could_match(self, relation: str) -> bool:
        """
        Whether C{relation} may be this pattern's relation: what deny
        conditions ask.  A relation whose schema is unknown may be in any
        schema; text that is not a name may be anything.
        """
        parsed = _relation(relation)
        if parsed is None:
            return True
        schema, name = parsed
        # C{schema.*}: every relation of a schema (a renamed schema).
        if name != "*" and not self._name_matches(name):
            return False
        return self.schema is None or schema is None or schema == self.schema

    def surely_matches(self, relation: str) -> bool:
        """
        Whether C{relation} is certainly this pattern's relation: what
        allow-lists ask.  A relation whose schema is unknown matches only
        a pattern for any schema; text that is not a name matches none.
        """
        parsed = _relation(relation)
        if parsed is None:
            return False
        schema, name = parsed
        if not self._name_matches(name):
            return False
        return self.schema is None or schema == self.schema


def parse_relation_pattern(text: str) -> RelationPattern:
    """
    Read a relation pattern as a rule writes it.

    Raises:
        ValueError: It is not one; the message says why.
    """
    parts = _name_parts(text)
    if parts is None or len(parts) > 2:
        raise ValueError(f"{text!r} is not a relation name (schema.name or name)")

    names = []
    for name, quoted in parts:
        if quoted:
            names.append(_quoted(name))
        elif name == "*" or _PLAIN_NAME.fullmatch(name):
            names.append(name)
        else:
            raise ValueError(
                f"{name!r} in {text!r} must be written in lower case, as "
                f"PostgreSQL folds unquoted names, or quoted: {_quoted(name)}"
            )

    if len(names) == 1:
        return RelationPattern(text, None, names[0])
    schema = None if names[0] == "*" else names[0]
    return RelationPattern(text, schema, names[1])


# Globs.


def _glob(text: str, star: str, any_one: str, deep: str | None) -> str:
    pieces = []
    position = 0
    while position < len(text):
        if deep is not None and text.startswith("**", position):
            pieces.append(deep)
            position += 2
            continue
        char = text[position]
        if char == "*":
            pieces.append(star)
        elif char == "?":
            pieces.append(any_one)
        else:
            pieces.append(re.escape(char))
        position += 1
    return "".join(pieces)


@frozen
class CommandGlob:
    """
    A glob over a whole command line.

    C{*} matches any run of characters and C{?} any one, except the
    shell's control characters (C{; & | < > ` $ ( )} and line breaks),
    which match only where the glob writes them.

    Attributes:
        text: The glob as written.
        regex: The compiled form, matched against the whole line.
    """

    text: str
    regex: re.Pattern[str] = field(eq=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> CommandGlob:
        """
        Compile a command-line glob.
        """
        control = f"[^{_SHELL_CONTROL}]"
        return cls(text, re.compile(_glob(text, control + "*", control, None)))

    def matches(self, line: str) -> bool:
        """
        Whether the whole of C{line} matches.
        """
        return self.regex.fullmatch(line) is not None


@frozen
class CommandPattern:
    """
    A regular expression over a whole command line (anchored at both
    ends, Python syntax).

    Attributes:
        text: The expression as written.
        regex: The compiled form.
    """

    text: str
    regex: re.Pattern[str] = field(eq=False, repr=False)

    def matches(self, line: str) -> bool:
        """
        Whether the whole of C{line} matches.
        """
        return self.regex.fullmatch(line) is not None


def _trim(path: str) -> str:
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


@frozen
class PathGlob:
    """
    A glob over an HTTP request path (without the query string).

    C{*} and C{?} stay within one segment; C{**} crosses segments, and a
    trailing C{/**} also matches the path above it (C{/admin/**} matches
    C{/admin}).  A trailing slash is ignored on both sides; case counts.

    Attributes:
        text: The glob as written.
        regex: The compiled form.
    """

    text: str
    regex: re.Pattern[str] = field(eq=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> PathGlob:
        """
        Compile a path glob.

        Raises:
            ValueError: It does not start with C{/}.
        """
        if not text.startswith("/"):
            raise ValueError(f"path glob {text!r} must start with /")

        body = _trim(text)
        tail = ""
        if body.endswith("/**"):
            body, tail = body[:-3], "(?:/.*)?"
        pattern = _glob(body, "[^/]*", "[^/]", ".*") + tail
        return cls(text, re.compile(pattern, re.DOTALL))

    def matches(self, path: str) -> bool:
        """
        Whether the decoded C{path} matches.
        """
        return self.regex.fullmatch(_trim(path)) is not None


@frozen
class RequestPattern:
    """
    A method and a path glob that must both match.

    Attributes:
        text: As written, C{"DELETE /customers/*"}.
        method: The method in upper case, or C{*} for any.
        path: The path glob.
    """

    text: str
    method: str
    path: PathGlob

    def matches(self, method: str, path: str) -> bool:
        """
        Whether a request with C{method} on C{path} matches.
        """
        return self.method in ("*", method) and self.path.matches(path)


def file_path(raw: str) -> str:
    """
    Why a file path a client sent may name something other than what
    rules see, or C{""}: paths are judged as sent, so only absolute ones
    without dot or empty segments can be matched for sure.
    """
    if "\x00" in raw:
        return "it holds NUL"
    if not raw.startswith("/"):
        return "it is not absolute"
    segments = raw.split("/")[1:]
    if "." in segments or ".." in segments:
        return "it has dot segments"
    if "" in segments[:-1]:
        return "it has an empty segment"
    return ""


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(host: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def destination_host(raw: str) -> tuple[str | _Address, str]:
    """
    A forward's host as rules match it: an address, or a name in lower
    case without a trailing dot.

    Returns:
        The host, and why the target might resolve it other than rules
        read it (empty when it would not): numbers that are not a plain
        address (C{127.1}, C{0x7f000001}), characters no host name has.
    """
    address = _address(raw)
    if address is not None:
        return address, ""

    name = raw.lower().removesuffix(".")
    labels = name.split(".")
    if all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        return name, "it may be read as an address"
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return name, "it is not a host name"
    return name, ""


@frozen
class DestinationPattern:
    """
    A forward destination in a rule: C{HOST:PORT}.

    HOST is a glob (C{*.internal}, C{10.1.2.*}; case-insensitive; C{*}
    within one label, and C{*} alone any host), an address or an address
    range (C{10.0.0.0/8}, C{[fd00::]/8}); PORT a number or C{*}.  A
    host name may resolve to any address, so it could match every range
    (what deny conditions ask) and surely matches none (what allow-lists
    ask).

    Attributes:
        text: As written.
        network: The range, for an address pattern.
        name: The compiled name glob, for a name pattern.
        port: The port, or C{None} for any.
    """

    text: str
    network: _Network | None
    name: re.Pattern[str] | None = field(eq=False, repr=False)
    port: int | None

    @classmethod
    def parse(cls, text: str) -> DestinationPattern:
        """
        Read a destination as a rule writes it.

        Raises:
            ValueError: It is not one; the message says why.
        """
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} is not HOST:PORT")
        port = _port(text, port_text)

        bare = host.removeprefix("[").replace("]", "", 1)
        try:
            network = ipaddress.ip_network(bare)
        except ValueError:
            network = None
        if network is not None:
            return cls(text, network, None, port)

        glob = host.lower()
        if glob == "*":
            return cls(text, None, re.compile(".*", re.DOTALL), port)
        if not _HOST_GLOB.fullmatch(glob):
            raise ValueError(
                f"{host!r} in {text!r} is neither a host glob nor an address"
            )
        regex = re.compile(_glob(glob, "[^.]*", "[^.]", None))
        return cls(text, None, regex, port)

    def _host(self, host: str | _Address, surely: bool) -> bool:
        if self.name is not None:
            return self.name.fullmatch(str(host)) is not None
        if isinstance(host, str):
            return not surely
        assert self.network is not None
        return host.version == self.network.version and host in self.network

    def matches(self, host: str | _Address, port: int, *, surely: bool) -> bool:
        """
        Whether a forward to C{host} (read by L{destination_host}) and
        C{port} may be (C{surely} false) or surely is this destination.
        """
        if self.port is not None and self.port != port:
            return False
        return self._host(host, surely)


def _port(text: str, port: str) -> int | None:
    if port == "*":
        return None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} has no valid port (a number or *)")
    return int(port)


# Conditions, by kind of event.


@frozen
class StatementConditions:
    """
    Conditions on one classified statement part; C{None} for a key the
    rule does not give.

    Attributes:
        commands: Command words, upper case.
        effects: Effects.
        shapes: Shapes.
        reads: Relations read.
        writes: Relations written.
    """

    commands: frozenset[str] | None = None
    effects: frozenset[str] | None = None
    shapes: frozenset[str] | None = None
    reads: tuple[RelationPattern, ...] | None = None
    writes: tuple[RelationPattern, ...] | None = None

    @property
    def present(self) -> bool:
        """
        Whether any key is given.
        """
        keys = (self.commands, self.effects, self.shapes, self.reads, self.writes)
        return any(key is not None for key in keys)

    def hits(self, part: StatementPart) -> list[str]:
        """
        The conditions that hold for C{part}, as reasons to deny it.  A
        part of effect C{unknown} may do whatever a condition names
        (C{SELECT f()} may drop or write any table), so it holds for
        every deny list.
        """
        if part.effect == "unknown":
            why = f" ({part.reason})" if part.reason else ""
            return [f"its effect is unknown{why}, so it may do what the rule denies"]
        found = []
        command = part.command.upper()
        if self.commands is not None and command in self.commands:
            found.append(f"command {command}")
        if self.effects is not None and part.effect in self.effects:
            found.append(f"effect {part.effect}")
        if self.shapes is not None:
            found.extend(f"shape {s}" for s in part.shapes if s in self.shapes)
        for verb, patterns, relations in self._relations(part):
            found.extend(
                f"{verb} {r}"
                for r in relations
                if any(p.could_match(r) for p in patterns)
            )
        return found

    def misses(self, part: StatementPart) -> list[str]:
        """
        The conditions that do not hold for C{part}, as reasons to deny
        it.  A part of effect C{unknown} holds for no allow-list that
        does not list that effect: what it does cannot be checked.
        """
        found = []
        command = part.command.upper()
        effects = self.effects or frozenset()
        if part.effect == "unknown" and "unknown" not in effects:
            found.append("effect unknown is not allowed")
        elif self.effects is not None and part.effect not in self.effects:
            found.append(f"effect {part.effect} is not allowed")
        if self.commands is not None and command not in self.commands:
            found.append(f"command {command or '(none)'} is not allowed")
        if self.shapes is not None:
            found.extend(
                f"shape {s} is not allowed" for s in part.shapes if s not in self.shapes
            )
        for verb, patterns, relations in self._relations(part):
            found.extend(
                f"{verb} {r}, which is not allowed"
                for r in relations
                if not any(p.surely_matches(r) for p in patterns)
            )
        return found

    def _relations(
        self, part: StatementPart
    ) -> Iterable[tuple[str, tuple[RelationPattern, ...], tuple[str, ...]]]:
        if self.reads is not None:
            yield "reads", self.reads, part.reads
        if self.writes is not None:
            yield "writes", self.writes, part.writes


@frozen
class CommandConditions:
    """
    Conditions on a command line; C{None} for a key the rule does not
    give.  An empty command line is an interactive shell, which only
    C{shell} matches.

    Attributes:
        lines: Globs over the whole line.
        patterns: Regular expressions over the whole line.
        shell: Whether the condition is about interactive shells.
    """

    lines: tuple[CommandGlob, ...] | None = None
    patterns: tuple[CommandPattern, ...] | None = None
    shell: bool | None = None

    @property
    def present(self) -> bool:
        """
        Whether any key is given.
        """
        return any(k is not None for k in (self.lines, self.patterns, self.shell))

    def _matching(self, line: str) -> list[str]:
        found = [
            f"command line matches {g.text!r}"
            for g in self.lines or ()
            if g.matches(line)
        ]
        found.extend(
            f"command line matches pattern {p.text!r}"
            for p in self.patterns or ()
            if p.matches(line)
        )
        return found

    def hits(self, line: str) -> list[str]:
        """
        The conditions that hold for C{line}, as reasons to deny it.
        """
        if not line:
            return ["interactive shell"] if self.shell else []
        return self._matching(line)

    def misses(self, line: str) -> list[str]:
        """
        The conditions that do not hold for C{line}: the globs and
        patterns together are one condition, met by any of them.
        """
        if not line:
            return [] if self.shell else ["interactive shell is not allowed"]
        if self._matching(line):
            return []
        return ["command line is not on the allow-list"]


@frozen
class HttpConditions:
    """
    Conditions on an HTTP request; C{None} for a key the rule does not
    give.

    Attributes:
        methods: Methods, upper case.
        paths: Globs over the decoded path.
        requests: Method and path pairs.
    """

    methods: frozenset[str] | None = None
    paths: tuple[PathGlob, ...] | None = None
    requests: tuple[RequestPattern, ...] | None = None

    @property
    def present(self) -> bool:
        """
        Whether any key is given.
        """
        return any(k is not None for k in (self.methods, self.paths, self.requests))

    def hits(self, method: str, path: str) -> list[str]:
        """
        The conditions that hold for a request, as reasons to deny it.
        """
        found = []
        if self.methods is not None and method in self.methods:
            found.append(f"method {method}")
        found.extend(
            f"path matches {g.text!r}" for g in self.paths or () if g.matches(path)
        )
        found.extend(
            f"request matches {r.text!r}"
            for r in self.requests or ()
            if r.matches(method, path)
        )
        return found

    def misses(self, method: str, path: str) -> list[str]:
        """
        The conditions that do not hold for a request.
        """
        found = []
        if self.methods is not None and method not in self.methods:
            found.append(f"method {method} is not allowed")
        if self.paths is not None and not any(g.matches(path) for g in self.paths):
            found.append("path is not on the allow-list")
        if self.requests is not None and not any(
            r.matches(method, path) for r in self.requests
        ):
            found.append("request is not on the allow-list")
        return found


@frozen
class FileConditions:
    """
    Conditions on a file operation; C{None} for a key the rule does not
    give.  The keys together are one condition: an operation matches
    when it does one of C{operations} (any, without the key) on a path
    matching one of C{paths} (any, without the key).

    Attributes:
        paths: Globs over the paths, as for HTTP paths.
        operations: Operations (L{FILE_OPERATIONS}).
    """

    paths: tuple[PathGlob, ...] | None = None
    operations: frozenset[str] | None = None

    @property
    def present(self) -> bool:
        """
        Whether any key is given.
        """
        return self.paths is not None or self.operations is not None

    def _listed(self, operations: Iterable[str]) -> list[str]:
        allowed = self.operations
        return [o for o in operations if allowed is None or o in allowed]

    def _glob(self, path: str) -> PathGlob | None:
        return next((g for g in self.paths or () if g.matches(path)), None)

    def hits(self, operations: Sequence[str], paths: Sequence[str]) -> list[str]:
        """
        The reasons to deny an operation doing C{operations} on C{paths}.
        """
        listed = self._listed(operations)
        if not listed:
            return []
        what = "/".join(listed)
        if self.paths is None:
            return [f"file operation {what}"]

        found = []
        for path in paths:
            glob = self._glob(path)
            if glob is not None:
                found.append(f"{what} on {path} matches {glob.text!r}")
        return found

    def misses(self, operations: Sequence[str], paths: Sequence[str]) -> list[str]:
        """
        The reasons to deny it under an allow-list.
        """
        found = [
            f"file operation {o} is not allowed"
            for o in operations
            if self.operations is not None and o not in self.operations
        ]
        if self.paths is not None:
            found.extend(
                f"path {p} is not on the allow-list"
                for p in paths
                if self._glob(p) is None
            )
        return found


@frozen
class ForwardConditions:
    """
    Conditions on a forward's destination; C{None} when not given.

    Attributes:
        destinations: The destinations.
    """

    destinations: tuple[DestinationPattern, ...] | None = None

    @property
    def present(self) -> bool:
        """
        Whether any key is given.
        """
        return self.destinations is not None

    def hits(self, host: str | _Address, port: int, shown: str) -> list[str]:
        """
        The reasons to deny a forward to C{host}, C{port}.
        """
        return [
            f"destination {shown} matches {d.text!r}"
            for d in self.destinations or ()
            if d.matches(host, port, surely=False)
        ]

    def misses(self, host: str | _Address, port: int, shown: str) -> list[str]:
        """
        The reasons to deny it under an allow-list.
        """
        if self.destinations is None or any(
            d.matches(host, port, surely=True) for d in self.destinations
        ):
            return []
        return [f"destination {shown} is not on the allow-list"]


@frozen
class Conditions:
    """
    A C{deny} or C{allow_only} block: conditions for each kind of event.

    Attributes:
        statement: On statement parts.
        command: On command lines.
        http: On HTTP requests.
        file: On file operations.
        forward: On forwards.
    """

    statement: StatementConditions = StatementConditions()
    command: CommandConditions = CommandConditions()
    http: HttpConditions = HttpConditions()
    file: FileConditions = FileConditions()
    forward: ForwardConditions = ForwardConditions()

    @property
    def present(self) -> bool:
        """
        Whether the block gives any condition.
        """
        kinds = (self.statement, self.command, self.http, self.file, self.forward)
        return any(kind.present for kind in kinds)


# Rules.


@frozen
class GuardrailRule:
    """
    One guardrail rule.

    Attributes:
        name: Shown when it decides.
        mode: C{enforce} refuses; C{dry-run} only notes what it would
            have refused.
        subjects: Subjects it applies to; C{*} for all.
        groups: Groups it applies to.  With neither subjects nor groups
            the rule applies to every identity.
        targets: Target names, or C{*} for all.
        deny: Conditions of which any one refuses, if given.
        allow_only: Conditions that must all hold, if given.
        where: Where the rule's targets are written, for errors found
            once the targets are known.
    """

    name: str
    mode: str
    subjects: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("*",)
    deny: Conditions | None = None
    allow_only: Conditions | None = None
    where: str = field(default="", eq=False)

    @property
    def enforced(self) -> bool:
        """
        Whether the rule refuses what fails it.
        """
        return self.mode == "enforce"

    def applies(self, identity: Identity | None, target: str) -> bool:
        """
        Whether the rule is about C{identity} on C{target}.  Without a
        known identity every rule for the target applies (fail closed).
        """
        return in_scope(self, identity, target)

    def _blocks(self) -> Iterable[tuple[Conditions, bool]]:
        if self.deny is not None:
            yield self.deny, False
        if self.allow_only is not None:
            yield self.allow_only, True

    def judge_part(self, part: StatementPart) -> list[str]:
        """
        Why this rule fails a classified statement part (none: it passes).
        """
        if part.problem:
            return [f"could not be classified ({part.problem})"]
        if part.effect not in EFFECTS:
            return [f"has an effect no rule can name ({part.effect!r})"]

        found = []
        for block, allowing in self._blocks():
            if not block.statement.present:
                continue
            if allowing:
                found.extend(block.statement.misses(part))
            else:
                found.extend(block.statement.hits(part))
        return found

    def judge_command(self, line: str) -> list[str]:
        """
        Why this rule fails a command line (an interactive shell: C{""}).
        """
        if "\x00" in line:
            return ["the command line holds a NUL character"]

        found = []
        for block, allowing in self._blocks():
            if not block.command.present:
                continue
            if allowing:
                found.extend(block.command.misses(line))
            else:
                found.extend(block.command.hits(line))
        return found

    def judge_request(self, method: str, path: str, problem: str) -> list[str]:
        """
        Why this rule fails an HTTP request on a decoded C{path}.
        """
        if problem:
            return [f"ambiguous path ({problem})"]

        found = []
        for block, allowing in self._blocks():
            if not block.http.present:
                continue
            if allowing:
                found.extend(block.http.misses(method, path))
            else:
                found.extend(block.http.hits(method, path))
        return found

    def judge_file(self, event: FileOperationRequested) -> list[str]:
        """
        Why this rule fails a file operation.  A path that cannot be
        matched for sure (L{file_path}) fails every rule with file
        conditions.
        """
        blocks = [(b, a) for b, a in self._blocks() if b.file.present]
        if not blocks:
            return []

        paths = [event.path]
        if event.target_path:
            paths.append(event.target_path)
        for path in paths:
            problem = file_path(path)
            if problem:
                return [f"path {path!r} is ambiguous ({problem})"]

        unknown = [o for o in event.operations if o not in FILE_OPERATIONS]
        if unknown or not event.operations:
            return [f"operation {unknown or '(none)'} no rule can name"]

        found = []
        for block, allowing in blocks:
            if allowing:
                found.extend(block.file.misses(event.operations, paths))
            else:
                found.extend(block.file.hits(event.operations, paths))
        return found

    def judge_forward(self, event: ForwardRequested) -> list[str]:
        """
        Why this rule fails a forward.  A host the target may read other
        than rules do (L{destination_host}) fails every rule with
        destinations.
        """
        blocks = [(b, a) for b, a in self._blocks() if b.forward.present]
        if not blocks:
            return []

        host, problem = destination_host(event.host)
        shown = f"{event.host}:{event.port}"
        if problem:
            return [f"destination {shown!r} is ambiguous ({problem})"]

        found = []
        for block, allowing in blocks:
            if allowing:
                found.extend(block.forward.misses(host, event.port, shown))
            else:
                found.extend(block.forward.hits(host, event.port, shown))
        return found


# Evaluation.


@frozen
class RuleHit:
    """
    A rule that fails an event, and why.

    Attributes:
        rule: The rule's name.
        mode: Its mode.
        reasons: Why it fails, at most L{MAX_REASONS} (the last one
            saying how many more there were).
    """

    rule: str
    mode: str
    reasons: tuple[str, ...]

    def describe(self) -> str:
        """
        One line for the deny detail, the log and C{policy test}.
        """
        return f"{self.rule}: {'; '.join(self.reasons)}"


@frozen
class Evaluation:
    """
    What the guardrails make of one event.

    Attributes:
        applied: The names of the rules that apply, in file order.
        blocked: Enforce rules that fail the event; the first decides.
        dry_run: Dry-run rules that fail it.
        parts: The statement parts judged (statements only).
    """

    applied: tuple[str, ...]
    blocked: tuple[RuleHit, ...]
    dry_run: tuple[RuleHit, ...]
    parts: tuple[StatementPart, ...] = ()

    @property
    def denied(self) -> bool:
        """
        Whether the event is refused.
        """
        return bool(self.blocked)

    @property
    def deciding_rule(self) -> str | None:
        """
        The rule the refusal is named after, if refused.
        """
        return self.blocked[0].rule if self.blocked else None


def statement_parts(event: StatementReceived) -> tuple[StatementPart, ...]:
    """
    The parts a statement event is judged by.

    A plugin without a classifier leaves C{parts} empty: the text then
    counts as one part of effect C{unknown}, unless it holds nothing but
    blanks and semicolons, which run nothing in any SQL dialect.  A
    plugin that did classify the text (C{classified}) and found no
    statement in it (only comments) leaves nothing to judge.
    """
    if event.parts or event.classified:
        return event.parts
    if not event.text.strip(" \t\r\n\f\v;"):
        return ()
    return (StatementPart(text=event.text, command="", effect="unknown"),)


def _path_problem(raw: str) -> str:
    if not raw.startswith("/"):
        return "it does not start with /"
    lowered = raw.lower()
    for encoded in ("%2f", "%5c", "%00", "%25"):
        if encoded in lowered:
            return f"it holds {encoded.upper()}"
    return ""


def request_path(raw: str) -> tuple[str, str]:
    """
    An HTTP request path as rules match it: percent-decoded once.

    Returns:
        The decoded path, and why servers might read it differently
        (empty when they would not): encoded slashes, backslashes, NUL
        or percent signs, dot or empty segments, C{;} path parameters,
        bytes that are not UTF-8.
    """
    problem = _path_problem(raw)
    if problem:
        return raw, problem
    try:
        path = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return raw, "it is not UTF-8 once decoded"

    for char, name in (("\\", "a backslash"), ("\x00", "NUL"), (";", "a ;")):
        if char in path:
            return path, f"it holds {name}"
    segments = path.split("/")[1:]
    if "." in segments or ".." in segments:
        return path, "it has dot segments"
    if "" in segments[:-1]:
        return path, "it has an empty segment"
    return path, ""


def _capped(reasons: Sequence[str]) -> tuple[str, ...]:
    if len(reasons) <= MAX_REASONS:
        return tuple(reasons)
    kept = tuple(reasons[: MAX_REASONS - 1])
    return (*kept, f"and {len(reasons) - len(kept)} more")


def _judge(
    event: Event,
) -> tuple[Callable[[GuardrailRule], list[str]], tuple[StatementPart, ...]]:
    if isinstance(event, StatementReceived):
        parts = statement_parts(event)

        def statement(rule: GuardrailRule) -> list[str]:
            found: list[str] = []
            for number, part in enumerate(parts, 1):
                reasons = rule.judge_part(part)
                if reasons:
                    label = f"part {number} {part.command}".rstrip()
                    found.append(f"{label}: {', '.join(_capped(reasons))}")
            return found

        return statement, parts

    if isinstance(event, CommandReceived):
        line = event.command
        return (lambda rule: rule.judge_command(line)), ()

    if isinstance(event, HttpRequestReceived):
        method = event.method.upper()
        path, problem = request_path(event.path)
        return (lambda rule: rule.judge_request(method, path, problem)), ()

    if isinstance(event, FileOperationRequested):
        return (lambda rule: rule.judge_file(event)), ()

    if isinstance(event, ForwardRequested):
        return (lambda rule: rule.judge_forward(event)), ()

    raise TypeError(f"guardrails cannot judge a {type(event).__name__}")


def evaluate(
    rules: Sequence[GuardrailRule],
    identity: Identity | None,
    target: str,
    event: Event,
) -> Evaluation:
    """
    Judge C{event} of a session of C{identity} on C{target} by every rule
    that applies.

    Raises:
        TypeError: The event is of a kind guardrails do not judge.
    """
    judge, parts = _judge(event)
    applied = [rule for rule in rules if rule.applies(identity, target)]

    blocked: list[RuleHit] = []
    dry_run: list[RuleHit] = []
    for rule in applied:
        reasons = judge(rule)
        if not reasons:
            continue
        hit = RuleHit(rule.name, rule.mode, _capped(reasons))
        (blocked if rule.enforced else dry_run).append(hit)

    return Evaluation(
        applied=tuple(rule.name for rule in applied),
        blocked=tuple(blocked),
        dry_run=tuple(dry_run),
        parts=parts,
    )


_MESSAGES: Final = {
    StatementReceived: "statement blocked by policy",
    CommandReceived: "command blocked by policy",
    HttpRequestReceived: "request blocked by policy",
    FileOperationRequested: "file operation blocked by policy",
    ForwardRequested: "forward blocked by policy",
}


_PROBLEM_SHOWN: Final = 200


def _message(event: Event, evaluation: Evaluation | None = None) -> str:
    """
    What the client is told.  A statement the gateway could not read
    (a typo, an encoding it cannot be sure of) says so, with the
    classifier's words about the client's own text, rather than look like
    a policy decision; policy details stay in the log and recording.
    """
    problems = [p.problem for p in evaluation.parts if p.problem] if evaluation else []
    if problems:
        problem = problems[0]
        if len(problem) > _PROBLEM_SHOWN:
            problem = problem[: _PROBLEM_SHOWN - 3] + "..."
        return f"statement could not be classified: {problem}"
    for kind, message in _MESSAGES.items():
        if isinstance(event, kind):
            return message
    return "blocked by policy"


def _event_id(event: Event) -> str:
    keys = ("statement_id", "operation_id", "forward_id", "command_id", "request_id")
    for key in keys:
        value = getattr(event, key, None)
        if isinstance(value, str):
            return value
    return ""


@implementer(IInterceptor)
class GuardrailInterceptor:
    """
    The guardrail stage: refuses statements, commands, requests, file
    operations and forwards that an enforce rule fails; notes the
    dry-run rules that would have.

    Args:
        rules: The policy's guardrail rules, in file order.

    Attributes:
        blocked: Per rule, how many events it failed while enforced.
        dry_run_hits: Per rule, how many events it failed in dry-run.
    """

    name = "guardrails"
    stage = "guardrails"
    event_types = (
        StatementReceived,
        CommandReceived,
        HttpRequestReceived,
        FileOperationRequested,
        ForwardRequested,
    )

    _log = Logger()

    def __init__(self, rules: Sequence[GuardrailRule]) -> None:
        self._rules = tuple(rules)
        self.blocked: Counter[str] = Counter()
        self.dry_run_hits: Counter[str] = Counter()

    def decide(self, event: Event, context: Context) -> Verdict:
        evaluation = evaluate(self._rules, context.identity, context.target, event)
        self.blocked.update(hit.rule for hit in evaluation.blocked)
        self.dry_run_hits.update(hit.rule for hit in evaluation.dry_run)

        notes = tuple(Note("dry_run", hit.rule) for hit in evaluation.dry_run)
        if notes:
            self._log_dry_run(event, context, evaluation)
        if not evaluation.denied:
            return Allow(notes=notes) if notes else ALLOW

        detail = " | ".join(hit.describe() for hit in evaluation.blocked)
        self._log.warn(
            "Guardrail {rule} blocked {event} {event_id} of session "
            "{session_id}: {detail}",
            rule=evaluation.deciding_rule,
            event=event.name,
            event_id=_event_id(event),
            session_id=context.session_id,
            detail=detail,
        )
        reason = DenyReason(
            code="guardrail.blocked",
            message=_message(event, evaluation),
            detail=detail,
            rule=evaluation.deciding_rule,
        )
        return Deny(reason, notes=notes)

    def _log_dry_run(
        self, event: Event, context: Context, evaluation: Evaluation
    ) -> None:
        self._log.info(
            "Dry-run guardrails {rules} would have blocked {event} {event_id} "
            "of session {session_id}: {detail}",
            rules=[hit.rule for hit in evaluation.dry_run],
            event=event.name,
            event_id=_event_id(event),
            session_id=context.session_id,
            detail=" | ".join(hit.describe() for hit in evaluation.dry_run),
        )


# Reading the policy section.


def _listed(reader: ConfigReader, key: str, allowing: bool) -> tuple[str, ...] | None:
    if not reader.has(key):
        return None
    values = reader.strings(key)
    if not values and not allowing:
        raise reader.error(key, "an empty list denies nothing")
    return values


def _vocabulary(
    reader: ConfigReader, key: str, known: frozenset[str], allowing: bool
) -> frozenset[str] | None:
    values = _listed(reader, key, allowing)
    if values is None:
        return None
    for value in values:
        if value not in known:
            raise reader.error(
                key, f"unknown {key[:-1]} {value!r} (known: {', '.join(sorted(known))})"
            )
    return frozenset(values)


def _words(
    reader: ConfigReader, key: str, syntax: re.Pattern[str], allowing: bool
) -> frozenset[str] | None:
    values = _listed(reader, key, allowing)
    if values is None:
        return None
    for value in values:
        if not syntax.fullmatch(value):
            raise reader.error(key, f"{value!r} is not a {key[:-1]} name")
    return frozenset(v.upper() for v in values)


def _parsed(
    reader: ConfigReader, key: str, parse: Callable[[str], _T], allowing: bool
) -> tuple[_T, ...] | None:
    values = _listed(reader, key, allowing)
    if values is None:
        return None
    try:
        return tuple(parse(value) for value in values)
    except (ValueError, re.error) as e:
        raise reader.error(key, str(e)) from None


def _command_pattern(text: str) -> CommandPattern:
    try:
        return CommandPattern(text, re.compile(text))
    except re.error as e:
        raise ValueError(f"pattern {text!r} is not a regular expression: {e}") from None


def _request_pattern(text: str) -> RequestPattern:
    pieces = text.split(" ")
    if len(pieces) != 2 or not (pieces[0] == "*" or _METHOD.fullmatch(pieces[0])):
        raise ValueError(f"{text!r} is not METHOD /path (METHOD may be *)")
    return RequestPattern(text, pieces[0].upper(), PathGlob.parse(pieces[1]))


def _read_statement(reader: ConfigReader, allowing: bool) -> StatementConditions:
    return StatementConditions(
        commands=_words(reader, "commands", _COMMAND_WORDS, allowing),
        effects=_vocabulary(reader, "effects", EFFECTS, allowing),
        shapes=_vocabulary(reader, "shapes", SHAPES, allowing),
        reads=_parsed(reader, "reads", parse_relation_pattern, allowing),
        writes=_parsed(reader, "writes", parse_relation_pattern, allowing),
    )


def _read_command(reader: ConfigReader, allowing: bool) -> CommandConditions:
    shell = reader.boolean("shell") if reader.has("shell") else None
    return CommandConditions(
        lines=_parsed(reader, "command_lines", CommandGlob.parse, allowing),
        patterns=_parsed(reader, "command_patterns", _command_pattern, allowing),
        shell=shell,
    )


def _read_http(reader: ConfigReader, allowing: bool) -> HttpConditions:
    return HttpConditions(
        methods=_words(reader, "methods", _METHOD, allowing),
        paths=_parsed(reader, "paths", PathGlob.parse, allowing),
        requests=_parsed(reader, "requests", _request_pattern, allowing),
    )


def _read_file(reader: ConfigReader, allowing: bool) -> FileConditions:
    return FileConditions(
        paths=_parsed(reader, "file_paths", PathGlob.parse, allowing),
        operations=_vocabulary(reader, "file_operations", FILE_OPERATIONS, allowing),
    )


def _read_forward(reader: ConfigReader, allowing: bool) -> ForwardConditions:
    return ForwardConditions(
        destinations=_parsed(
            reader, "destinations", DestinationPattern.parse, allowing
        ),
    )


def _read_conditions(reader: ConfigReader, key: str) -> Conditions | None:
    if not reader.has(key):
        return None
    section = reader.section(key)
    allowing = key == "allow_only"

    conditions = Conditions(
        statement=_read_statement(section, allowing),
        command=_read_command(section, allowing),
        http=_read_http(section, allowing),
        file=_read_file(section, allowing),
        forward=_read_forward(section, allowing),
    )
    section.done()
    if not conditions.present:
        raise reader.error(key, "lists no condition")
    return conditions


def read_groups(reader: ConfigReader) -> tuple[str, ...]:
    """
    The C{groups} a rule of any family is scoped to; C{*} is refused,
    since "every identity" is C{subjects: ['*']}.
    """
    groups = reader.strings("groups", ())
    if "*" in groups:
        raise reader.error("groups", "'*' is not a group; use subjects: ['*']")
    return groups


def read_guardrail(reader: ConfigReader) -> GuardrailRule:
    """
    Validate one entry of C{policy.guardrails}.

    Raises:
        ConfigError: Naming the key and line of the mistake.
    """
    groups = read_groups(reader)

    rule = GuardrailRule(
        name=reader.string("name"),
        mode=reader.choice("mode", MODES, "enforce"),
        subjects=reader.strings("subjects", ()),
        groups=groups,
        targets=reader.strings("targets", ("*",)),
        deny=_read_conditions(reader, "deny"),
        allow_only=_read_conditions(reader, "allow_only"),
        where=f"{reader.path}.targets (line {reader.line_of('targets')})",
    )
    if rule.deny is None and rule.allow_only is None:
        raise reader.error("deny", "a guardrail needs deny, allow_only or both")
    reader.done()
    return rule


def check_targets(rules: Iterable[GuardrailRule], known: Collection[str]) -> None:
    """
    Refuse rules naming targets the configuration does not define: a
    misspelt target would silently switch a rule off.

    Raises:
        ConfigError: Naming the rule's targets key and line.
    """
    check_scope_targets(rules, known, "guardrail")
