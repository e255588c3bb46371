#!/usr/bin/env python3
"""Independent reference of the canonical request hash and the token hash (SPEC section 4.2).

Written from the SPEC text alone (not from the gateway's code) so that a differential test can tell
a gateway bug from a shared misreading. Standard library only.

Input: one JSON object, or a JSON array of them, from the file named on the command line or stdin:
  {"method": "POST", "path": "/deploy/v1", "query": "b=2&a=1",
   "headers": [["Content-Type", "application/json"], ["X-A", " 1 "], ["x-a", "2"]],   # wire order
   "boundHeaders": ["content-type", "X-A"],
   "body": "<base64>" | null}                                                      # null: no body
  {"token": "<raw JWT>"}                                                            # token hash
Output: one `sha256:...` per input, one per line, in input order.
`--canonical` prints the canonical string (JSON-quoted) instead of its hash, for debugging.
"""
import base64
import hashlib
import json
import sys

PREFIX = "AGW-REQUEST-V1"
OWS = " \t"  # RFC 9110 section 5.6.3: optional whitespace is SP / HTAB only


def b64url(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def ascii_upper(s: str) -> str:
    # A method is an RFC 9110 token (ASCII); upper-case only ASCII letters, never a locale rule.
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s)


def utf8_key(s: str) -> bytes:
    # "sorted by ordinal byte order": compare the UTF-8 bytes, not UTF-16 code units.
    return s.encode("utf-8", "surrogatepass")


def canonical(req: dict) -> str:
    method = ascii_upper(req.get("method") or "")
    path = req.get("path") or ""
    if path == "":
        path = "/"
    query = req.get("query") or ""
    if query.startswith("?"):
        query = query[1:]
    pairs = sorted((p for p in query.split("&") if p != ""), key=utf8_key)
    lines = [PREFIX, method, path, "&".join(pairs)]
    out = "\n".join(lines) + "\n"

    wire = req.get("headers") or []
    names = sorted({n.lower() for n in (req.get("boundHeaders") or [])}, key=utf8_key)
    for name in names:
        values = [v.strip(OWS) for (n, v) in wire if n.lower() == name]
        out += name + ":" + ",".join(values) + "\n"

    body = req.get("body")
    raw = base64.b64decode(body) if body else b""
    out += hashlib.sha256(raw).hexdigest()
    return out


def request_hash(req: dict) -> str:
    return "sha256:" + b64url(hashlib.sha256(canonical(req).encode("utf-8", "surrogatepass")).digest())


def token_hash(token: str) -> str:
    return "sha256:" + b64url(hashlib.sha256(token.encode("ascii")).digest())


def main(argv: list) -> int:
    show_canonical = "--canonical" in argv
    args = [a for a in argv[1:] if a != "--canonical"]
    text = open(args[0], encoding="utf-8").read() if args else sys.stdin.read()
    doc = json.loads(text)
    items = doc if isinstance(doc, list) else [doc]
    out = []
    for item in items:
        if "token" in item:
            out.append(token_hash(item["token"]))
        elif show_canonical:
            out.append(json.dumps(canonical(item)))
        else:
            out.append(request_hash(item))
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
