"""
A gateway with approvals for integration tests, and the approver's side.

L{start_approval_gateway} starts C{twistd hoopgate} as
L{tests.support.gateway.start_gateway} does, with these additions to its
configuration:

  - C{gateway.store}: Redis (the shared test Redis, under a prefix of the
    test's own, or a private one), or memory;
  - C{gateway.approvals}: the test slapd as directory (StartTLS verified
    against the run's certificate), groups C{dba} and C{rotation},
    notifications by mail to the SMTP sink (STARTTLS verified) and to the
    log, a link secret in a file;
  - C{policy.approvals}: the rules the test gives, in YAML.

L{Approver} is everything an approver does: read their mail, follow a
link (GET), sign in and decide on the page (POSTs with the CSRF cookie),
or use the JSON API with HTTP Basic.  The scratch table
C{approval_scratch(id, hits)} is where held statements write: a held
C{UPDATE ... SET hits = hits + 1} that ran exactly once left C{hits = 1}.
"""

from __future__ import annotations

import base64
import email
import email.policy
import http.cookiejar
import json
import re
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql

from tests.support.gateway import RunningGateway, start_gateway, wait_for
from tests.support.servers import pg_connect_args

__all__ = [
    "Approver",
    "Page",
    "approval_yaml",
    "ldap_modify",
    "scratch",
    "start_approval_gateway",
]

PEOPLE = "ou=people,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"
LINK = re.compile(r"https?://\S+/approve/[A-Za-z0-9_.-]+")


def _q(value: str) -> str:
    return json.dumps(value)


def approval_yaml(
    servers: dict[str, str],
    directory: Path,
    *,
    store: str = "redis",
    redis_url: str | None = None,
    redis_password_file: str | None = None,
    prefix: str | None = None,
    ldap_url: str | None = None,
    link_secret: str | None = None,
    poll: str = "2s",
) -> str:
    """
    The C{gateway.store} and C{gateway.approvals} sections.
    """
    secret_file = directory / "link.secret"
    secret_file.write_text(link_secret or secrets.token_hex(24))
    secret_file.chmod(0o600)
    if store == "redis":
        url = redis_url or f"redis://127.0.0.1:{servers['REDIS_PORT']}/0"
        password = redis_password_file or servers["REDIS_PASSWORD_FILE"]
        store_yaml = (
            "  store:\n    kind: redis\n"
            f"    url: {_q(url)}\n"
            f"    password: {{file: {_q(password)}}}\n"
            f"    prefix: {_q(prefix or 'test-' + secrets.token_hex(4) + ':')}\n"
            "    timeout: 2s\n"
        )
    else:
        store_yaml = "  store:\n    kind: memory\n"
    return f"""{store_yaml}  approvals:
    link_secret: {{file: {_q(str(secret_file))}}}
    poll_interval: {poll}
    groups:
      dba: "cn=dba-approvers,{GROUPS}"
      rotation: "cn=rotation-approvers,{GROUPS}"
      runner: "cn=runner-approvers,{GROUPS}"
    directory:
      url: {_q(ldap_url or servers["LDAP_URL"])}
      start_tls: true
      ca: {_q(servers["TLS_CERT"])}
      bind_dn: {_q(servers["LDAP_ADMIN_DN"])}
      bind_password: {{file: {_q(servers["LDAP_ADMIN_PASSWORD_FILE"])}}}
      people: "{PEOPLE}"
      person_filter: "(objectClass=inetOrgPerson)"
      timeout: 3s
      identity:
        claim: sub
        attribute: uid
    notify:
      - kind: log
      - kind: email
        host: 127.0.0.1
        port: {int(servers["SMTP_PORT"])}
        from: hoopgate@example.org
        tls: starttls
        ca: {_q(servers["TLS_CERT"])}
"""


def start_approval_gateway(
    servers: dict[str, str],
    directory: Path,
    rules: str,
    guardrails: str = "",
    **options: Any,
) -> RunningGateway:
    """
    A gateway with approvals (see the module docstring); C{rules} is the
    YAML list of C{policy.approvals}, C{guardrails} that of
    C{policy.guardrails}, both indented by four spaces.
    """
    directory.mkdir(parents=True, exist_ok=True)
    sections = approval_yaml(servers, directory, **options)

    def edit(text: str) -> str:
        text = text.replace("  store:\n    kind: memory\n", sections)
        if guardrails:
            text = text.rstrip("\n") + "\n  guardrails:\n" + guardrails
        return text.rstrip("\n") + "\n  approvals:\n" + rules

    return start_gateway(servers, directory, edit=edit)


def scratch(servers: dict[str, str], *tables: str, rows: int = 20) -> None:
    """
    Make (again) scratch tables C{(id int, hits int)} held statements
    write to, C{rows} rows each with C{hits = 0}.
    """
    args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
    with psycopg.connect(**args, autocommit=True) as conn:
        for table in tables:
            name = psycopg.sql.Identifier(table)
            conn.execute(psycopg.sql.SQL("drop table if exists {}").format(name))
            conn.execute(
                psycopg.sql.SQL(
                    "create table {} (id int primary key, hits int)"
                ).format(name)
            )
            conn.execute(
                psycopg.sql.SQL(
                    "insert into {} select g, 0 from generate_series(1, %s) g"
                ).format(name),
                (rows,),
            )


