"""
Certificate login, the main path: a service account trades its OIDC
token for a short-lived OpenSSH certificate of the gateway's CA (over
HTTPS, or with C{hoopgate ssh-cert}), then stock OpenSSH logs in with
C{ssh -i KEY -o CertificateFile=KEY-cert.pub}; every wrong certificate
is refused.

test-case-name: tests.integration.test_ssh_certs
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization as ser

from hoopgate._oidc import _token_id_hash
from tests.support import ssh as fixtures
from tests.support.gateway import ROOT, VENV_BIN, wait_for
from tests.support.ssh import SshGateway, sign

ssh_servers = fixtures.ssh_servers
ssh_cert_gateway = fixtures.ssh_cert_gateway

pytestmark = pytest.mark.timeout(180)


def _claims(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    claims: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    )
    return claims


def _issue(gw: SshGateway, key: Path, token: str) -> Path:
    """
    Ask the endpoint for a certificate of C{key} and write it beside.
    """
    public = key.with_name(key.name + ".pub").read_text()
    status, answer = gw.post_certificate({"token": token, "public_key": public})
    assert status == 200, answer
    path = key.with_name(key.name + "-cert.pub")
    path.write_text(answer["certificate"] + "\n")
    return path


def _log_has(gw: SshGateway, text: str) -> bool:
    return any(text in p.read_text(errors="replace") for p in gw.gateway.log_files())


def _refused(gw: SshGateway, key: Path, why: str) -> None:
    """
    OpenSSH with C{key}'s certificate is refused, and the log says why.
    """
    result = gw.certified(key).ssh("box", "echo", "never")

    assert result.returncode == 255
    assert b"never" not in result.stdout
    assert b"Permission denied (publickey" in result.stderr
    wait_for(lambda: _log_has(gw, why), 10, f"the log line {why!r}")


def _ssh_cert(
    gw: SshGateway, key: Path, token: str
) -> subprocess.CompletedProcess[str]:
    """
    Run C{hoopgate ssh-cert} with the gateway's configuration and the
    token in C{HOOPGATE_TOKEN}.
    """
    return subprocess.run(
        [
            str(VENV_BIN / "hoopgate"),
            "--config",
            str(gw.gateway.config_path),
            "ssh-cert",
            "--public-key",
            str(key),
        ],
        cwd=ROOT,
        env={**os.environ, "HOOPGATE_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestIssuing:
    """
    C{POST /plugins/ssh/certificates} on the HTTPS admin listener.
    """

    def test_certificate_for_the_identity(self, ssh_cert_gateway: SshGateway) -> None:
        """
        The certificate is an OpenSSH user certificate for the token's
        subject, valid from just before now for the policy's ten
        minutes, bound to loopback, carrying the identity.
        """
        gw = ssh_cert_gateway
        key = gw.new_key("issued")
        token = gw.gateway.token(ttl=3600)

        path = _issue(gw, key, token)

        certificate = ser.load_ssh_public_identity(path.read_bytes())
        assert isinstance(certificate, ser.SSHCertificate)
        assert certificate.valid_principals == [b"ci-runner"]
        assert certificate.key_id == b"ci-runner"
        assert 590 <= certificate.valid_before - time.time() <= 601
        assert certificate.critical_options == {b"source-address": b"127.0.0.0/8"}
        assert set(certificate.extensions) == {
            b"identity@hoopgate",
            b"permit-pty",
            b"permit-port-forwarding",
        }
        identity = json.loads(certificate.extensions[b"identity@hoopgate"])
        assert identity["sub"] == "ci-runner"
        assert identity["tid"] == _token_id_hash(token, _claims(token))
        listing = subprocess.run(
            ["ssh-keygen", "-L", "-f", path], capture_output=True, check=True
        )
        assert b"user certificate" in listing.stdout

    def test_bad_token(self, ssh_cert_gateway: SshGateway) -> None:
        gw = ssh_cert_gateway
        public = gw.new_key("bad-token").with_suffix(".pub").read_text()

        status, answer = gw.post_certificate(
            {"token": gw.gateway.token(ttl=0), "public_key": public}
        )

        assert (status, answer) == (401, {"error": "authentication failed"})

    def test_no_access_rule(self, ssh_cert_gateway: SshGateway) -> None:
        gw = ssh_cert_gateway
        public = gw.new_key("mallory-asks").with_suffix(".pub").read_text()

        status, answer = gw.post_certificate(
            {"token": gw.gateway.token(sub="mallory"), "public_key": public}
        )

        assert (status, answer) == (403, {"error": "access denied"})

    def test_cleartext_refused(self, ssh_cert_gateway: SshGateway) -> None:
        """
        The admin listener speaks only TLS: a plain HTTP request gets no
        certificate.
        """
        url = ssh_cert_gateway.gateway.admin_url.replace("https:", "http:")
        request = urllib.request.Request(  # noqa: S310 - the test gateway
            url + "/plugins/ssh/certificates", data=b"{}", method="POST"
        )

        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(request, timeout=5)  # noqa: S310


class TestOpenSSH:
    """
    Stock OpenSSH with a gateway certificate, and with wrong ones.
    """

    def test_exec(self, ssh_cert_gateway: SshGateway) -> None:
        """
        ssh -i KEY -o CertificateFile=KEY-cert.pub runs a command through
        the gateway; the session is recorded under the certificate's
        identity, whose token id hash is the token's.
        """
        gw = ssh_cert_gateway
        key = gw.new_key("exec")
        token = gw.gateway.token(ttl=3600)
        _issue(gw, key, token)

        result = gw.certified(key).ssh("box", "echo certified; exit 3")

        assert (result.returncode, result.stdout) == (3, b"certified\n"), result.stderr
        session_id = gw.gateway.session_of(token)
        opened = gw.gateway.wait_event(session_id, "session.opened")
        assert opened["identity"]["subject"] == "ci-runner"
        assert opened["target"] == "box"

    def test_pty(self, ssh_cert_gateway: SshGateway) -> None:
        gw = ssh_cert_gateway
        key = gw.new_key("pty")
        _issue(gw, key, gw.gateway.token())

        result = gw.certified(key).ssh("box", "tty", flags=["-tt"])

        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(b"/dev/pts/")

    def test_pty_asciicast(self, ssh_cert_gateway: SshGateway) -> None:
        """
        A terminal's output is recorded as an asciicast v2 beside the
        session's recording, masked; the client gets it as sent.
        """
        gw = ssh_cert_gateway
        key = gw.new_key("cast")
        token = gw.gateway.token()
        _issue(gw, key, token)
        card = "4111 1111 1111 1111"

        result = gw.certified(key).ssh(
            "box", f"printf 'pan {card} ok\\n'; tty", flags=["-tt"]
        )

        assert result.returncode == 0, result.stderr
        assert f"pan {card} ok".encode() in result.stdout
        session_id = gw.gateway.session_of(token)
        notice = wait_for(
            lambda: [
                line
                for line in gw.gateway.recording_lines(session_id)
                if line["event"] == "notice" and line["kind"] == "asciicast"
            ],
            10,
            "the asciicast notice",
        )[0]
        path = gw.gateway.recordings / notice["detail"]
        wait_for(lambda: "/dev/pts/" in path.read_text(), 10, "the recorded output")
        header, *events = [json.loads(x) for x in path.read_text().splitlines()]
        assert header["version"] == 2
        assert (header["width"], header["height"]) > (0, 0)
        output = "".join(e[2] for e in events if e[1] == "o")
        assert "pan [masked] ok" in output
        assert "4111" not in path.read_text()

    def test_no_permit_pty(self, ssh_cert_gateway: SshGateway) -> None:
        """
        A certificate without permit-pty gets no terminal (the refusal is
        recorded; OpenSSH gives up on C{-tt}); commands still run.
        """
        gw = ssh_cert_gateway
        assert gw.ca_key is not None
        key = gw.new_key("nopty")
        sign(gw.ca_key, key.with_suffix(".pub"), pty=False)
        mark = gw.gateway.recording_mark()

        forced = gw.certified(key).ssh("box", "tty", flags=["-tt"])
        plain = gw.certified(key).ssh("box", "tty")

        assert forced.returncode == 255
        assert b"PTY allocation request failed" in forced.stderr
        assert (plain.returncode, plain.stdout) == (1, b"not a tty\n")
        kinds = [
            line["kind"]
            for line in gw.gateway.lines_since(mark)
            if line["event"] == "notice"
        ]
        assert kinds.count("pty.refused") == 1

    def test_principal_mismatch(self, ssh_cert_gateway: SshGateway) -> None:
        """
        A certificate of the gateway's own CA whose principal is not the
        identity's subject is refused.
        """
        gw = ssh_cert_gateway
        assert gw.ca_key is not None
        key = gw.new_key("principal")
        sign(gw.ca_key, key.with_suffix(".pub"), principals=["root"])

        _refused(gw, key, "its principals are not exactly 'ci-runner'")

    def test_expired(self, ssh_cert_gateway: SshGateway) -> None:
        gw = ssh_cert_gateway
        assert gw.ca_key is not None
        key = gw.new_key("expired")
        now = time.time()
        sign(
            gw.ca_key,
            key.with_suffix(".pub"),
            valid_after=now - 3600,
            valid_before=now - 60,
        )

        _refused(gw, key, "certificate refused: expired")

    def test_other_ca(self, ssh_cert_gateway: SshGateway) -> None:
        """
        A well-formed certificate signed by another CA (made with
        ssh-keygen, as an attacker would) is refused.
        """
        gw = ssh_cert_gateway
        other = gw.new_key("other-ca")
        key = gw.new_key("foreign")
        sign(other, key.with_suffix(".pub"))

        _refused(gw, key, "certificate refused: signed by an untrusted CA")

    def test_ssh_keygen_certificate(self, ssh_cert_gateway: SshGateway) -> None:
        """
        A certificate ssh-keygen signs with the gateway's own CA key but
        without the identity the gateway puts in is refused.
        """
        gw = ssh_cert_gateway
        assert gw.ca_key is not None
        key = gw.new_key("keygen")
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-s",
                gw.ca_key,
                "-I",
                "ci-runner",
                "-n",
                "ci-runner",
                "-V",
                "-1m:+5m",
                key.with_suffix(".pub"),
            ],
            check=True,
            capture_output=True,
        )

        _refused(gw, key, "certificate refused: no identity@hoopgate extension")

    def test_mallory(self, ssh_cert_gateway: SshGateway) -> None:
        """
        A valid certificate for a subject without an access rule is
        refused by the access policy, and recorded as refused.
        """
        gw = ssh_cert_gateway
        assert gw.ca_key is not None
        key = gw.new_key("mallory")
        sign(gw.ca_key, key.with_suffix(".pub"), subject="mallory")
        mark = gw.gateway.recording_mark()

        _refused(gw, key, "mallory may not reach box")

        refused = [
            line
            for line in gw.gateway.lines_since(mark)
            if line["event"] == "session.refused"
        ]
        assert [(r["reason"], r["subject"]) for r in refused] == [
            ("access.denied", "mallory")
        ]

    def test_plain_key_refused(self, ssh_cert_gateway: SshGateway) -> None:
        """
        A key without a certificate, even one the CA signs for others,
        is never accepted.
        """
        gw = ssh_cert_gateway
        key = gw.new_key("plain")
        missing = key.with_name("plain-no-cert.pub")

        result = gw.certified(key, missing).ssh("box", "echo", "never")

        assert result.returncode == 255
        assert b"Permission denied (publickey" in result.stderr

    def test_askpass_token(self, ssh_cert_gateway: SshGateway) -> None:
        """
        On a listener with a CA, a short token through SSH_ASKPASS still
        logs in (keyboard-interactive).
        """
        result = ssh_cert_gateway.client().ssh("box", "echo token")

        assert (result.returncode, result.stdout) == (0, b"token\n"), result.stderr


class TestCli:
    """
    C{hoopgate ssh-cert} end to end, over HTTPS.
    """

    def test_ssh_cert_then_ssh(self, ssh_cert_gateway: SshGateway) -> None:
        """
        With the token in HOOPGATE_TOKEN, ssh-cert writes NAME-cert.pub
        beside NAME.pub, and ssh -i NAME logs in with it.
        """
        gw = ssh_cert_gateway
        key = gw.new_key("cli")
        token = gw.gateway.token()

        done = _ssh_cert(gw, key.with_suffix(".pub"), token)

        certificate = key.with_name("cli-cert.pub")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"wrote {certificate} (principal ci-runner")
        result = gw.certified(key).ssh("box", "echo via-cli")
        assert (result.returncode, result.stdout) == (0, b"via-cli\n"), result.stderr

    def test_refused_token(self, ssh_cert_gateway: SshGateway) -> None:
        gw = ssh_cert_gateway
        key = gw.new_key("cli-refused")
        token = gw.gateway.token(sub="mallory")

        done = _ssh_cert(gw, key.with_suffix(".pub"), token)

        assert done.returncode == 1
        assert done.stderr.strip() == "refused (403): access denied"
        assert not key.with_name("cli-refused-cert.pub").exists()

    def test_private_key_never_sent(self, ssh_cert_gateway: SshGateway) -> None:
        gw = ssh_cert_gateway
        key = gw.new_key("cli-private")
        token = gw.gateway.token()

        done = _ssh_cert(gw, key, token)

        assert done.returncode == 2
        assert "is a private key: give its .pub file" in done.stderr
