-- One wrk scenario, configured by environment variables (wrk's Lua has os.getenv):
--   BENCH_TOKEN, BENCH_SVID, BENCH_GRANT: headers to send when set
--   BENCH_TOKENS_FILE: a file of access tokens, one per line; each request takes the next (fresh-token scenario),
--   from line BENCH_TOKENS_FROM (0-based) on, BENCH_TOKENS_COUNT of them, split evenly between wrk's threads
--   BENCH_BODY_FILE: the exact body (1 KiB), sent with content-type application/json
-- done() prints one parseable line: RESULT requests=… duration_us=… non2xx=… p50_us=… p99_us=…
local token = os.getenv("BENCH_TOKEN")
local svid = os.getenv("BENCH_SVID")
local grant = os.getenv("BENCH_GRANT")
local tokens_file = os.getenv("BENCH_TOKENS_FILE")
local body_file = os.getenv("BENCH_BODY_FILE")
local tokens_from = tonumber(os.getenv("BENCH_TOKENS_FROM") or "0")
local tokens_count = tonumber(os.getenv("BENCH_TOKENS_COUNT") or "0")

wrk.method = "POST"
if body_file then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
end
wrk.headers["Content-Type"] = "application/json"
if token then wrk.headers["Authorization"] = "Bearer " .. token end
if svid then wrk.headers["Workload-Identity"] = svid end
if grant then wrk.headers["Assurance-Id"] = grant end

local tokens = nil
local next_token = 1
-- The fresh-token request is prebuilt around the token: wrk.format() per request costs the load generator
-- (which shares the machine with what it measures) far more than one concatenation.
local before_token, after_token = nil, nil
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("index", thread_count)
end

function init(args)
  if tokens_file then
    -- This thread's share of the run's slice: threads never send the same token, runs never repeat one.
    local threads_total = tonumber(os.getenv("BENCH_THREADS") or "2")
    local share = math.floor(tokens_count / threads_total)
    local first = tokens_from + ((index or 1) - 1) * share
    tokens = {}
    local line_number = 0
    for line in io.lines(tokens_file) do
      if line_number >= first + share then break end
      if line_number >= first then tokens[#tokens + 1] = line end
      line_number = line_number + 1
    end
    assert(#tokens > 0, "no tokens in the slice")
    local marker = "\1TOKEN\1"
    wrk.headers["Authorization"] = "Bearer " .. marker
    local template = wrk.format()
    local at = assert(string.find(template, marker, 1, true))
    before_token, after_token = string.sub(template, 1, at - 1), string.sub(template, at + #marker)
  end
end

-- Defined only for the fresh-token scenario: without request(), wrk sends its prebuilt request with no Lua per request.
if tokens_file then
  function request()
    local token = tokens[next_token]
    next_token = next_token % #tokens + 1
    return before_token .. token .. after_token
  end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
