#!/usr/bin/env bash
# First run on a fresh machine: builds, creates local development keys (config/keys, ignored by git), starts the
# sample upstream on 127.0.0.1:5001 and the gateway (proxy 127.0.0.1:8080, assurance API 127.0.0.1:8081) with
# config/gateway.json. With Assurance:Store:Redis empty the gateway uses its embedded in-process store.
# Extra arguments go to the gateway, e.g.  deploy/local/start.sh --Assurance:Store:Redis=127.0.0.1:6379
set -euo pipefail
cd "$(dirname "$0")/../.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build Gateway.sln -c Release -nologo -v quiet
agw() { dotnet src/Gateway.Cli/bin/Release/net10.0/agw.dll "$@"; }
agw keys init --dir config/keys
# Both children run in the background and the script waits on them: bash runs a trap only once the foreground command
# has finished, so with the gateway in the foreground a `kill -TERM` of this script left the gateway and the upstream
# running (and the next start failed to bind). `wait` returns as soon as a signal arrives, the trap runs, and both stop.
# Ctrl+C reaches only this script (bash starts background children with SIGINT ignored): its trap stops both too.
# Started directly (not through the agw function) so that each $! is the dotnet process to stop.
children=()
stop() {
  if ((${#children[@]} > 0)); then
    kill -TERM "${children[@]}" 2>/dev/null || true
    wait "${children[@]}" 2>/dev/null || true # the ports are free once this script has exited
  fi
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
dotnet src/Gateway.Cli/bin/Release/net10.0/agw.dll upstream --urls http://127.0.0.1:5001 &
children+=($!)
cat <<'TXT'

  Assurance Gateway: sample upstream :5001; the proxy and the assurance API listen where the gateway's log says below
  (http://127.0.0.1:8080 and http://127.0.0.1:8081 unless --Urls or --Assurance:Api:Url say otherwise).
  In another shell:  alias agw='dotnet src/Gateway.Cli/bin/Release/net10.0/agw.dll'  and follow the README quickstart.

TXT
dotnet src/Gateway/bin/Release/net10.0/Gateway.dll "$@" &
children+=($!)
# The gateway's own exit (an invalid configuration, say) ends the script with its status, and the trap stops the upstream.
wait "${children[1]}"
