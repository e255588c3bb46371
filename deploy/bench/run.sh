#!/usr/bin/env bash
# The benchmark: the gateway against plain YARP (same YARP version and settings) on this machine, same run.
#   deploy/bench/run.sh            3 interleaved rounds of 10 s per scenario (about 14 minutes)
#   deploy/bench/run.sh --quick    1 round of 3 s (smoke run)
#   deploy/bench/run.sh --pinned   the proxy measured alone on one CPU, the load generator, Redis and the upstream on another
# By default everything shares this machine's cores: the load generator, Redis, the upstream, YARP and the gateway.
# Compare the ratios of one round, not absolute numbers across machines.
set -euo pipefail
rounds=3; duration=10; warmup=6; pinned=0
# Arguments first, before anything is installed or started: any other word used to start the full run.
usage() {
  printf '%s\n' "usage: deploy/bench/run.sh [--quick] [--pinned]" \
    "  (none)    3 interleaved rounds of 10 s per scenario (about 14 minutes)" \
    "  --quick   1 round of 3 s (smoke run)" \
    "  --pinned  the proxies (plain YARP and the gateways) on the second CPU this may use, everything else (wrk, Redis," \
    "            the upstream) on the first:" \
    "            the proxy's own cost, as on a host where the clients and Redis have cores of their own" \
    "Installs wrk, redis-server and nginx-light with apt-get when missing (as root); BENCH_UPSTREAM=dotnet uses the .NET upstream."
}
for arg in "$@"; do
  case "$arg" in
    --quick) rounds=1; duration=3; warmup=3 ;;
    --pinned) pinned=1 ;;
    -h | --help) usage; exit 0 ;;
    *) printf 'unknown argument: %s (usage: deploy/bench/run.sh [--quick] [--pinned], or --help)\n' "$arg" >&2; exit 2 ;;
  esac
done
# --pinned needs what it needs before anything is installed (as root) or built, like the arguments themselves.
if [ "$pinned" = 1 ]; then
  command -v taskset >/dev/null && command -v nproc >/dev/null || { echo "--pinned needs taskset and nproc (util-linux, coreutils)" >&2; exit 1; }
fi
# The first two CPUs this script may run on (a container may be given CPUs 2 and 3, not 0 and 1): with --pinned the
# proxy runs on the second and everything else on the first; every run reports how busy both were.
allowed_cpus() {
  local part list
  list=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)
  local IFS=,
  for part in $list; do
    if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
  done
}
mapfile -t cpus < <(allowed_cpus | head -n 2)
rest_cpu=${cpus[0]:-0}; proxy_cpu=${cpus[1]:-}
if [ "$pinned" = 1 ] && [ -z "$proxy_cpu" ]; then echo "--pinned needs two CPUs" >&2; exit 1; fi
# One CPU for a proxy's threads and its tiered compilation together: it takes about twice as long to warm up.
if [ "$pinned" = 1 ]; then warmup=$(( warmup * 2 )); fi
cd "$(dirname "$0")/../.."
threads=2; connections=32

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v python3 >/dev/null || missing+=(python3)
# The cheap upstream is nginx, as in the issue's baseline: one worker answering `200 ok` from memory costs a stable
# ~25-30 µs of CPU per request. The .NET upstream (`Benchmarks upstream`, BENCH_UPSTREAM=dotnet) is kept as a
# fallback only: its CPU per request is bistable (~40 µs when fed by plain YARP, 90-115 µs when fed by a freshly
# started gateway, thread-pool spin state), which moved the gateway's ratios by up to 0.2 between runs.
upstream_kind=${BENCH_UPSTREAM:-nginx}
[ "$upstream_kind" = nginx ] && { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light); }
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "install ${missing[*]} first" >&2; exit 1; }
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# --pinned: prefixes for the processes measured (the proxies) and for everything that serves or loads them.
on_proxy=(); on_rest=()
if [ "$pinned" = 1 ]; then
  on_proxy=(taskset -c "$proxy_cpu"); on_rest=(taskset -c "$rest_cpu")
