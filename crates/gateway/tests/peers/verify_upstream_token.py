#!/usr/bin/env python3
"""How an MCP server checks the ephemeral token lockstep's gateway sends it (PyPI PyJWT).

    verify_upstream_token.py --jwks URL --issuer ISS --audience AUD --token T --request JSON

Exit 0 and prints the claims when the token is good for this very request; exit 1 with
the reason otherwise. In a server, call `check()` for every request before handling it.

The checks, in order:
  1. signature (ES256, or EdDSA for Ed25519 gateway keys) with the key named by `kid` in the gateway's JWKS
     (`https://<gateway>/.well-known/jwks.json`; PyJWKClient caches it and fetches it
     again for an unknown kid, which is how a key rotation at the gateway reaches you);
  2. `iss` = the gateway's `upstream_tokens.issuer`, `aud` = this server's
     `token_audience`, `exp` (no leeway needed: tokens live `upstream_tokens.lifetime`);
  3. for `tools/call`: `scope` = "tools/call:<the tool name you received>", and
     `args_sha256` = SHA-256 (hex) of the arguments you received as canonical JSON;
     for other methods `scope` starts with the method.
Keep `jti` for `lifetime` seconds and refuse a second use, if replays inside that
window matter to you.
"""
import argparse
import hashlib
import json
import sys

import jwt


def check(token: str, request: dict, jwks: jwt.PyJWKClient, issuer: str, audience: str) -> dict:
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["ES256", "EdDSA"], issuer=issuer, audience=audience,
                        options={"require": ["exp", "iss", "aud", "sub", "scope"]})
    method = request.get("method", "")
    params = request.get("params") or {}
    if method == "tools/call":
        want = f"tools/call:{params.get('name', '')}"
        if claims["scope"] != want:
            raise jwt.InvalidTokenError(f"scope {claims['scope']!r} is not {want!r}")
        canonical = json.dumps(params.get("arguments", {}), sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        if claims.get("args_sha256") != hashlib.sha256(canonical.encode()).hexdigest():
            raise jwt.InvalidTokenError("args_sha256 does not match the arguments")
    elif not claims["scope"].startswith(method):
        raise jwt.InvalidTokenError(f"scope {claims['scope']!r} is not for {method!r}")
    return claims


def main() -> int:
    p = argparse.ArgumentParser()
    for a in ("--jwks", "--issuer", "--audience", "--token", "--request"):
        p.add_argument(a, required=True)
    a = p.parse_args()
    try:
        claims = check(a.token, json.loads(a.request), jwt.PyJWKClient(a.jwks), a.issuer, a.audience)
    except jwt.PyJWTError as e:
        print(f"refused: {e}")
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
