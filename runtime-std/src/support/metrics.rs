//! Prometheus metrics: requests by listener, pool and status class, upstream response
//! latency, open connections and client bytes, and the tiny `GET /metrics` responder the
//! runtimes serve on `runtime.metrics_bind` (a separate listener, never proxied traffic).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mxgate_core::{AccessRecord, Config};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Largest request head the metrics responder reads.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long the metrics responder waits for a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    pool: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    pool: String,
    backend: String,
}

type HistogramFamily = Family<PoolLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // Up to five minutes: long-poll /sync takes 30 s, initial syncs much longer.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
}

/// Per-listener handles, cloned into each connection task (updates are lock-free atomics).
#[derive(Clone, Debug, Default)]
pub struct ListenerMetrics {
    pub accepted: Counter,
    pub active: Gauge,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub tls_failures: Counter,
}

impl ListenerMetrics {
    /// Counts a connection as accepted and open until the guard drops.
    pub fn open(&self) -> OpenConnection {
        self.accepted.inc();
        self.active.inc();
        OpenConnection(self.active.clone())
    }
}

/// Keeps a connection counted in `mxgate_active_connections`.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The metric families every configuration generation of a running proxy counts into.
#[derive(Clone, Debug)]
struct Families {
    requests: Family<RequestLabels, Counter>,
    upstream_latency: HistogramFamily,
    accepted: Family<ListenerLabels, Counter>,
    active: Family<ListenerLabels, Gauge>,
    bytes_in: Family<ListenerLabels, Counter>,
    bytes_out: Family<ListenerLabels, Counter>,
    tls_failures: Family<ListenerLabels, Counter>,
    connect_failures: Family<PoolLabels, Counter>,
    backend_up: Family<BackendLabels, Gauge>,
    certificate_expiry: Family<NameLabels, Gauge>,
}

impl Families {
    fn register(registry: &mut Registry) -> Families {
        let families = Families {
            requests: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            accepted: Family::default(),
            active: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            tls_failures: Family::default(),
            connect_failures: Family::default(),
            backend_up: Family::default(),
            certificate_expiry: Family::default(),
        };
        let f = families.clone();
        registry.register(
            "mxgate_requests",
            "Finished requests by listener, upstream pool (- when answered locally) and status class",
            f.requests,
        );
        registry.register(
            "mxgate_upstream_response_seconds",
            "Time from sending a request upstream to the upstream's response head",
            f.upstream_latency,
        );
        registry.register(
            "mxgate_connections",
            "Accepted client connections",
            f.accepted,
        );
        registry.register(
            "mxgate_active_connections",
            "Open client connections",
            f.active,
        );
        registry.register(
            "mxgate_client_received_bytes",
            "Bytes received from clients (after TLS)",
            f.bytes_in,
        );
        registry.register(
            "mxgate_client_sent_bytes",
            "Bytes sent to clients (before TLS)",
            f.bytes_out,
        );
        registry.register(
            "mxgate_tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            f.tls_failures,
        );
        registry.register(
            "mxgate_upstream_connect_failures",
            "Attempts to connect to a backend that failed",
            f.connect_failures,
        );
        registry.register(
            "mxgate_backend_up",
            "Whether a backend may get traffic (1) or is down or ejected (0), from health checks and connect failures",
            f.backend_up,
        );
        registry.register(
            "mxgate_certificate_expiry_seconds",
            "When the certificate served for a name obtained by ACME expires, in seconds since the Unix epoch",
            f.certificate_expiry,
        );
        families
    }
}

