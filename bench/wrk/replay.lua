-- wrk script of `qminder-bridge-bench light`: replays pre-signed Qminder webhooks.
-- Reads BODIES (default "bodies.tsv"): one `signature<TAB>body` per line, signed as Qminder
-- signs (see bench/src/events.rs). Each connection cycles through the lines from its own
-- offset, so requests are ready-made: the generator signs nothing while it runs.
-- At the end it prints one JSON line, prefixed "light:", for the harness to read.

local path = os.getenv("BODIES") or "bodies.tsv"
local requests = {}
for line in io.lines(path) do
  local signature, body = line:match("^([^\t]+)\t(.*)$")
  if signature then
    requests[#requests + 1] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["X-Qminder-Signature"] = signature,
    }, body)
  end
end
if #requests == 0 then
  error("no signature<TAB>body lines in " .. path)
end

local threads = 0
local next_index = 1

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 7919)
end

function init(args)
  next_index = (offset or 0) % #requests + 1
end

function request()
  local r = requests[next_index]
  next_index = next_index % #requests + 1
  return r
end

function done(summary, latency, requests_)
  local errors = summary.errors
  io.write(string.format(
    'light: {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
