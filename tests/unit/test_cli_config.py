"""
Tests for how C{hoopgate} reads its configuration (L{hoopgate.cli},
L{hoopgate._config} offline loading, L{hoopgate._configreader}): the
commands that read recordings or judge policy work when the secrets and
files only a running gateway uses are gone (a stopped demo's), C{check}
still reports them, and every configuration error names the file, an
unknown key's the keys known there.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from hoopgate import cli, tap
from hoopgate._config import load_config
from hoopgate._configreader import ConfigError
from hoopgate._interfaces import IProtocolPlugin
from tests.unit.test_config import temporary_folder

#: Like the demo's configuration after the demo stopped: every secret,
#: CA file, known_hosts and key it names under GONE is gone.
STOPPED_DEMO = """\
gateway:
  admin:
    listen: "tcp:51105:interface=127.0.0.1"
    tls:
      certificate: {gone}/admin.crt
      key: {gone}/admin.key
  recordings:
    directory: {recordings}
  store:
    kind: redis
    url: "redis://127.0.0.1:40191/0"
    password: {{file: {gone}/redis/redis.pw}}
    prefix: "hoopgate-demo:"
  approvals:
    public_url: "http://127.0.0.1:51105"
    link_secret: {{file: {gone}/link.secret}}
    groups:
      dba: "cn=dba-approvers,ou=groups,dc=example,dc=org"
    directory:
      url: "ldap://127.0.0.1:49527"
      start_tls: true
      ca: {gone}/tls.crt
      bind_dn: "cn=admin,dc=example,dc=org"
      bind_password: {{file: {gone}/ldap/admin.pw}}
      people: "ou=people,dc=example,dc=org"
    notify:
      - kind: email
        host: 127.0.0.1
        port: 34175
        from: hoopgate@example.org
        ca: {gone}/tls.crt
        username: hoopgate
        password: {{env: HOOPGATE_TEST_GONE_SMTP}}
listeners:
  - name: pg
    protocol: postgres
    listen: "tcp:60545:interface=127.0.0.1"
    tls:
      certificate: {gone}/tls.crt
      key: {gone}/tls.key
  - name: ssh
    protocol: ssh
    listen: "tcp:48667:interface=127.0.0.1"
    host_key: {gone}/ssh_host_ed25519
    certificates:
      ca_key: {gone}/ssh_ca
targets:
  - name: box
    protocol: ssh
    host: 127.0.0.1
    port: 36769
    known_hosts: {gone}/ssh/known_hosts
    credentials:
      - name: app
        user: root
        private_key: {{file: {gone}/ssh/client_ed25519}}
  - name: appdb
    protocol: postgres
    host: 127.0.0.1
    port: 50543
    database: appdb
    tls:
      mode: verify-full
      ca: {gone}/tls.crt
    credentials:
      - name: app
        user: app
        password: {{file: {gone}/pg/app.pw}}
policy:
  access:
    - name: ci-runner-all
      subjects: [ci-runner]
      targets: ["*"]
      credential: app
  guardrails:
    - name: no-destructive
      deny:
        commands: [DROP]
        writes: [canary]
{masking}  approvals:
    - name: customer-deletes
      mode: hold
      approvers: [dba]
      when:
        commands: [DELETE]
        writes: [customers]
"""


def line_of(path: Path, needle: str) -> int:
    """
    The number of the first line of the file at C{path} holding
    C{needle}.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, x in enumerate(lines, 1) if needle in x)


def plugins() -> dict[str, IProtocolPlugin]:
    from hoopgate_plugins.postgres._plugin import plugin as postgres
    from hoopgate_plugins.ssh._plugin import plugin as ssh

    return {"postgres": postgres, "ssh": ssh}