/// All metrics of one running proxy, with handles indexed by one configuration's listener
/// and pool ids. A reloaded configuration gets its own handles into the same series
/// ([`Metrics::reconfigured`]): counters go on across reloads.
#[derive(Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    families: Families,
    listener_names: Vec<String>,
    pool_names: Vec<String>,
    /// Handles into `requests`, per listener × (no pool, pools…) × status class, each made
    /// on first use (so only series that occurred are exported): counting a request then
    /// takes no lock, no label hashing and no allocation.
    request_counters: Vec<OnceLock<Counter>>,
    /// Handles into `upstream_latency`, per pool, made on first use.
    latency_histograms: Vec<OnceLock<Histogram>>,
    listeners: Vec<ListenerMetrics>,
    connect_failures: Vec<Counter>,
    /// `mxgate_backend_up`, per pool, per backend (set by `support::health`).
    backend_up: Vec<Vec<Gauge>>,
}

impl Metrics {
    pub fn new(config: &Config) -> Metrics {
        let mut registry = Registry::default();
        let families = Families::register(&mut registry);
        let every_pool_new = vec![None; config.pools.len()];
        Metrics::with(Arc::new(registry), families, config, &every_pool_new)
    }

    /// Handles for a reloaded `config` into the same series. `kept[p]` is the pool of the
    /// previous configuration that pool `p` continues (its `mxgate_backend_up` gauges keep
    /// their value; those of new pools start at 1).
    pub fn reconfigured(&self, config: &Config, kept: &[Option<usize>]) -> Metrics {
        Metrics::with(self.registry.clone(), self.families.clone(), config, kept)
    }

    fn with(
        registry: Arc<Registry>,
        families: Families,
        config: &Config,
        kept: &[Option<usize>],
    ) -> Metrics {
        let backend_up = config
            .pools
            .iter()
            .enumerate()
            .map(|(id, p)| {
                p.backends
                    .iter()
                    .map(|b| {
                        let gauge = families.backend_up.get_or_create_owned(&BackendLabels {
                            pool: p.name.clone(),
                            backend: b.authority(),
                        });
                        if kept.get(id).copied().flatten().is_none() {
                            gauge.set(1);
                        }
                        gauge
                    })
                    .collect()
            })
            .collect();

        let listener_names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let pool_names: Vec<String> = config.pools.iter().map(|p| p.name.clone()).collect();
        let listeners = listener_names
            .iter()
            .map(|name| {
                let labels = ListenerLabels {
                    listener: name.clone(),
                };
                ListenerMetrics {
                    accepted: families.accepted.get_or_create_owned(&labels),
                    active: families.active.get_or_create_owned(&labels),
                    bytes_in: families.bytes_in.get_or_create_owned(&labels),
                    bytes_out: families.bytes_out.get_or_create_owned(&labels),
                    tls_failures: families.tls_failures.get_or_create_owned(&labels),
                }
            })
            .collect();
        let connect_failures = pool_names
            .iter()
            .map(|name| {
                families
                    .connect_failures
                    .get_or_create_owned(&PoolLabels { pool: name.clone() })
            })
            .collect();
        let slots = listener_names.len() * (pool_names.len() + 1) * STATUS_CLASSES.len();
        Metrics {
            registry,
            request_counters: (0..slots).map(|_| OnceLock::new()).collect(),
            latency_histograms: pool_names.iter().map(|_| OnceLock::new()).collect(),
            listener_names,
            pool_names,
            families,
            listeners,
            connect_failures,
            backend_up,
        }
    }

    /// Sets `mxgate_certificate_expiry_seconds{name}` to `not_after` (Unix seconds).
    pub fn certificate_expiry(&self, name: &str, not_after: i64) {
        self.families
            .certificate_expiry
            .get_or_create(&NameLabels {
                name: name.to_string(),
            })
            .set(not_after);
    }

    /// The `mxgate_backend_up` gauge of `backend` of `pool` (a detached one when unknown).
    pub fn backend_up(&self, pool: usize, backend: usize) -> Gauge {
        self.backend_up
            .get(pool)
            .and_then(|p| p.get(backend))
            .cloned()
            .unwrap_or_default()
    }

    /// Handles for connections of listener `id` (no-op handles for an unknown id).
    pub fn listener(&self, id: usize) -> ListenerMetrics {
        self.listeners.get(id).cloned().unwrap_or_default()
    }

