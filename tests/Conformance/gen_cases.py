#!/usr/bin/env python3
"""Seeded generator of awkward inputs for the canonical request hash (SPEC section 4.2).

Each case is the input format of canonical_hash.py plus the reference's answer ("hash", and "canonical" to show
in a failure message). The C# conformance tests feed the same inputs to the gateway and compare.

  gen_cases.py --seed 42 --count 300 [--profile any|api|wire] [--bound NAME ...] [--path-prefix /route]

Profiles: "any" is everything the text of section 4.2 can express (raw non-ASCII in the query, lower-case escapes,
dot segments); "api" stays within what the assurance API accepts as a bound request (so that it answers with a
hash rather than a 400); "wire" is what a client can send through the proxy and have forwarded unchanged.
--bound fixes the bound header names (a route's policy) instead of drawing them per case; --path-prefix puts every
path under a route.
"""
import argparse
import base64
import json
import random
import sys

import canonical_hash

METHODS_ANY = ["GET", "get", "Post", "PUT", "delete", "PATCH", "options", "PROPFIND", "m-search", "X_CUSTOM", "purge"]
METHODS_API = ["GET", "get", "Post", "PUT", "delete", "PATCH", "options", "PROPFIND", "purge"]
METHODS_WIRE = ["GET", "POST", "PUT", "DELETE", "PATCH", "PROPFIND", "PURGE"]

# Path segments: unreserved, reserved sub-delims, escapes of both cases, escapes of unreserved characters (which a
# proxy might decode), escaped '/', UTF-8 escapes, raw non-ASCII, dot segments.
SEGMENTS_WIRE = ["a", "v1", "releases", "A-Z_0.9~", "!$&'()*+,;=:@", "%C3%A9", "%E2%82%AC", "%F0%9F%98%80", "%20",
                 "%25", "%22", "%3C%3E", "a%20b", "x+y", "semi;colon", "@me", "..a", "a..", ".hidden", ""]
SEGMENTS_ANY = SEGMENTS_WIRE + ["%41", "%7e", "%7E", "%2F", "%2f", "%c3%a9", "é", "€", "😀", ".", "..", "%2E", "%2e%2e",
                                "a b", "%", "%zz"]

PAIRS_WIRE = ["a=1", "a=", "a", "=", "=x", "b=2", "b=%20", "b=+", "B=1", "c=%2B", "c=%C3%A9", "d=%F0%9F%98%80",
              "e=a,b", "f=/x?y", "g=%26", "h=%3D", "~=x", "z=1;y=2", "k=v=w", "x-y_z.w=1", "a=10", "a=2"]
PAIRS_ANY = PAIRS_WIRE + ["c=%c3%a9", "c=é", "d=😀", "d=\ue000", "d=\uffff", "u=%7E", "u=%7e", "s=a b", "q=\"x\"",
                          "t={}", "n=%41"]

HEADER_NAMES = ["content-type", "x-tag", "accept", "x-request-id"]
VALUES = ["application/json", "text/plain; charset=utf-8", "a", "b", "a,b", "a, b", "1", "  padded  ", "\ttabbed\t",
          " \t mixed \t ", "inner  spaces", "x;y=z", "\"quoted\"", "semi;colon", "UPPER", "0"]


def random_case(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def gen_case(rng: random.Random, profile: str, fixed_bound, prefix: str) -> dict:
    methods = {"any": METHODS_ANY, "api": METHODS_API, "wire": METHODS_WIRE}[profile]
    segments = SEGMENTS_ANY if profile == "any" else SEGMENTS_WIRE
    pairs = PAIRS_ANY if profile == "any" else PAIRS_WIRE

    method = rng.choice(methods)
    n_seg = rng.randint(0, 4)
    path = "/" + "/".join(rng.choice(segments) for _ in range(n_seg))
    if profile == "any" and rng.random() < 0.05:
        path = ""
    path = prefix + path

    chosen = [rng.choice(pairs) for _ in range(rng.randint(0, 5))]
    if profile != "any":
        # The gateway refuses a repeated name out of canonical order (the hash sorts pairs, an upstream may not): keep the
        # pairs of each name in byte order, as a well-behaved client sends them.
        chosen = sorted(chosen, key=canonical_hash.utf8_key) if rng.random() < 0.5 else dedupe_names(chosen)
    parts = []
    for p in chosen:
        if profile == "any" and rng.random() < 0.2:
            parts.append("")  # an empty pair: "a=1&&b=2", "&a=1", "a=1&"
        parts.append(p)
    query = "&".join(parts)
    if rng.random() < 0.1 and profile != "wire":
        query = "?" + query  # an issuer may write one leading '?'

    bound = rng.sample(HEADER_NAMES, rng.randint(0, 3))
    bound = [random_case(rng, b) for b in bound]
    if bound and profile != "api" and rng.random() < 0.3:
        bound.append(random_case(rng, rng.choice(bound)))  # the same name twice, in another case
    if fixed_bound is not None:
        bound = list(fixed_bound)

    headers = []
    for hname in HEADER_NAMES:
        if rng.random() < 0.5:
            continue
        for _ in range(rng.randint(1, 3) if hname != "content-type" else rng.randint(1, 2)):
            headers.append([random_case(rng, hname), rng.choice(VALUES)])
    rng.shuffle(headers)
    if profile == "api":
        # The API takes only bound headers, one JSON member per header (a string, or an array for repeated lines).
        lowered = {b.lower() for b in bound}
        headers = [h for h in headers if h[0].lower() in lowered]

    r = rng.random()
    if r < 0.2:
        body = None
    elif r < 0.3:
        body = b""
    elif r < 0.95:
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    else:
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(60000, 70000)))

    case = {"method": method, "path": path, "query": query, "headers": headers, "boundHeaders": bound,
            "body": None if body is None else base64.b64encode(body).decode("ascii")}
    case["hash"] = canonical_hash.request_hash(case)
    case["canonical"] = canonical_hash.canonical(case)
    return case


def dedupe_names(pairs: list) -> list:
    seen, out = set(), []
    for p in pairs:
        name = p.split("=", 1)[0].lower()
        if name not in seen:
            seen.add(name)
            out.append(p)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--profile", choices=["any", "api", "wire"], default="any")
    parser.add_argument("--bound", nargs="*")
    parser.add_argument("--path-prefix", default="")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cases = [gen_case(rng, args.profile, args.bound, args.path_prefix) for _ in range(args.count)]
    json.dump(cases, sys.stdout, ensure_ascii=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