def hits(servers: dict[str, str], table: str, row: int) -> int:
    """
    How often held statements ran on a row of a scratch table.
    """
    args = pg_connect_args(servers, "app", servers["APP_PASSWORD"])
    query = psycopg.sql.SQL("select hits from {} where id = %s").format(
        psycopg.sql.Identifier(table)
    )
    with psycopg.connect(**args) as conn:
        found = conn.execute(query, (row,)).fetchone()
    assert found is not None
    count: int = found[0]
    return count


def ldap_modify(servers: dict[str, str], ldif: str) -> None:
    """
    Change the test directory as its administrator.
    """
    subprocess.run(
        [
            "ldapmodify",
            "-x",
            "-H",
            servers["LDAP_URL"],
            "-D",
            servers["LDAP_ADMIN_DN"],
            "-y",
            servers["LDAP_ADMIN_PASSWORD_FILE"],
        ],
        input=ldif,
        text=True,
        capture_output=True,
        timeout=10,
        check=True,
    )


class Page:
    """
    An HTML page the admin listener answered with.

    Attributes:
        status: The HTTP status.
        text: The page.
    """

    def __init__(self, status: int, text: str) -> None:
        self.status = status
        self.text = text

    def field(self, name: str) -> str:
        """
        The value of a hidden form field.
        """
        match = re.search(rf"name={name} value='([^']*)'", self.text)
        assert match, f"no field {name} in {self.text[:500]}"
        return match.group(1)


class Approver:
    """
    One approver of the test directory, with their mail and password.

    Args:
        servers: The test servers' environment.
        login: Their uid.
        gateway: The gateway whose admin listener they use.
    """

    def __init__(
        self, servers: dict[str, str], login: str, gateway: RunningGateway
    ) -> None:
        self.servers = servers
        self.login = login
        self.dn = f"uid={login},{PEOPLE}"
        self.gateway = gateway
        self.password = servers["LDAP_USER_PASSWORD"]
        self._jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self._jar)
        )

    # -- mail ------------------------------------------------------------

    def mails(self, request_id: str) -> list[email.message.EmailMessage]:
        """
        The mails this approver got about a request.
        """
        folder = Path(self.servers["SMTP_MAILDIR"]) / "new"
        found = []
        for path in sorted(folder.iterdir()):
            message = email.message_from_bytes(
                path.read_bytes(), policy=email.policy.default
            )
            if (
                message["X-Sink-To"] == f"{self.login}@example.org"
                and message["X-Hoopgate-Request"] == request_id
            ):
                found.append(message)
        return found

    def link(self, request_id: str, timeout: float = 15.0) -> str:
        """
        The link in this approver's mail about a request (waiting for it).
        """

        def find() -> str | None:
            for message in self.mails(request_id):
                match = LINK.search(message.get_content())
                if match:
                    return match.group()
            return None

        found: str = wait_for(find, timeout, f"{self.login}'s mail about {request_id}")
        return found

    # -- the page --------------------------------------------------------

    def _open(
        self, url: str, form: dict[str, str] | None = None, origin: bool = True
    ) -> Page:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data)  # noqa: S310 - loopback
        if data is not None and origin:
            parts = urllib.parse.urlsplit(url)
            request.add_header("Origin", f"{parts.scheme}://{parts.netloc}")
        try:
            with self._opener.open(request, timeout=20) as response:
                return Page(response.status, response.read().decode())
        except urllib.error.HTTPError as e:
            with e:
                return Page(e.code, e.read().decode())

    def visit(self, link: str) -> Page:
        """
        GET the link (what a mail scanner does too).
        """
        return self._open(link)

    def sign_in(self, link: str, password: str | None = None) -> Page:
        """
        Open the link and sign in on its page.
        """
        page = self.visit(link)
        assert page.status == 200, page.text
        return self._open(
            link,
            {
                "step": "sign-in",
                "csrf": page.field("csrf"),
                "login": self.login,
                "password": self.password if password is None else password,
            },
        )

    def decide_on_page(self, link: str, approve: bool = True, reason: str = "") -> Page:
        """
        Open the link, sign in, and approve or deny.
        """
        page = self.sign_in(link)
        assert page.status == 200, page.text
        return self._open(
            link,
            {
                "step": "decide",
                "csrf": page.field("csrf"),
                "sign_in": page.field("sign_in"),
                "decision": "approve" if approve else "deny",
                "reason": reason,
            },
        )

    # -- the API ---------------------------------------------------------

    def vote(
        self, request_id: str, approve: bool = True, reason: str = ""
    ) -> tuple[int, Any]:
        """
        Approve or deny through the JSON API.
        """
        verb = "approve" if approve else "deny"
        basic = base64.b64encode(f"{self.login}:{self.password}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.gateway.admin_url}/approvals/{request_id}/{verb}",
            data=json.dumps({"reason": reason}).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Basic {basic}",
            },
        )
        return _json_call(request)


def _json_call(request: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read() or b"{}")


def pending(gateway: RunningGateway) -> list[dict[str, Any]]:
    """
    The open requests the gateway's API lists.
    """
    request = urllib.request.Request(f"{gateway.admin_url}/approvals")  # noqa: S310
    status, body = _json_call(request)
    assert status == 200, body
    requests: list[dict[str, Any]] = body["requests"]
    return requests


def request_of(
    gateway: RunningGateway, rule: str, timeout: float = 15.0
) -> dict[str, Any]:
    """
    The open request of a rule (waiting until there is exactly one).
    """

    def find() -> dict[str, Any] | None:
        found = [r for r in pending(gateway) if r["rule"] == rule]
        return found[0] if len(found) == 1 else None

    request: dict[str, Any] = wait_for(find, timeout, f"a request of rule {rule}")
    return request


__all__ += ["hits", "pending", "request_of"]