    /// Counts one finished exchange.
    pub fn record(&self, record: &AccessRecord) {
        self.count_exchange(
            record.listener,
            record.pool,
            record.status,
            record.upstream_duration,
        );
    }

    /// Counts one finished exchange of `listener` sent to `pool` (`None`: answered locally)
    /// with `status` and, if it got that far, the upstream's response time.
    pub fn count_exchange(
        &self,
        listener: usize,
        pool: Option<usize>,
        status: u16,
        upstream_duration: Option<Duration>,
    ) {
        let class = status_class_index(status);
        let pool = pool.filter(|&p| p < self.pool_names.len());
        let slot = (listener * (self.pool_names.len() + 1) + pool.map_or(0, |p| p + 1))
            * STATUS_CLASSES.len()
            + class;
        match self.request_counters.get(slot) {
            Some(cell) if listener < self.listener_names.len() => cell
                .get_or_init(|| self.request_counter(listener, pool, class))
                .inc(),
            // An unknown listener: counted under "-" (never cached; the engine only reports
            // configured listeners).
            _ => self.request_counter(listener, pool, class).inc(),
        };
        if let (Some(pool), Some(d)) = (pool, upstream_duration) {
            if let Some(cell) = self.latency_histograms.get(pool) {
                cell.get_or_init(|| {
                    self.families
                        .upstream_latency
                        .get_or_create_owned(&PoolLabels {
                            pool: self.pool_names[pool].clone(),
                        })
                })
                .observe(d.as_secs_f64());
            }
        }
    }

    /// The `mxgate_requests` series of one listener, pool (`None`: answered locally) and
    /// status class (an index into `STATUS_CLASSES`).
    fn request_counter(&self, listener: usize, pool: Option<usize>, class: usize) -> Counter {
        let name = |names: &[String], i: Option<usize>| {
            i.and_then(|i| names.get(i))
                .cloned()
                .unwrap_or_else(|| "-".into())
        };
        self.families.requests.get_or_create_owned(&RequestLabels {
            listener: name(&self.listener_names, Some(listener)),
            pool: name(&self.pool_names, pool),
            status_class: STATUS_CLASSES[class],
        })
    }

