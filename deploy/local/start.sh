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
# Started directly (not through the agw function) so that $! is the dotnet process the trap must stop.
dotnet src/Gateway.Cli/bin/Release/net10.0/agw.dll upstream --urls http://127.0.0.1:5001 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT INT TERM
cat <<'TXT'

  Assurance Gateway: proxy http://127.0.0.1:8080, assurance API http://127.0.0.1:8081, sample upstream :5001.
  In another shell:  alias agw='dotnet src/Gateway.Cli/bin/Release/net10.0/agw.dll'  and follow the README quickstart.

TXT
dotnet src/Gateway/bin/Release/net10.0/Gateway.dll "$@"
