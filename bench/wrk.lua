-- wrk.lua — the one wrk script every bench run uses (wrk takes a single -s script).
--
--   BENCH_BODY_BYTES=N   send POST requests with an N-byte body (the 64 KiB upload run);
--                        unset or 0 = the method/body wrk was given (GET).
--
-- done() prints one machine-readable line that bench/bench.py parses:
--   BENCH_RESULT {"requests":..,"duration_us":..,"bytes":..,"errors":{..},"latency_us":{..}}
-- wrk --latency only prints p50/75/90/99; p99.9 comes from latency:percentile(99.9) here.
-- wrk counts a response as errors.status when its status is >= 400.

local body_bytes = tonumber(os.getenv("BENCH_BODY_BYTES") or "0") or 0
if body_bytes > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("x", body_bytes)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
  local e = summary.errors
  local function p(q) return latency:percentile(q) end
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"p50":%d,"p75":%d,"p90":%d,' ..
    '"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, p(50), p(75), p(90), p(99), p(99.9),
    latency.max))
end