    /// Counts a failed attempt to connect to a backend of `pool`.
    pub fn upstream_connect_failed(&self, pool: usize) {
        if let Some(c) = self.connect_failures.get(pool) {
            c.inc();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The whole HTTP response to a request whose head is `head` (the metrics listener only
    /// answers `GET /metrics`; the connection is closed after it).
    pub fn respond(&self, head: &[u8]) -> Vec<u8> {
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let mut parts = line.split(|&b| b == b' ');
        let method = parts.next().unwrap_or_default();
        let path = parts
            .next()
            .and_then(|t| t.split(|&b| b == b'?').next())
            .unwrap_or_default();
        let (status, content_type, body) = match (method, path) {
            (b"GET", b"/metrics") => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.encode(),
            ),
            (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
            _ => (
                "405 Method Not Allowed",
                "text/plain",
                "method not allowed\n".to_string(),
            ),
        };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Whether `buf` holds a complete request head (the responder's only framing need).
pub fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// The `status_class` label values; `status_class_index` picks one.
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class_index(status: u16) -> usize {
    match status / 100 {
        class @ 1..=5 => usize::from(class),
        _ => 0,
    }
}

#[cfg(test)]
fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(499), "4xx");
        assert_eq!(status_class(504), "5xx");
        assert_eq!(status_class(0), "none");
    }

    #[test]
    fn requests_are_counted_per_listener_pool_and_class() {
        let metrics = Metrics::new(&crate::support::testutil::config());
        let record = |listener, pool: Option<usize>, status| AccessRecord {
            listener,
            client: "127.0.0.1".parse().unwrap(),
            method: Default::default(),
            target: Default::default(),
            version: "HTTP/1.1",
            status,
            body_bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            upstream_duration: pool.map(|_| Duration::from_millis(3)),
            pool,
            request_id: Default::default(),
            user_agent: Default::default(),
            referer: Default::default(),
            started: std::time::Instant::now(),
        };
        for _ in 0..3 {
            metrics.record(&record(0, Some(0), 200));
        }
        metrics.record(&record(1, None, 404));
        metrics.record(&record(7, Some(9), 999));
        let text = metrics.encode();
        for line in [
            r#"mxgate_requests_total{listener="client",pool="homeserver",status_class="2xx"} 3"#,
            r#"mxgate_requests_total{listener="federation",pool="-",status_class="4xx"} 1"#,
            r#"mxgate_requests_total{listener="-",pool="-",status_class="none"} 1"#,
            r#"mxgate_upstream_response_seconds_count{pool="homeserver"} 3"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // Series appear only once they occurred.
        assert!(!text.contains(r#"status_class="5xx""#), "{text}");
    }

    #[test]
    fn certificate_expiry_is_one_series_across_reloads() {
        let config = crate::support::testutil::config();
        let metrics = Metrics::new(&config);
        metrics.certificate_expiry("matrix.example.com", 1_000);
        let reloaded = metrics.reconfigured(&config, &vec![None; config.pools.len()]);
        reloaded.certificate_expiry("matrix.example.com", 2_000);
        for text in [metrics.encode(), reloaded.encode()] {
            assert_eq!(
                text.matches("# TYPE mxgate_certificate_expiry_seconds")
                    .count(),
                1,
                "{text}"
            );
            assert!(
                text.contains(
                    r#"mxgate_certificate_expiry_seconds{name="matrix.example.com"} 2000"#
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn head_completion() {
        assert!(!head_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"));
        assert!(head_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET /metrics HTTP/1.0\n\n"));
    }
}

#[cfg(test)]
mod exposition_tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;

    #[test]
    fn records_show_up_in_the_exposition() {
        let metrics = Metrics::new(&crate::support::testutil::config());
        let l = metrics.listener(0);
        let open = l.open();
        l.bytes_in.inc_by(100);
        metrics.record(&AccessRecord {
            listener: 0,
            client: "127.0.0.1".parse().unwrap(),
            method: Bytes::from_static(b"GET"),
            target: Bytes::from_static(b"/_matrix/client/versions"),
            version: "HTTP/1.1",
            status: 200,
            body_bytes_in: 0,
            bytes_out: 10,
            duration: Duration::from_millis(3),
            upstream_duration: Some(Duration::from_millis(2)),
            pool: Some(0),
            request_id: Bytes::new(),
            user_agent: Bytes::new(),
            referer: Bytes::new(),
            started: Instant::now(),
        });
        metrics.upstream_connect_failed(0);
        metrics.backend_up(0, 0).set(0);
        let text = metrics.encode();
        assert!(text.contains(
            "mxgate_requests_total{listener=\"client\",pool=\"homeserver\",status_class=\"2xx\"} 1"
        ), "{text}");
        assert!(
            text.contains("mxgate_active_connections{listener=\"client\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mxgate_client_received_bytes_total{listener=\"client\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("mxgate_upstream_response_seconds_count{pool=\"homeserver\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mxgate_upstream_connect_failures_total{pool=\"homeserver\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mxgate_backend_up{pool=\"homeserver\",backend=\"localhost:8008\"} 0"),
            "{text}"
        );
        drop(open);
        assert!(metrics
            .encode()
            .contains("mxgate_active_connections{listener=\"client\"} 0"));

        let ok = String::from_utf8(metrics.respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
            .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.contains("mxgate_requests_total"));
        let missing = String::from_utf8(metrics.respond(b"GET / HTTP/1.1\r\n\r\n")).unwrap();
        assert!(missing.starts_with("HTTP/1.1 404 "));
        let post = String::from_utf8(metrics.respond(b"POST /metrics HTTP/1.1\r\n\r\n")).unwrap();
        assert!(post.starts_with("HTTP/1.1 405 "));
    }
}