class StoppedDemoTests(SynchronousTestCase):
    """
    C{sessions list}, C{sessions show} and C{policy test} read the
    configuration offline; C{check} and the gateway read it whole.
    """

    def setUp(self) -> None:
        self.folder = Path(temporary_folder(self))
        self.gone = self.folder / "gone"
        self.recordings = self.folder / "recordings"
        self.recordings.mkdir()
        self.path = self.folder / "hoopgate.yaml"
        self.write()
        line = {
            "v": 1,
            "seq": 1,
            "event": "command",
            "verdict": "allow",
            "protocol": "ssh",
            "target": "box",
            "command": "uptime",
            "at": 1796347146.0,
        }
        (self.recordings / "s1.jsonl").write_text(json.dumps(line) + "\n")

    def write(self, masking: str = "") -> None:
        text = STOPPED_DEMO.format(
            gone=self.gone, recordings=self.recordings, masking=masking
        )
        self.path.write_text(text, encoding="utf-8")

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["--config", str(self.path), *argv], plugins())
        return code, out.getvalue(), err.getvalue()

    def test_sessions(self) -> None:
        """
        C{sessions list} and C{sessions show} read the recordings.
        """
        listed = self.run_cli("sessions", "list", "--json")
        shown = self.run_cli("sessions", "show", "s1")

        assert (listed[0], listed[2]) == (0, "")
        assert [r["session_id"] for r in json.loads(listed[1])] == ["s1"]
        assert (shown[0], shown[2]) == (0, "")
        assert shown[1].splitlines()[-1] == "    1 command              allow   uptime"

    def test_policy_test(self) -> None:
        """
        C{policy test} judges on both targets, the credential's user
        known though its password file is gone.
        """
        ssh = self.run_cli(
            "policy",
            "test",
            "--json",
            "--subject",
            "ci-runner",
            "--target",
            "box",
            "uptime",
        )
        sql = self.run_cli(
            "policy",
            "test",
            "--json",
            "--subject",
            "ci-runner",
            "--target",
            "appdb",
            "drop table canary",
        )

        assert (ssh[0], ssh[2]) == (0, "")
        assert json.loads(ssh[1])["results"][0]["verdict"] == "allow"
        assert (sql[0], sql[2]) == (0, "")
        result = json.loads(sql[1])
        assert result["judged_as"]["user"] == "app"
        assert result["results"][0]["rule"] == "no-destructive"

    def test_check_reports_missing_secret(self) -> None:
        """
        C{check} reads every secret and file, so it names the first that
        is gone, with the file and line; exit code 2.
        """
        first = self.run_cli("check")
        self.gone.mkdir()
        for name in ("admin.crt", "admin.key"):
            (self.gone / name).write_text("not checked further at load\n")
        code, out, err = self.run_cli("check")

        assert first[0] == 2
        assert first[2] == (
            f"invalid configuration: {self.path}: gateway.admin.tls.certificate "
            f"(line 5): {self.gone}/admin.crt is not a readable file\n"
        )
        assert (code, out) == (2, "")
        line = line_of(self.path, "redis.pw")
        assert err == (
            f"invalid configuration: {self.path}: gateway.store.password "
            f"(line {line}): cannot read {self.gone}/redis/redis.pw: No such file "
            "or directory\n"
        )

    def test_gateway_reads_whole(self) -> None:
        """
        What the gateway loads (no C{offline}) still reads secrets and
        files at once.
        """
        with pytest.raises(ConfigError) as raised:
            load_config(str(self.path), plugins())

        assert str(raised.value) == (
            f"{self.path}: gateway.admin.tls.certificate (line 5): "
            f"{self.gone}/admin.crt is not a readable file"
        )

    def test_offline_settings_left_out(self) -> None:
        """
        Loaded offline, what only a running gateway uses is not read.
        """
        config = load_config(str(self.path), plugins(), offline=True)

        assert config.offline is True
        assert (config.gateway.redis, config.gateway.approvals) == (None, None)
        assert [t.settings for t in config.targets.values()] == [None, None]
        assert [x.settings for x in config.listeners] == [None, None]
        assert config.targets["appdb"].credentials["app"].user == "app"

    def test_secret_read_when_revealed(self) -> None:
        """
        Offline, a secret is read when something reveals it: an error
        naming key and line while the file is gone, its value once it
        is there.
        """
        config = load_config(str(self.path), plugins(), offline=True)
        password = config.targets["appdb"].credentials["app"].password
        assert password is not None

        with pytest.raises(ConfigError) as raised:
            password.reveal()
        (self.gone / "pg").mkdir(parents=True)
        (self.gone / "pg" / "app.pw").write_text("s3cret\n")

        line = line_of(self.path, "app.pw")
        assert str(raised.value) == (
            f"targets[1].credentials[0].password (line {line}): cannot read "
            f"{self.gone}/pg/app.pw: No such file or directory"
        )
        assert password.reveal() == "s3cret"
        assert "s3cret" not in repr(password) + str(password)

    def test_masking_key_read(self) -> None:
        """
        A secret policy reading needs (the masking hash key) is read
        offline too, and a missing one is an error naming it.
        """
        self.write(masking=f"  masking:\n    key: {{file: {self.gone}/mask.key}}\n")

        code, _, err = self.run_cli(
            "policy", "test", "--subject", "ci-runner", "--target", "appdb", "x"
        )

        line = line_of(self.path, "mask.key")
        assert code == 2
        assert err == (
            f"invalid configuration: {self.path}: policy.masking.key (line {line}): "
            f"cannot read {self.gone}/mask.key: No such file or directory\n"
        )

    def test_offline_still_checks_policy(self) -> None:
        """
        Offline reading still refuses a policy the gateway would refuse.
        """
        self.path.write_text(
            self.path.read_text().replace("commands: [DROP]", "comands: [DROP]")
        )

        code, _, err = self.run_cli(
            "policy", "test", "--subject", "ci-runner", "--target", "appdb", "x"
        )

        line = line_of(self.path, "comands")
        assert code == 2
        assert err.startswith(
            f"invalid configuration: {self.path}: policy.guardrails[0].deny.comands "
            f"(line {line}): is not a known key (known: command_lines, "
        )


