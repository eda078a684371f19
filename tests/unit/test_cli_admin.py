"""
Tests for the admin side of C{hoopgate} (L{hoopgate.cli}): where the CLI
finds the admin listener and how it verifies it, credentials that must
not cross the network in clear, and client text shown on the terminal
(control characters made visible).  End-to-end runs against a real
gateway live in C{tests/integration/test_admin.py}.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import ssl
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from hoopgate import cli
from hoopgate._config import parse_config
from tests.unit.test_config import FakePlugin, temporary_folder

CONFIG = """\
gateway:
  admin:
    listen: "tcp:{port}:interface={interface}"
{extra}  recordings:
    directory: {recordings}
targets:
  - name: appdb
    protocol: fake
    host: 127.0.0.1
    port: 5432
    credentials:
      - name: app
        user: app
policy:
  access: []
"""


def self_signed(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """
    A self-signed certificate for C{name} and 127.0.0.1, and its key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    names = x509.SubjectAlternativeName(
        [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(names, critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def handshake(client: ssl.SSLContext, certificate: Path, key: Path, name: str) -> None:
    """
    A TLS handshake in memory between C{client} (asking for C{name}) and
    a server with C{certificate}.

    Raises:
        ssl.SSLCertVerificationError: The client refused the certificate.
    """
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certificate, key)
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    near = client.wrap_bio(pipes[0], pipes[1], server_hostname=name)
    far = server.wrap_bio(pipes[2], pipes[3], server_side=True)
    for _ in range(10):
        done = 0
        for side in (near, far):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        pipes[2].write(pipes[1].read())
        pipes[0].write(pipes[3].read())
        if done == 2:
            return
    raise AssertionError("the handshake did not finish")


class CliCase(SynchronousTestCase):
    """
    A configuration file in a temporary folder, and the CLI run on it.
    """

    def setUp(self) -> None:
        self.folder = Path(temporary_folder(self))
        self.recordings = self.folder / "recordings"
        self.recordings.mkdir()
        self.config_path = str(self.folder / "hoopgate.yaml")

    def write_config(
        self, interface: str = "127.0.0.1", extra: str = "", port: int = 8091
    ) -> None:
        text = CONFIG.format(
            port=port, interface=interface, extra=extra, recordings=self.recordings
        )
        Path(self.config_path).write_text(text, encoding="utf-8")

    def admin_tls(self) -> str:
        """
        C{gateway.admin.tls} with a new self-signed certificate.
        """
        self.certificate, self.key = self_signed(self.folder)
        return (
            f"    tls:\n      certificate: {self.certificate}\n      key: {self.key}\n"
        )

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(
                ["--config", self.config_path, *argv], {"fake": FakePlugin()}
            )
        return code, out.getvalue(), err.getvalue()

    def endpoint(self, *argv: str) -> cli.AdminEndpoint:
        """
        The endpoint C{hoopgate reload ARGV} would use.
        """
        args = cli._parser().parse_args(["--config", self.config_path, "reload", *argv])
        text = Path(self.config_path).read_text(encoding="utf-8")
        config = parse_config(text, self.config_path, {"fake": FakePlugin()})
        return cli.admin_endpoint(config, args)


class EndpointTests(CliCase):
    """
    The CLI reaches the admin listener as its configuration says: HTTPS
    with verification when it has TLS, never plain HTTP then.
    """

    def test_plain(self) -> None:
        """
        Without TLS: plain http to the interface.
        """
        self.write_config(interface="127.0.0.2", port=9001)

        endpoint = self.endpoint()

        assert (endpoint.url, endpoint.context) == ("http://127.0.0.2:9001", None)

    def test_wildcard(self) -> None:
        """
        A wildcard listener is reached on loopback.
        """
        self.write_config(interface="0.0.0.0")

        assert self.endpoint().url == "http://127.0.0.1:8091"

    def test_tls(self) -> None:
        """
        With gateway.admin.tls: https, the certificate and the name
        verified, the configured certificate trusted.
        """
        self.write_config(extra=self.admin_tls())

        endpoint = self.endpoint()

        assert endpoint.url == "https://127.0.0.1:8091"
        context = endpoint.context
        assert context is not None
        assert (context.verify_mode, context.check_hostname) == (
            ssl.CERT_REQUIRED,
            True,
        )
        handshake(context, self.certificate, self.key, "127.0.0.1")
        other, other_key = self_signed(self.folder, "other.test")
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(context, other, other_key, "127.0.0.1")

    def test_tls_name_checked(self) -> None:
        """
        The configured certificate is trusted for its own names only.
        """
        self.write_config(extra=self.admin_tls())
        context = self.endpoint().context
        assert context is not None

        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            handshake(context, self.certificate, self.key, "gateway.example.org")

        assert "mismatch" in caught.value.verify_message

    def test_tls_ca_file(self) -> None:
        """
        --ca-file replaces the configured certificate as trust anchor.
        """
        self.write_config(extra=self.admin_tls())
        other, _ = self_signed(self.folder, "other.test")

        context = self.endpoint("--ca-file", str(other)).context

        assert context is not None
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(context, self.certificate, self.key, "127.0.0.1")

    def test_url_override(self) -> None:
        """
        --url replaces the derived address; a final slash is dropped.
        """
        self.write_config(extra=self.admin_tls())

        endpoint = self.endpoint("--url", "https://localhost:9443/")

        assert endpoint.url == "https://localhost:9443"
        assert endpoint.context is not None

    def test_plain_url_with_tls(self) -> None:
        """
        A plain http --url where the listener speaks TLS is refused with
        a clear message (exit 2), never tried.
        """
        self.write_config(extra=self.admin_tls())

        code, out, err = self.run_cli("reload", "--url", "http://127.0.0.1:8091")

        assert (code, out) == (2, "")
        assert err == (
            "gateway.admin.tls is set, so the admin listener speaks https: give "
            "an https:// --url\n"
        )

    def test_not_a_url(self) -> None:
        """
        --url must be an http or https URL.
        """
        self.write_config()

        code, _, err = self.run_cli("reload", "--url", "ftp://127.0.0.1")

        assert code == 2
        assert err == "--url 'ftp://127.0.0.1' is not an http:// or https:// URL\n"

    def test_certificate_gone(self) -> None:
        """
        When the configured certificate cannot be read, the CLI says so
        and asks for --ca-file instead of skipping verification.
        """
        self.write_config(extra=self.admin_tls())
        text = Path(self.config_path).read_text(encoding="utf-8")
        config = parse_config(text, self.config_path, {"fake": FakePlugin()})
        self.certificate.unlink()
        args = cli._parser().parse_args(["--config", self.config_path, "reload"])

        with pytest.raises(cli.CommandError) as caught:
            cli.admin_endpoint(config, args)

        assert str(caught.value).startswith(
            f"cannot read the admin certificate {self.certificate} to verify "
            "the admin listener ("
        )
        assert str(caught.value).endswith("): give --ca-file")
        assert caught.value.code == 2

    def test_no_credentials_in_clear(self) -> None:
        """
        The admin token is never sent over plain http off loopback: the
        command fails before connecting.
        """
        self.write_config(interface="192.0.2.1", extra="    token: s3cret-token\n")

        code, out, err = self.run_cli("reload")

        assert (code, out) == (1, "")
        assert err == (
            "refusing to send credentials over plain http to "
            "http://192.0.2.1:8091: configure gateway.admin.tls, or give an "
            "https:// --url\n"
        )
        assert "s3cret-token" not in err

    def test_unreachable(self) -> None:
        """
        A listener that is not there is a clear message and exit 1.
        """
        self.write_config(port=1)

        code, _, err = self.run_cli("sessions", "terminate", "s1")

        assert code == 1
        assert err.startswith(
            "cannot reach the gateway's admin listener at http://127.0.0.1:1: "
        )


class VisibleTests(SynchronousTestCase):
    """
    L{cli.visible} shows what terminals would act on.
    """

    def test_controls(self) -> None:
        """
        C0 and C1 controls and DEL become escapes; tab, newline and
        carriage return their short forms.
        """
        text = "a\x1b[2Jb\x07\x9b\x7f\t\n\r\x00"

        assert cli.visible(text) == "a\\x1b[2Jb\\x07\\x9b\\x7f\\t\\n\\r\\x00"

    def test_format_characters(self) -> None:
        """
        Bidirectional overrides and zero-width characters become escapes;
        other text, accents and scripts included, stays.
        """
        text = "caf\u00e9 \u65e5\u672c \u202egnp.exe\u200b"

        assert cli.visible(text) == "caf\u00e9 \u65e5\u672c \\u202egnp.exe\\u200b"


class SessionsOutputTests(CliCase):
    """
    C{sessions list} and C{sessions show} print what clients sent with
    control characters visible.
    """

    def test_show(self) -> None:
        """
        A statement holding terminal escapes is shown escaped; --json
        keeps the exact text (JSON escapes it too).
        """
        self.write_config()
        text = "select 1 /* \x1b[2J\x1b]0;owned\x07 */"
        lines = [
            {"seq": 1, "event": "statement", "verdict": "allow", "text": text},
            {"seq": 2, "event": "session.closed", "reason": "client\x1b[31m"},
        ]
        path = self.recordings / "s1.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))

        code, out, _ = self.run_cli("sessions", "show", "s1")
        _, raw, _ = self.run_cli("sessions", "show", "s1", "--json")

        assert code == 0
        assert "\x1b" not in out and "\x07" not in out
        assert out.splitlines() == [
            "session s1 (-, closed)",
            "  subject: -",
            "  target: -",
            "  peer: -",
            "  started: -",
            "  ended: - (client\\x1b[31m)",
            "  statements: 1, commands: 0",
            "    1 statement            allow   select 1 /* \\x1b[2J\\x1b]0;owned"
            "\\x07 */",
            "    2 session.closed               client\\x1b[31m",
        ]
        assert "\x1b" not in raw
        assert json.loads(raw.splitlines()[0])["text"] == text

    def test_list(self) -> None:
        """
        A subject or target with control characters is listed escaped.
        """
        self.write_config()
        line = {
            "seq": 1,
            "event": "session.refused",
            "subject": "mallory\x1b[8m",
            "target": "db\r",
            "reason": "access.denied",
            "detail": "",
            "at": 1.0,
        }
        (self.recordings / "s2.jsonl").write_text(json.dumps(line) + "\n")

        code, out, _ = self.run_cli("sessions", "list")

        assert code == 0
        assert "\x1b" not in out and "\r" not in out
        assert "mallory\\x1b[8m" in out.splitlines()[1]
        assert "db\\r" in out.splitlines()[1]
