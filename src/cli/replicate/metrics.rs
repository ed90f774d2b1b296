//! `-metrics-addr`: the replicator's status as Prometheus metrics at `GET /metrics`, one series per
//! replicated prefix (labels `source`, `datacenter`, `destination`).
//!
//! Built on prometheus-client, the Prometheus project's own Rust client: it keeps no global registry
//! (so a test builds its own), needs no exporter runtime of its own, and writes the classic text format
//! every Prometheus scrapes; axum, already in the package, serves it. The values come from the status
//! records the replicator publishes; nothing here reads the KV store or the clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tribune_replicate::status::PrefixStatus;

/// The labels of one prefix's series.
type Labels = Vec<(&'static str, String)>;

/// The replicator's metrics, fed by [`Metrics::observe`].
pub(super) struct Metrics {
    registry: Registry,
    lag: Family<Labels, Gauge<f64, AtomicU64>>,
    last_replicated: Family<Labels, Gauge>,
    source_index: Family<Labels, Gauge>,
    held: Family<Labels, Gauge>,
    puts: Family<Labels, Counter>,
    deletes: Family<Labels, Counter>,
    /// The lifetime totals last seen per prefix, so the counters grow by the difference.
    seen: Mutex<HashMap<Labels, (u64, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tribune_replicate");
        let lag = Family::default();
        let last_replicated = Family::default();
        let source_index = Family::default();
        let held = Family::default();
        let puts = Family::default();
        let deletes = Family::default();
        registry.register(
            "lag_seconds",
            "How far the destination is behind the source: seconds since a source index newer than the last replicated one was first seen, 0 when caught up",
            lag.clone(),
        );
        registry.register(
            "last_replicated_index",
            "The source index the destination reflects",
            last_replicated.clone(),
        );
        registry.register("source_index", "The source index last seen", source_index.clone());
        registry.register(
            "held",
            "1 while the last pass was held (mass-delete guard, stale or leaderless source)",
            held.clone(),
        );
        registry.register("puts", "Keys written at the destination", puts.clone());
        registry.register("deletes", "Keys deleted at the destination", deletes.clone());
        Metrics {
            registry,
            lag,
            last_replicated,
            source_index,
            held,
            puts,
            deletes,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

fn gauge_value(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Takes the replicator's latest statuses, one per prefix; prefixes no longer listed lose their
    /// series (a reload dropped them).
    pub(super) fn observe(&self, statuses: &[PrefixStatus]) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let current: Vec<Labels> = statuses.iter().map(labels).collect();
        seen.retain(|labels, _| {
            let keep = current.contains(labels);
            if !keep {
                for family in [&self.last_replicated, &self.source_index, &self.held] {
                    family.remove(labels);
                }
                self.lag.remove(labels);
                self.puts.remove(labels);
                self.deletes.remove(labels);
            }
            keep
        });
        for (status, labels) in statuses.iter().zip(current) {
            self.lag.get_or_create(&labels).set(status.seconds_behind);
            self.last_replicated
                .get_or_create(&labels)
                .set(gauge_value(status.last_replicated));
            self.source_index
                .get_or_create(&labels)
                .set(gauge_value(status.source_index));
            self.held
                .get_or_create(&labels)
                .set(i64::from(status.held.is_some()));
            let (puts, deletes) = seen.entry(labels.clone()).or_insert((0, 0));
            // A total below the last one means the record was reset: count from there again.
            self.puts
                .get_or_create(&labels)
                .inc_by(status.puts.saturating_sub(*puts));
            self.deletes
                .get_or_create(&labels)
                .inc_by(status.deletes.saturating_sub(*deletes));
            *puts = status.puts;
            *deletes = status.deletes;
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(super) fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

fn labels(status: &PrefixStatus) -> Labels {
    vec![
        ("source", status.source.clone()),
        ("datacenter", status.source_datacenter.clone()),
        ("destination", status.destination.clone()),
    ]
}

/// Serves `GET /metrics` on `addr` until the process ends; returns the bound address.
pub(super) async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
                    metrics.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(puts: u64, held: bool) -> PrefixStatus {
        PrefixStatus {
            source: "global".into(),
            source_datacenter: "dc1".into(),
            destination: "copy".into(),
            last_replicated: 40,
            source_index: 42,
            seconds_behind: 1.5,
            puts,
            deletes: 3,
            held: held.then(|| "source empty".to_owned()),
            ..PrefixStatus::default()
        }
    }

    #[test]
    fn statuses_become_series() {
        let metrics = Metrics::default();
        metrics.observe(&[status(10, false)]);
        metrics.observe(&[status(15, true)]);
        let text = metrics.render();
        let labels = r#"{source="global",datacenter="dc1",destination="copy"}"#;
        for line in [
            format!("tribune_replicate_lag_seconds{labels} 1.5"),
            format!("tribune_replicate_last_replicated_index{labels} 40"),
            format!("tribune_replicate_source_index{labels} 42"),
            format!("tribune_replicate_held{labels} 1"),
            format!("tribune_replicate_puts_total{labels} 15"),
            format!("tribune_replicate_deletes_total{labels} 3"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        metrics.observe(&[]);
        assert!(!metrics.render().contains("global"));
    }

    #[tokio::test]
    async fn the_endpoint_serves_the_text() {
        let metrics = Arc::new(Metrics::default());
        metrics.observe(&[status(1, false)]);
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics))
            .await
            .unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("tribune_replicate_puts_total"), "{answer}");
    }
}
