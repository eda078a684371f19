"""
Who is calling: the identity a credential proved.

test-case-name: tests.unit.test_oidc
"""

from __future__ import annotations

from attrs import field, frozen


@frozen
class Identity:
    """
    A caller proved by a credential, as policy sees it.

    Attributes:
        subject: The stable subject name policy matches (C{ci-runner}).
        issuer: The issuer URL that vouched for it.
        groups: Group names the claim mapping produced.
        token_id_hash: A SHA-256 prefix of the token's C{jti} (or of the
            token when it has none); never the token itself.
        expires_at: POSIX time at which the credential stops being valid,
            or C{None} when it does not expire.
        claims: Selected non-secret claims kept for policy and records.
    """

    subject: str
    issuer: str
    groups: tuple[str, ...] = ()
    token_id_hash: str = ""
    expires_at: float | None = None
    claims: tuple[tuple[str, str], ...] = field(default=())

    def as_record(self) -> dict[str, object]:
        """
        Describe this identity for recordings and logs (no secrets).
        """
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "groups": list(self.groups),
            "token_id_hash": self.token_id_hash,
            "expires_at": self.expires_at,
        }
