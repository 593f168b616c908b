-- Shared `done` callback of the bench/ wrk scripts: one machine-readable line for
-- bench/tools/bench.py. Latencies in microseconds; `status` counts answers with a status
-- of 400 or more (wrk's own rule; no scenario here answers 1xx or 3xx).
return function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