fi
dotnet build Gateway.sln -c Release -nologo -v quiet >/dev/null
bench="dotnet tests/AssuranceGateway.Benchmarks/bin/Release/net10.0/AssuranceGateway.Benchmarks.dll"
agw="dotnet src/Gateway.Cli/bin/Release/net10.0/agw.dll"
work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  # A failed run says why: the last lines of every process's log (they go with the work directory otherwise).
  if [ "$status" -ne 0 ]; then for f in "$work"/*.log; do [ -s "$f" ] && { echo "== $f" >&2; tail -n 20 "$f" >&2; }; done; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 150); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; echo "not up: $1" >&2; exit 1; }

redis_port=$(port); up=$(port); plain=$(port); gw=$(port); api=$(port); gws=$(port); apis=$(port); gwe=$(port); apie=$(port)
"${on_rest[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 & pids+=($!)
if [ "$upstream_kind" = nginx ]; then
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server { listen 127.0.0.1:$up; location / { return 200 "ok"; } }
}
NGINX
  PATH="$PATH:/usr/sbin" "${on_rest[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" & pids+=($!)
  nginx_master=$!
else
  "${on_rest[@]}" $bench upstream --urls "http://127.0.0.1:$up" & pids+=($!)
fi
"${on_proxy[@]}" $bench plain-yarp --urls "http://127.0.0.1:$plain" --upstream "http://127.0.0.1:$up" & pids+=($!)
$agw keys init --dir "$work/keys" >/dev/null
# The issuer also signs with an RSA-2048 key (RS256, what most IdPs sign access tokens with by default), published in
# the same JWKS: the fresh-token scenario runs with each algorithm, because the signature check is most of its cost.
$bench rsa-key --private "$work/keys/rsa.private.jwk.json" --public "$work/keys/rsa.public.jwk.json"
python3 - "$work/keys" <<'PY'
import json, sys
keys = sys.argv[1]
jwks = json.load(open(f"{keys}/idp.jwks.json"))
jwks["keys"].append(json.load(open(f"{keys}/rsa.public.jwk.json")))
json.dump(jwks, open(f"{keys}/idp.jwks.json", "w"))
PY
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
    "Tokens": { "Issuers": [ { "Issuer": "https://idp.example", "Audiences": [ "gateway" ], "JwksFile": "$work/keys/idp.jwks.json", "Algorithms": [ "ES256", "RS256" ] } ] },
    "Workload": { "Sources": [ "header" ], "Issuers": [ { "Issuer": "spiffe://prod.example", "JwksFile": "$work/keys/workload.jwks.json" } ], "Audience": "gateway" },
    "Store": { "Redis": "127.0.0.1:$redis_port", "Timeout": "00:00:01" },
    "Api": { "Url": "http://127.0.0.1:$api", "Audience": "assurance-api" }
  }
}
JSON
"${on_proxy[@]}" dotnet src/Gateway/bin/Release/net10.0/Gateway.dll --config "$work/gateway.json" >"$work/gateway.log" 2>&1 & pids+=($!)
gateway_pid=$!
# The same gateway with signed evidence (Assurance-Evidence, one ES256 signature per allowed request), as in
# config/gateway.json: a second process, so that both are measured in the same rounds.
# And a diagnostic third one with the embedded in-process store instead of Redis: the same code and decision without the
# network round trip, so the difference between it and the first is what the Redis round trip costs in that round.
python3 - "$work" "$gws" "$apis" "$gwe" "$apie" <<'PY'
import json, sys
work, port, api, eport, eapi = sys.argv[1:]
c = json.load(open(f"{work}/gateway.json"))
c["Urls"] = f"http://127.0.0.1:{port}"
c["Assurance"]["Api"]["Url"] = f"http://127.0.0.1:{api}"
c["Assurance"]["Evidence"] = {"SigningKeyFile": f"{work}/keys/evidence.jwk.json"}
json.dump(c, open(f"{work}/gateway-signed.json", "w"), indent=2)
c = json.load(open(f"{work}/gateway.json"))
c["Urls"] = f"http://127.0.0.1:{eport}"
c["Assurance"]["Api"]["Url"] = f"http://127.0.0.1:{eapi}"
del c["Assurance"]["Store"]
json.dump(c, open(f"{work}/gateway-embedded.json", "w"), indent=2)
PY
"${on_proxy[@]}" dotnet src/Gateway/bin/Release/net10.0/Gateway.dll --config "$work/gateway-signed.json" >"$work/gateway-signed.log" 2>&1 & pids+=($!)
signed_pid=$!
"${on_proxy[@]}" dotnet src/Gateway/bin/Release/net10.0/Gateway.dll --config "$work/gateway-embedded.json" >"$work/gateway-embedded.log" 2>&1 & pids+=($!)
embedded_pid=$!
wait_http "http://127.0.0.1:$up/"; wait_http "http://127.0.0.1:$plain/"
for a in "$api" "$apis" "$apie"; do wait_http "http://127.0.0.1:$a/readyz"; done

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
embedded_grant=$(AGW_API="http://127.0.0.1:$apie" grant bound --token "$token")
fresh_grant=$(grant fresh)
# Fresh tokens: every wrk run takes a slice of its own (the warm-up too), so no token is ever sent twice.
slice=$(( duration * 15000 )); fresh_count=$(( (rounds + 1) * slice ))
$bench mint --key "$work/keys/idp.private.jwk.json" --count "$fresh_count" --out "$work/tokens.txt"
# RS256 tokens take ~0.26 ms each to sign (ES256 ~0.02): minted while the warm-ups run, for at most 12,000 requests/s
# (the report says so if a run was faster and a token came round again).
rs_slice=$(( duration * 12000 )); rs_count=$(( (rounds + 1) * rs_slice ))
"${on_rest[@]}" $bench mint --key "$work/keys/rsa.private.jwk.json" --count "$rs_count" --out "$work/tokens-rs256.txt" & rs_mint=$!; pids+=("$rs_mint")

redis_pid=$(pgrep -f "redis-server 127.0.0.1:$redis_port" | head -1)
if [ "$upstream_kind" = nginx ]; then upstream_pid=$(pgrep -P "$nginx_master" | head -1)  # the one worker
else upstream_pid=$(pgrep -f "Benchmarks.dll upstream --urls http://127.0.0.1:$up" | head -1); fi
plain_pid=$(pgrep -f "Benchmarks.dll plain-yarp --urls http://127.0.0.1:$plain" | head -1)
cpu_ticks() { for p in "$gateway_pid" "$signed_pid" "$plain_pid" "$upstream_pid" "$redis_pid" "$embedded_pid"; do awk '{print $14+$15}' "/proc/$p/stat"; done | paste -sd' '; }
# Busy and total ticks of the first two allowed CPUs (/proc/stat): whether the proxy's core, or the other, was the limit.
# Always both (with one CPU there is no second: 0,0, so the report does not fail on a missing field).
core_ticks() { awk -v a="cpu$rest_cpu" -v b="cpu${proxy_cpu:-none}" '$1 == a || $1 == b {t[$1] = $2+$3+$4+$7+$8 "," $2+$3+$4+$5+$6+$7+$8}
  END {print ((a in t) ? t[a] : "0,0") "," ((b in t) ? t[b] : "0,0")}' /proc/stat; }
run() { # run NAME URL [env...]: one wrk run, prints "NAME RESULT ... cpu=<ticks before>/<ticks after> cores=<before>/<after>"
  local name=$1 url=$2; shift 2
  local out before cores
  before=$(cpu_ticks); cores=$(core_ticks)
  out=$("${on_rest[@]}" env "$@" BENCH_BODY_FILE="$work/body.json" wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s deploy/bench/scenario.lua "$url" | grep '^RESULT')
  echo "$name $out cpu=${before// /,}/$(cpu_ticks | tr ' ' ',') cores=$cores/$(core_ticks)"
}
evalsha() { redis-cli -p "$redis_port" info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p'; }

echo "warming up" >&2
warm() { "${on_rest[@]}" env "$@" BENCH_BODY_FILE="$work/body.json" wrk -t2 -c16 -d"${warmup}s" -s deploy/bench/scenario.lua "${url}" >/dev/null; }
url="http://127.0.0.1:$plain/bound/bench"; warm BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
url="http://127.0.0.1:$gw/pass/bench"; warm
url="http://127.0.0.1:$gw/token/bench"; warm BENCH_TOKEN="$token"
url="http://127.0.0.1:$gw/bound/bench"; warm BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
url="http://127.0.0.1:$gws/bound/bench"; warm BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
url="http://127.0.0.1:$gwe/bound/bench"; warm BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$embedded_grant"
url="http://127.0.0.1:$gw/fresh/bench"; warm BENCH_TOKENS_FILE="$work/tokens.txt" BENCH_TOKENS_FROM=0 BENCH_TOKENS_COUNT="$slice" BENCH_SVID="$svid" BENCH_GRANT="$fresh_grant"
wait "$rs_mint"
url="http://127.0.0.1:$gw/fresh/bench"; warm BENCH_TOKENS_FILE="$work/tokens-rs256.txt" BENCH_TOKENS_FROM=0 BENCH_TOKENS_COUNT="$rs_slice" BENCH_SVID="$svid" BENCH_GRANT="$fresh_grant"
# A process needs more than 8 s of load on these two busy vCPUs before tiered compilation is done: the ones that serve
# a single scenario (plain YARP, the signed and the embedded gateway) get a second pass, like the first gateway's four.
url="http://127.0.0.1:$plain/bound/bench"; warm BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
url="http://127.0.0.1:$gws/bound/bench"; warm BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
url="http://127.0.0.1:$gwe/bound/bench"; warm BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$embedded_grant"

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
    run fresh-token "http://127.0.0.1:$gw/fresh/bench" BENCH_TOKENS_FILE="$work/tokens.txt" BENCH_TOKENS_FROM=$(( round * slice )) \
      BENCH_TOKENS_COUNT="$slice" BENCH_SVID="$svid" BENCH_GRANT="$fresh_grant"
    run fresh-token-rs256 "http://127.0.0.1:$gw/fresh/bench" BENCH_TOKENS_FILE="$work/tokens-rs256.txt" BENCH_TOKENS_FROM=$(( round * rs_slice )) \
      BENCH_TOKENS_COUNT="$rs_slice" BENCH_SVID="$svid" BENCH_GRANT="$fresh_grant"
    run full-binding-signed "http://127.0.0.1:$gws/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
    run full-binding-embedded "http://127.0.0.1:$gwe/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$embedded_grant"
  } >>"$results"
done

# One connection: the latency a single caller sees (interleaved rounds too: one run alone is noisy on 2 cores).
connections=1; threads=1
for round in $(seq 1 "$rounds"); do
  { echo "ROUND latency$round"
    run plain-1conn "http://127.0.0.1:$plain/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
    run passthrough-1conn "http://127.0.0.1:$gw/pass/bench"
    run token-only-1conn "http://127.0.0.1:$gw/token/bench" BENCH_TOKEN="$token"
    run full-binding-1conn "http://127.0.0.1:$gw/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
    run full-binding-signed-1conn "http://127.0.0.1:$gws/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$bound_grant"
    run full-binding-embedded-1conn "http://127.0.0.1:$gwe/bound/bench" BENCH_TOKEN="$token" BENCH_SVID="$svid" BENCH_GRANT="$embedded_grant"
  } >>"$results"
done

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
# What one round trip to this Redis costs by itself, from a C client: back to back (redis-benchmark, one connection), and
# when Redis idles 10 ms between commands (redis-cli --latency), as between the consumes of a single slow caller.
{ echo "ROUND redis"
  echo "redis-busy $("${on_rest[@]}" redis-benchmark -p "$redis_port" -c 1 -n 20000 -t ping_mbulk --csv | tr -d '"' | awk -F, '$1 == "PING_MBULK" {print "p50_ms=" $5}')"
  echo "redis-idle $("${on_rest[@]}" timeout -s INT 5 redis-cli -p "$redis_port" --latency --raw 2>/dev/null | tail -1 | awk '{print "avg_ms=" $3}')"
} >>"$results"
{ echo "ROUND api"
  echo "issuance $("${on_rest[@]}" wrk -t2 -c32 -d"${duration}s" --latency -s "$work/issue.lua" "http://127.0.0.1:$api/assurance/v1/grants" | grep '^RESULT')"
} >>"$results"

python3 - "$results" "$(nproc)" "$(uptime | sed 's/.*load average: //')" "$(getconf CLK_TCK)" "$upstream_kind" "$pinned" "$rest_cpu" "${proxy_cpu:--}" "$slice" "$rs_slice" <<'PY'
import statistics, sys
path, cores, load, tick, upstream, pinned = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6] == "1"
slices = {"fresh-token": int(sys.argv[9]), "fresh-token-rs256": int(sys.argv[10])}
first_cpu, second_cpu = f"cpu{sys.argv[7]}", f"cpu{sys.argv[8]}"
processes = ["gateway", "gateway-signed", "plain-yarp", "upstream", "redis", "gateway-embedded"]
rounds, current = {}, None
for line in open(path):
    parts = line.split()
    if parts[0] == "ROUND":
        current = rounds.setdefault(parts[1], {})
    elif parts[0] == "EVALSHA":
        current["evalsha"] = int(parts[1])
    elif parts[0].startswith("redis-"):
        current[parts[0]] = parts[1].split("=", 1)[1] if len(parts) > 1 else "?"
    else:
        kv = dict(p.split("=", 1) for p in parts[2:])
        ok = int(kv["requests"]) - int(kv["non2xx"])
        row = dict(rps=ok / (int(kv["duration_us"]) / 1e6), p50=int(kv["p50_us"]), p99=int(kv["p99_us"]), ok=ok,
                   non2xx=int(kv["non2xx"]))
        if "cpu" in kv:
            before, after = ([int(x) for x in half.split(",")] for half in kv["cpu"].split("/"))
            row["cpu"] = [(a - b) / tick * 1e6 / max(int(kv["requests"]), 1) for a, b in zip(after, before)]
        if "cores" in kv:
            before, after = ([int(x) for x in half.split(",")] for half in kv["cores"].split("/"))
            row["busy"] = [100 * (after[i] - before[i]) / max(after[i + 1] - before[i + 1], 1) for i in (0, 2)]
        current[parts[0]] = row
load_rounds = [r for k, r in rounds.items() if k.isdigit()]
names = ["plain", "passthrough", "token-only", "full-binding", "fresh-token", "fresh-token-rs256", "full-binding-signed",
         "full-binding-embedded"]
placement = (f"pinned: the proxy alone on {second_cpu}; wrk, Redis and the upstream on {first_cpu}" if pinned
             else "everything shares the cores")
print(f"\nAssurance Gateway vs plain YARP: {len(load_rounds)} round(s), {cores} cores, upstream {upstream}, {placement}, load average after: {load}")
print(f"{'scenario':<23}{'rps':>8}{'p50 µs':>8}{'p99 µs':>8}{'× plain':>9}{'non-2xx':>8}  {'busy % ' + first_cpu:>13}{second_cpu:>5}   CPU µs per request: " + " ".join(f"{p:>8}" for p in ["proxy", "upstream", "redis"]))
for name in names:
    rows = [r[name] for r in load_rounds]
    ratios = [r[name]["rps"] / r["plain"]["rps"] for r in load_rounds]
    proxy = {"plain": 2, "full-binding-signed": 1, "full-binding-embedded": 5}.get(name, 0)
    cpu = [statistics.median(x["cpu"][i] for x in rows) for i in (proxy, 3, 4)]
    print(f"{name:<23}{statistics.median(x['rps'] for x in rows):>8.0f}{statistics.median(x['p50'] for x in rows):>8.0f}"
          f"{statistics.median(x['p99'] for x in rows):>8.0f}{statistics.median(ratios):>9.2f}{sum(x['non2xx'] for x in rows):>8}"
          f"  {'':<8}" + "".join(f"{statistics.median(x['busy'][i] for x in rows):>5.0f}" for i in (0, 1))
          + f"   {'':<20}" + " ".join(f"{c:>8.0f}" for c in cpu))
for name, slice in slices.items():
    over = [r[name]["ok"] + r[name]["non2xx"] for r in load_rounds if r[name]["ok"] + r[name]["non2xx"] > slice]
    if over:
        print(f"WARNING: {name} sent {max(over)} requests in a run with {slice} tokens: some tokens came round again (cache hits)")
print("per round (× plain): " + "; ".join(
    f"{n} " + " ".join(f"{r[n]['rps'] / r['plain']['rps']:.2f}" for r in load_rounds) for n in names[1:]))
per = [r["evalsha"] / r["full-binding"]["ok"] for r in load_rounds if r["full-binding"]["ok"]]
print(f"Redis EVALSHA per allowed request (full binding): {statistics.median(per):.3f}")
latency = [r for k, r in rounds.items() if k.startswith("latency")]
def p50(name):
    return statistics.median(r[name + "-1conn"]["p50"] for r in latency)
def added(name):
    return statistics.median(r[name + "-1conn"]["p50"] - r["plain-1conn"]["p50"] for r in latency)
print("one connection, p50, median of %d rounds (added over plain YARP in the same round): plain %d µs" % (len(latency), p50("plain")) + "".join(
    f", {n} {p50(n):.0f} (+{added(n):.0f})" for n in ["passthrough", "token-only", "full-binding", "full-binding-signed", "full-binding-embedded"]))
redis = rounds["redis"]
print(f"one round trip to this Redis (PING from a C client): p50 {redis['redis-busy']} ms back to back, "
      f"average {redis['redis-idle']} ms when it idles 10 ms between commands")
api = rounds["api"]["issuance"]
print(f"grant issuance through the API: {api['rps']:.0f} grants/s (p50 {api['p50']} µs, non-201 {api['non2xx']})")
PY
