#!/usr/bin/env bash
# The benchmark: the gateway against plain YARP (same YARP version and settings) on this machine, same run.
#   deploy/bench/run.sh            3 interleaved rounds of 10 s per scenario (about 4 minutes)
#   deploy/bench/run.sh --quick    1 round of 3 s (smoke run)
# Everything shares this machine's cores: the load generator, Redis, the upstream, YARP and the gateway. Compare the
# ratios of one round, not absolute numbers across machines.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=3; duration=10
if [ "${1:-}" = "--quick" ]; then rounds=1; duration=3; fi
threads=2; connections=32

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "install ${missing[*]} first" >&2; exit 1; }
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build Gateway.sln -c Release -nologo -v quiet >/dev/null
bench="dotnet tests/AssuranceGateway.Benchmarks/bin/Release/net10.0/AssuranceGateway.Benchmarks.dll"
agw="dotnet src/Gateway.Cli/bin/Release/net10.0/agw.dll"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 150); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; echo "not up: $1" >&2; exit 1; }

redis_port=$(port); up=$(port); plain=$(port); gw=$(port); api=$(port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 & pids+=($!)
$bench upstream --urls "http://127.0.0.1:$up" & pids+=($!)
$bench plain-yarp --urls "http://127.0.0.1:$plain" --upstream "http://127.0.0.1:$up" & pids+=($!)
$agw keys init --dir "$work/keys" >/dev/null
cat >"$work/gateway.json" <<JSON
{
  "Urls": "http://127.0.0.1:$gw",
  "Logging": { "LogLevel": { "Default": "Warning" } },
  "ReverseProxy": {
    "Routes": {
      "pass":  { "ClusterId": "up", "Match": { "Path": "/pass/{**rest}" },  "Metadata": { "AssurancePolicy": "passthrough" } },
      "token": { "ClusterId": "up", "Match": { "Path": "/token/{**rest}" }, "Metadata": { "AssurancePolicy": "token-only" } },
      "bound": { "ClusterId": "up", "Match": { "Path": "/bound/{**rest}" }, "Metadata": { "AssurancePolicy": "bound" } },
      "fresh": { "ClusterId": "up", "Match": { "Path": "/fresh/{**rest}" }, "Metadata": { "AssurancePolicy": "bound-no-token" } }
    },
    "Clusters": { "up": { "Destinations": { "d1": { "Address": "http://127.0.0.1:$up" } } } }
  },
  "Assurance": {
    "Policies": {
      "token-only": { "Bind": [], "RequiresGrant": false },
      "bound": { "Bind": [ "token", "workload", "request" ], "MaxUses": 1000000, "MaxTtl": "02:00:00", "BoundHeaders": [ "content-type" ], "MaxBodyBytes": 65536 },
      "bound-no-token": { "Bind": [ "workload", "request" ], "MaxUses": 1000000, "MaxTtl": "02:00:00", "BoundHeaders": [ "content-type" ], "MaxBodyBytes": 65536 }
    },
    "Tokens": { "Issuers": [ { "Issuer": "https://idp.example", "Audiences": [ "gateway" ], "JwksFile": "$work/keys/idp.jwks.json", "Algorithms": [ "ES256" ] } ] },
    "Workload": { "Sources": [ "header" ], "Issuers": [ { "Issuer": "spiffe://prod.example", "JwksFile": "$work/keys/workload.jwks.json" } ], "Audience": "gateway" },
    "Store": { "Redis": "127.0.0.1:$redis_port", "Timeout": "00:00:01" },
    "Api": { "Url": "http://127.0.0.1:$api", "Audience": "assurance-api" }
  }
}
JSON
dotnet src/Gateway/bin/Release/net10.0/Gateway.dll --config "$work/gateway.json" >"$work/gateway.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$up/"; wait_http "http://127.0.0.1:$plain/"; wait_http "http://127.0.0.1:$api/readyz"

# Credentials and grants, made the way operators make them (agw), valid for the whole run.
python3 -c 'import sys; a, b = "{\"payload\":\"", "\"}"; sys.stdout.write(a + "x" * (1024 - len(a) - len(b)) + b)' >"$work/body.json"
test "$(wc -c <"$work/body.json")" -eq 1024
token=$($agw token --key "$work/keys/idp.private.jwk.json" --sub bench --acr urn:aal2 --ttl 3600)
svid=$($agw svid --key "$work/keys/workload.private.jwk.json" --id spiffe://prod.example/ns/bench/sa/load --ttl 3600)
approver=$($agw token --key "$work/keys/idp.private.jwk.json" --sub approver --aud assurance-api --acr urn:aal2 --scope assurance:grant --ttl 3600)
export AGW_API="http://127.0.0.1:$api"
grant() { $agw grant create --as "$approver" -q --route "$1" --workload spiffe://prod.example/ns/bench/sa/load --method POST \
  --path "/$1/bench" --header "content-type: application/json" --body "$work/body.json" --max-uses 1000000 --ttl 7200 "${@:2}"; }
bound_grant=$(grant bound --token "$token")
fresh_grant=$(grant fresh)
fresh_count=$(( (rounds * duration * 12000) + 20000 ))
$bench mint --key "$work/keys/idp.private.jwk.json" --count "$fresh_count" --out "$work/tokens.txt"

run() { # run NAME URL [env...]: one wrk run, prints "NAME RESULT ..."
  local name=$1 url=$2; shift 2
  local out
  out=$(env "$@" BENCH_BODY_FILE="$work/body.json" wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s deploy/bench/scenario.lua "$url" | grep '^RESULT')
  echo "$name $out"
}
evalsha() { redis-cli -p "$redis_port" info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p'; }

echo "warming up" >&2
for url in "http://127.0.0.1:$plain/bound/bench" "http://127.0.0.1:$gw/bound/bench"; do
  env BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant" BENCH_BODY_FILE="$work/body.json" \
    wrk -t2 -c16 -d3s -s deploy/bench/scenario.lua "$url" >/dev/null
done

results="$work/results.txt"
for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds" >&2
  { echo "ROUND $round"
    run plain "http://127.0.0.1:$plain/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
    run passthrough "http://127.0.0.1:$gw/pass/bench"
    run token-only "http://127.0.0.1:$gw/token/bench" BENCH_TOKEN="$token"
    before=$(evalsha)
    run full-binding "http://127.0.0.1:$gw/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
    echo "EVALSHA $(( $(evalsha) - before ))"
    run fresh-token "http://127.0.0.1:$gw/fresh/bench" BENCH_TOKENS_FILE="$work/tokens.txt" BENCH_SVID="$svid" BENCH_GRANT="$fresh_grant"
  } >>"$results"
done

# One connection: the latency a single caller sees.
connections=1; threads=1
{ echo "ROUND latency"
  run plain-1conn "http://127.0.0.1:$plain/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
  run passthrough-1conn "http://127.0.0.1:$gw/pass/bench"
  run token-only-1conn "http://127.0.0.1:$gw/token/bench" BENCH_TOKEN="$token"
  run full-binding-1conn "http://127.0.0.1:$gw/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
} >>"$results"

# Grant issuance through the API (each request creates a new grant).
threads=2; connections=32
cat >"$work/issue.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $approver"
wrk.body = '{"route":"bound","tokenHash":"sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","workload":"spiffe://prod.example/ns/bench/sa/load","requestHash":"sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","ttlSeconds":60}'
function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
LUA
{ echo "ROUND api"
  echo "issuance $(wrk -t2 -c32 -d"${duration}s" --latency -s "$work/issue.lua" "http://127.0.0.1:$api/assurance/v1/grants" | grep '^RESULT')"
} >>"$results"

python3 - "$results" "$(nproc)" "$(uptime | sed 's/.*load average: //')" <<'PY'
import re, statistics, sys
path, cores, load = sys.argv[1], sys.argv[2], sys.argv[3]
rounds, current = {}, None
for line in open(path):
    parts = line.split()
    if parts[0] == "ROUND":
        current = rounds.setdefault(parts[1], {})
    elif parts[0] == "EVALSHA":
        current["evalsha"] = int(parts[1])
    else:
        kv = dict(p.split("=") for p in parts[2:])
        ok = int(kv["requests"]) - int(kv["non2xx"])
        current[parts[0]] = dict(rps=ok / (int(kv["duration_us"]) / 1e6), p50=int(kv["p50_us"]), p99=int(kv["p99_us"]),
                                 ok=ok, non2xx=int(kv["non2xx"]))
load_rounds = [r for k, r in rounds.items() if k.isdigit()]
print(f"\nAssurance Gateway vs plain YARP: {len(load_rounds)} round(s), {cores} cores, load average after: {load}")
print(f"{'scenario':<14}{'rps':>9}{'p50 µs':>9}{'p99 µs':>9}{'× plain':>9}{'non-2xx':>9}")
for name in ["plain", "passthrough", "token-only", "full-binding", "fresh-token"]:
    rows = [r[name] for r in load_rounds]
    ratios = [r[name]["rps"] / r["plain"]["rps"] for r in load_rounds]
    print(f"{name:<14}{statistics.median(x['rps'] for x in rows):>9.0f}{statistics.median(x['p50'] for x in rows):>9.0f}"
          f"{statistics.median(x['p99'] for x in rows):>9.0f}{statistics.median(ratios):>9.2f}{sum(x['non2xx'] for x in rows):>9}")
per = [r["evalsha"] / r["full-binding"]["ok"] for r in load_rounds if r["full-binding"]["ok"]]
print(f"Redis EVALSHA per allowed request (full binding): {statistics.median(per):.3f}")
lat = rounds["latency"]
base = lat["plain-1conn"]["p50"]
print("one connection, p50 (added over plain YARP): plain %d µs, passthrough %d (+%d), token-only %d (+%d), full binding %d (+%d)" % (
    base, lat["passthrough-1conn"]["p50"], lat["passthrough-1conn"]["p50"] - base, lat["token-only-1conn"]["p50"],
    lat["token-only-1conn"]["p50"] - base, lat["full-binding-1conn"]["p50"], lat["full-binding-1conn"]["p50"] - base))
api = rounds["api"]["issuance"]
print(f"grant issuance through the API: {api['rps']:.0f} grants/s (p50 {api['p50']} µs, non-201 {api['non2xx']})")
PY