class ErrorMessageTests(SynchronousTestCase):
    """
    A configuration error names the file, as the documentation shows.
    """

    def setUp(self) -> None:
        self.path = Path(temporary_folder(self), "hoopgate.yaml")

    def refusal(self, text: str, *command: str) -> tuple[int, str]:
        self.path.write_text(text, encoding="utf-8")
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            code = cli.main(["--config", str(self.path), *command], {})
        return code, err.getvalue()

    def test_names_file(self) -> None:
        """
        A policy error: file, key path, line, reason.
        """
        text = "policy:\n  guardrails:\n    - name: x\n      deny: {effects: [reed]}\n"

        assert self.refusal(text, "check") == (
            2,
            f"invalid configuration: {self.path}: policy.guardrails[0].deny.effects "
            "(line 4): unknown effect 'reed' (known: ddl, privilege, read, session, "
            "transaction, unknown, write)\n",
        )

    def test_unknown_key_lists_known(self) -> None:
        """
        An unknown key names the keys known at its place.
        """
        text = "policy:\n  access: []\n  acess: []\n"

        assert self.refusal(text, "sessions", "list") == (
            2,
            f"invalid configuration: {self.path}: policy.acess (line 3): is not a "
            "known key (known: access, approvals, guardrails, masking, recording, "
            "version)\n",
        )

    def test_yaml_error_names_file_once(self) -> None:
        """
        A YAML error already names the file; it is not named twice.
        """
        assert self.refusal("policy:\n  access: [\n", "check") == (
            2,
            f"invalid configuration: {self.path} (line 3): expected the node "
            "content, but found '<stream end>'\n",
        )

    def test_duplicate_key_names_file(self) -> None:
        """
        An error found while parsing (a duplicate key) names the file.
        """
        assert self.refusal("policy: {}\npolicy: {}\n", "check") == (
            2,
            f"invalid configuration: {self.path}: policy (line 2): duplicate key\n",
        )

    def test_twistd(self) -> None:
        """
        C{twistd hoopgate} says the same.
        """
        self.path.write_text("policy:\n  access: []\n  acess: []\n")

        with pytest.raises(usage.UsageError) as raised:
            # usage.Options has no annotations (Twisted's own).
            options = tap.Options()  # type: ignore[no-untyped-call]
            options.parseOptions(["--config", str(self.path)])  # type: ignore[no-untyped-call]

        assert str(raised.value) == (
            f"invalid configuration: {self.path}: policy.acess (line 3): is not a "
            "known key (known: access, approvals, guardrails, masking, recording, "
            "version)"
        )
