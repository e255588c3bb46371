#!/usr/bin/env bash
# A guided run of the seed stories against a real gateway: starts Redis when it is installed (else the embedded
# store), the sample upstream and the gateway on free ports, then prints each request and the gateway's answer.
# Everything it starts is stopped on exit.
set -euo pipefail
# What a fresh Debian lacks is said before anything is built or started (curl is not in a minimal install; without it
# the script used to build, start everything, wait 20 s and stop at the first request). python3 is optional.
missing=()
for tool in dotnet curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]} > 0)); then
  echo "deploy/local/demo.sh needs: ${missing[*]} (curl: apt-get install curl; dotnet: the .NET 10 SDK, see the README)" >&2
  exit 1
fi
cd "$(dirname "$0")/../.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build Gateway.sln -c Release -nologo -v quiet >/dev/null
agw() { dotnet src/Gateway.Cli/bin/Release/net10.0/agw.dll "$@"; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT INT TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }

agw keys init --dir config/keys >/dev/null
proxy=$(port); api=$(port); up=$(port)
store_args=()
if command -v redis-server >/dev/null; then
  rport=$(port)
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
  pids+=($!)
  store_args=(--Assurance:Store:Redis="127.0.0.1:$rport")
  echo "store: redis-server on 127.0.0.1:$rport"
else
  echo "store: embedded in-process (install redis-server to see the Redis store)"
fi
# Started directly (not through the agw function) so that $! is the dotnet process the trap must stop.
dotnet src/Gateway.Cli/bin/Release/net10.0/agw.dll upstream --urls "http://127.0.0.1:$up" >"$work/upstream.log" 2>&1 &
pids+=($!)
dotnet src/Gateway/bin/Release/net10.0/Gateway.dll --Urls "http://127.0.0.1:$proxy" --Assurance:Api:Url "http://127.0.0.1:$api" \
  --ReverseProxy:Clusters:sample:Destinations:d1:Address "http://127.0.0.1:$up" "${store_args[@]}" >"$work/gateway.log" 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$api/readyz" >/dev/null && { ready=1; break; }; sleep 0.2; done
if [ "$ready" = 0 ]; then
  echo "the gateway is not ready after 20 s (http://127.0.0.1:$api/readyz); its log:" >&2
  cat "$work/gateway.log" >&2
  exit 1
fi
export AGW_API="http://127.0.0.1:$api"
P="http://127.0.0.1:$proxy"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { # show METHOD PATH [curl args...]: prints the request line and the gateway's status and reason
  local method=$1 path=$2; shift 2
  local out code
  out=$(curl -s -o "$work/body" -w '%{http_code}' -X "$method" "$P$path" "$@")
  code=$out
  printf '  %s %s -> %s %s\n' "$method" "$path" "$code" "$(sed -n 's/.*"reason":"\([^"]*\)".*/\1/p' "$work/body")"
}

T=$(agw token --sub alice --acr urn:aal2)
CI=spiffe://prod.example/ns/ci/sa/deployer
W=$(agw svid --id "$CI")
W2=$(agw svid --id spiffe://prod.example/ns/dev/sa/intruder)
A=$(agw token --sub release-manager --aud assurance-api --acr urn:aal2 --scope "assurance:grant assurance:read assurance:revoke assurance:approve")
printf '{"release":"5.2"}' >"$work/release.json"
new_grant() { agw grant create --as "$A" -q --route deploy --subject alice --token "$T" --workload "$CI" --method POST \
  --path /deploy/v1/releases --header "content-type: application/json" --body "$work/release.json" --reason "CHG-1234 release 5.2"; }
release() { show POST /deploy/v1/releases -H "Authorization: Bearer $T" -H "Assurance-Id: $1" -H "content-type: application/json" \
  --data-binary @"$work/release.json" -H "Workload-Identity: $2"; }

step "1. A CI release, approved once for this token, this job and this exact request"
ID=$(new_grant); echo "  grant $ID"
release "$ID" "$W"
step "2. The same request again: the replay is denied"
release "$ID" "$W"
step "3. The grant leaks to another workload: denied, and the grant is burned"
ID2=$(new_grant); echo "  grant $ID2"
release "$ID2" "$W2"
release "$ID2" "$W"
step "4. An AI agent's tool call is challenged, approved by a human, and allowed once"
AGENT=$(agw token --sub alice --acr urn:aal1 --sid agent-session-7)
AW=$(agw svid --id spiffe://prod.example/ns/agents/sa/copilot)
call() { show POST /agent/tools/kubectl -H "Authorization: Bearer $AGENT" -H "Workload-Identity: $AW" -H "content-type: application/json" \
  --data-binary '{"args":["rollout","restart","deploy/api"]}' "$@"; }
call
G=$(sed -n 's/.*"grantId":"\([^"]*\)".*/\1/p' "$work/body"); echo "  pending grant $G"
BOB=$(agw token --sub bob --aud assurance-api --acr urn:aal2 --scope "assurance:read assurance:approve")
echo "  alice tries to approve her own agent's call:"; agw grant approve --as "$(agw token --sub alice --aud assurance-api --acr urn:aal2 --scope assurance:approve)" "$G" 2>&1 | sed 's/^/    /' | head -1 || true
echo "  bob approves:"; agw grant approve --as "$BOB" "$G" | tr -d '\n' | sed 's/^/    /'; echo
call -H "Assurance-Id: $G"
call -H "Assurance-Id: $G"
step "5. The evidence, read back from the API"
for g in "$ID" "$ID2" "$G"; do
  echo "  grant $g:"
  agw grant show --as "$A" "$g" | python3 -c 'import json,sys; g=json.load(sys.stdin); print("    status", g["status"], "| uses left", g["usesRemaining"]); [print("    ", e["type"], e.get("reason",""), e.get("workload",""), e.get("actor",""), "trace", e.get("traceId","")) for e in g["events"]]' 2>/dev/null \
    || agw grant show --as "$A" "$g"
done
step "Denials in the gateway log (event 200), hashes and ids only"
grep -o 'Denied [a-z_]* route=[a-z-]* .*traceId=[0-9a-f]*' "$work/gateway.log" | cut -c1-160 | sed 's/^/  /' || true
