#!/usr/bin/env bash
# The test command of the README: installs what the tests need, builds, runs every test project, and ends with
# the line "N passed, M failed" summed over all results. Exit code is non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v yamllint >/dev/null 2>&1 || need_apt+=(yamllint)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)  # the canonical hash's independent reference (tests/Conformance)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests need: ${need_apt[*]} (install them with apt-get as root)" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null || {
    echo "apt-get install ${need_apt[*]} failed" >&2
    exit 1
  }
  # Debian starts a system redis on 6379; the tests start their own on free ports and never use it.
  (command -v systemctl >/dev/null && systemctl stop redis-server) >/dev/null 2>&1 || true
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
results=$(mktemp -d)
# What tests worked around without failing (a test Redis store that had to be started twice): printed below.
export AGW_TEST_NOTES="$results/notes.txt"
dotnet build Gateway.sln -c Release -nologo -v quiet || { echo "0 passed, 1 failed"; exit 1; }

status=0
for project in tests/*/*Tests.csproj; do
  name=$(basename "$project" .csproj)
  dotnet test "$project" -c Release --no-build -nologo \
    --logger "trx;LogFileName=$name.trx" --results-directory "$results" --blame-hang-timeout 5m || status=1
done

passed=0
failed=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
  p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters")
  f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
done

if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
  failed=1   # no results at all is a failure, not a pass
  status=1
fi

if [ -s "$AGW_TEST_NOTES" ]; then
  echo "test notes (worked around, not failures):"
  sed 's/^/  /' "$AGW_TEST_NOTES"
fi
echo "$passed passed, $failed failed"
exit $status
