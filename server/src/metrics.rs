//! Prometheus metrics, in the text exposition format (version 0.0.4): requests by
//! endpoint and status, latency histograms per endpoint, tokens issued by format,
//! client-authentication failures, and the introspection cache's hits and misses.
//! Lock-free on the request path (atomics in a `dashmap` keyed by static labels).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::audit_log::AuditCounters;
use dashmap::DashMap;
use heartgate_core::introspect::CacheStats;

/// Histogram bucket upper bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: DashMap<(&'static str, u16), AtomicU64>,
    latency: DashMap<&'static str, Histogram>,
    tokens: DashMap<&'static str, AtomicU64>,
    auth_failures: DashMap<&'static str, AtomicU64>,
    paced: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn bump<K: std::hash::Hash + Eq>(m: &DashMap<K, AtomicU64>, k: K) {
    if let Some(c) = m.get(&k) {
        c.fetch_add(1, Ordering::Relaxed);
        return;
    }
    m.entry(k).or_default().fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Count a finished request.
    pub fn request(&self, endpoint: &'static str, status: u16, seconds: f64) {
        bump(&self.requests, (endpoint, status));
        let record = |h: &Histogram| {
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.buckets[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            h.count.fetch_add(1, Ordering::Relaxed);
            h.sum_micros
                .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        };
        if let Some(h) = self.latency.get(endpoint) {
            record(&h);
            return;
        }
        record(&self.latency.entry(endpoint).or_default());
    }

    /// Count an issued access token of `format` (`jwt`, `opaque`, `wrapper`).
    pub fn token_issued(&self, format: &'static str) {
        bump(&self.tokens, format);
    }

    /// Count a refused client authentication at `endpoint`.
    pub fn auth_failure(&self, endpoint: &'static str) {
        bump(&self.auth_failures, endpoint);
    }

    /// Count a request that waited for its connection's rate limit.
    pub fn paced(&self) {
        self.paced.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with the cache's counters and the audit log's.
    pub fn render(&self, cache: &CacheStats, audit: Option<AuditCounters>) -> String {
        let mut o = String::with_capacity(4096);
        let _ = writeln!(
            o,
            "# HELP heartgate_requests_total HTTP requests by endpoint and status."
        );
        let _ = writeln!(o, "# TYPE heartgate_requests_total counter");
        let mut rows: Vec<_> = self
            .requests
            .iter()
            .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
            .collect();
        rows.sort();
        for ((ep, st), n) in rows {
            let _ = writeln!(
                o,
                "heartgate_requests_total{{endpoint=\"{ep}\",status=\"{st}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP heartgate_request_duration_seconds Request latency by endpoint."
        );
        let _ = writeln!(o, "# TYPE heartgate_request_duration_seconds histogram");
        let mut eps: Vec<&'static str> = self.latency.iter().map(|e| *e.key()).collect();
        eps.sort_unstable();
        for ep in eps {
            if let Some(h) = self.latency.get(ep) {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "heartgate_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"{b}\"}} {}",
                        h.buckets[i].load(Ordering::Relaxed)
                    );
                }
                let count = h.count.load(Ordering::Relaxed);
                let _ = writeln!(
                    o,
                    "heartgate_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"+Inf\"}} {count}"
                );
                let _ = writeln!(
                    o,
                    "heartgate_request_duration_seconds_sum{{endpoint=\"{ep}\"}} {}",
                    h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
                );
                let _ = writeln!(
                    o,
                    "heartgate_request_duration_seconds_count{{endpoint=\"{ep}\"}} {count}"
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP heartgate_tokens_issued_total Access tokens issued by format."
        );
        let _ = writeln!(o, "# TYPE heartgate_tokens_issued_total counter");
        for f in ["jwt", "opaque", "wrapper"] {
            let n = self.tokens.get(f).map_or(0, |c| c.load(Ordering::Relaxed));
            let _ = writeln!(o, "heartgate_tokens_issued_total{{format=\"{f}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP heartgate_client_auth_failures_total Refused client authentications by endpoint.");
        let _ = writeln!(o, "# TYPE heartgate_client_auth_failures_total counter");
        let mut rows: Vec<_> = self
            .auth_failures
            .iter()
            .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
            .collect();
        rows.sort();
        for (ep, n) in rows {
            let _ = writeln!(
                o,
                "heartgate_client_auth_failures_total{{endpoint=\"{ep}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# HELP heartgate_introspection_cache_lookups_total Introspection cache lookups by result.");
        let _ = writeln!(
            o,
            "# TYPE heartgate_introspection_cache_lookups_total counter"
        );
        let _ = writeln!(
            o,
            "heartgate_introspection_cache_lookups_total{{result=\"hit\"}} {}",
            cache.hits
        );
        let _ = writeln!(
            o,
            "heartgate_introspection_cache_lookups_total{{result=\"miss\"}} {}",
            cache.misses
        );
        let total = cache.hits + cache.misses;
        let ratio = if total == 0 {
            0.0
        } else {
            cache.hits as f64 / total as f64
        };
        let _ = writeln!(
            o,
            "# HELP heartgate_introspection_cache_hit_ratio Hits over lookups since start."
        );
        let _ = writeln!(o, "# TYPE heartgate_introspection_cache_hit_ratio gauge");
        let _ = writeln!(o, "heartgate_introspection_cache_hit_ratio {ratio}");
        let _ = writeln!(o, "# HELP heartgate_requests_paced_total Requests that waited for their connection's rate limit.");
        let _ = writeln!(o, "# TYPE heartgate_requests_paced_total counter");
        let _ = writeln!(
            o,
            "heartgate_requests_paced_total {}",
            self.paced.load(Ordering::Relaxed)
        );
        // The audit log: events that could not be written are never silent (THREATS S8).
        if let Some(a) = audit {
            for (name, help, n) in [
                (
                    "heartgate_audit_events_lost_total",
                    "Audit events nobody waited for that could not be written.",
                    a.lost,
                ),
                (
                    "heartgate_audit_events_refused_total",
                    "Audit events that could not be written, their requests refused (503).",
                    a.refused,
                ),
                (
                    "heartgate_audit_queue_waits_total",
                    "Audit events whose caller waited for room in the writer's queue.",
                    a.waited,
                ),
                (
                    "heartgate_audit_batches_total",
                    "Batches of audit lines written, one write each.",
                    a.batches,
                ),
            ] {
                let _ = writeln!(o, "# HELP {name} {help}");
                let _ = writeln!(o, "# TYPE {name} counter");
                let _ = writeln!(o, "{name} {n}");
            }
        }
        // Tasks alive on the server's runtime (connections, requests in flight, background
        // tasks): back at its idle level when the load stops, or something leaks.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let _ = writeln!(
                o,
                "# HELP heartgate_runtime_alive_tasks Tasks alive on the server's async runtime."
            );
            let _ = writeln!(o, "# TYPE heartgate_runtime_alive_tasks gauge");
            let _ = writeln!(
                o,
                "heartgate_runtime_alive_tasks {}",
                rt.metrics().num_alive_tasks()
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::default();
        m.request("token", 200, 0.002);
        m.request("token", 200, 0.2);
        m.request("token", 401, 0.001);
        m.token_issued("jwt");
        m.auth_failure("token");
        let text = m.render(&CacheStats::default(), None);
        assert!(text.contains("heartgate_requests_total{endpoint=\"token\",status=\"200\"} 2"));
        assert!(text.contains(
            "heartgate_request_duration_seconds_bucket{endpoint=\"token\",le=\"0.0025\"} 2"
        ));
        assert!(text.contains("heartgate_request_duration_seconds_count{endpoint=\"token\"} 3"));
        assert!(text.contains("heartgate_tokens_issued_total{format=\"jwt\"} 1"));
        assert!(text.contains("heartgate_client_auth_failures_total{endpoint=\"token\"} 1"));
        assert!(text.contains("heartgate_introspection_cache_hit_ratio 0"));
        assert!(
            !text.contains("heartgate_audit_"),
            "no audit log, no audit counters"
        );
    }

    #[test]
    fn the_audit_logs_counters_are_exposed() {
        let text = Metrics::default().render(
            &CacheStats::default(),
            Some(AuditCounters {
                waited: 3,
                lost: 2,
                refused: 1,
                batches: 40,
            }),
        );
        for line in [
            "heartgate_audit_events_lost_total 2",
            "heartgate_audit_events_refused_total 1",
            "heartgate_audit_queue_waits_total 3",
            "heartgate_audit_batches_total 40",
            "# TYPE heartgate_audit_events_refused_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}");
        }
    }
}
