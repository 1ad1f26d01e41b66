-- wrk script for bench/run.py: counts only HTTP 200 answers whose body has the success
-- line, and prints one machine-readable line at the end.
--   wrk ... -s bench/probe.lua URL -- "ssl_probe_success 1"   (or "probe_success 1")
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

-- "{n}" in the path becomes a number unique to this request (thread id and counter), so
-- that no two probes are identical (ssl_exporter would coalesce identical ones).
function request()
  counter = counter + 1
  local path = string.gsub(wrk.path, "{n}", id .. "x" .. counter)
  return wrk.format(nil, path)
end

function init(args)
  counter = 0
  -- A line start before the name, so "probe_success 1" does not match "ssl_probe_success 1".
  marker = "\n" .. (args[1] or "probe_success 1")
  ok = 0
  bad = 0
end

function response(status, headers, body)
  if status == 200 and string.find(body, marker, 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad = 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_bad = total_bad + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"ok": %d, "bad": %d, "requests": %d, "duration_us": %d, ' ..
    '"errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_status": %d, ' ..
    '"errors_timeout": %d, "latency_p50_us": %d, "latency_p99_us": %d, "latency_max_us": %d}\n',
    total_ok, total_bad, summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
