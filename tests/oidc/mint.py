"""
Print an access token from the test OIDC issuer (C{tests/oidc/issuer.py}).

    python tests/oidc/mint.py --issuer http://127.0.0.1:54444 --sub ci-runner --ttl 600

C{--ttl} is in seconds; zero or negative prints an already-expired token.
Standard library only, so any Python 3 can run it.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request


def mint(
    issuer: str,
    sub: str,
    ttl: int,
    *,
    aud: str | None = None,
    groups: str | None = None,
    timeout: float = 10.0,
) -> str:
    """
    Ask C{issuer}'s C{/mint} endpoint for a token and return it.
    """
    if urllib.parse.urlsplit(issuer).scheme not in ("http", "https"):
        raise ValueError(f"issuer must be an http(s) URL, not {issuer!r}")
    fields = {"sub": sub, "ttl": str(ttl)}
    if aud:
        fields["aud"] = aud
    if groups:
        fields["groups"] = groups
    body = urllib.parse.urlencode(fields).encode()
    # The scheme was checked above: only http(s) URLs are opened.
    url = issuer.rstrip("/") + "/mint"
    request = urllib.request.Request(url, data=body)  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        token: str = response.read().decode().strip()
    return token


def main(argv: list[str] | None = None) -> int:
    """
    Parse the command line, print a token; exit 1 with a message on failure.
    """
    parser = argparse.ArgumentParser(description="Print a token from the test issuer.")
    parser.add_argument("--issuer", required=True, help="issuer URL")
    parser.add_argument("--sub", required=True, help="subject (e.g. ci-runner)")
    parser.add_argument(
        "--ttl",
        required=True,
        type=int,
        help="lifetime in seconds; zero or negative gives an expired token",
    )
    parser.add_argument("--aud", help="audience (default: the issuer's)")
    parser.add_argument("--groups", help="comma-separated group names")
    args = parser.parse_args(argv)
    try:
        token = mint(args.issuer, args.sub, args.ttl, aud=args.aud, groups=args.groups)
    except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
        print(f"mint.py: {e}", file=sys.stderr)
        return 1
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
