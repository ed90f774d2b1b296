//! `tribune bench`: a load generator. N clients, each with its own keep-alive HTTP/1.1 connection,
//! send one request at a time for a fixed duration (or up to a request budget), then the command
//! prints requests/s and latency percentiles. It drives Consul's KV API (Tribune or Consul) or, with
//! `-etcd`, etcd's v3 JSON gateway, so both systems are measured by the same client code.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::http::{RequestBody, Target, connect, encode_key, full_body};
use super::{CliError, GlobalArgs};

/// The most clients one run may start.
const MAX_CLIENTS: usize = 4096;
/// The longest run.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Write a key.
    Put,
    /// Read a key with the default consistency (through the leader; etcd: linearizable).
    Get,
    /// Read a key from any server (`?stale`; etcd: serializable).
    Stale,
    /// Read a key after the leader confirmed its leadership with a quorum (`?consistent`; etcd:
    /// linearizable, its default).
    Consistent,
    /// Register a service instance with a passing check (`PUT /v1/catalog/register`), one of
    /// `-keys` instances on as many nodes, each named from `-prefix`.
    Register,
    /// Read the passing instances of the service (`GET /v1/health/service/<name>?passing`), as a
    /// discovery client does, after registering `-keys` instances.
    Health,
}

/// `tribune bench`: the target is `-http-addr` (etcd's client URL with -etcd, e.g. 127.0.0.1:2379).
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Concurrent clients, each with one connection and one request in flight.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = tribune::duration::parse_go_duration)]
    duration: Duration,
    /// put, get (default consistency), stale or consistent.
    #[arg(long, value_enum, default_value_t = Mode::Put)]
    mode: Mode,
    /// Stop after this many requests in total (0: only the duration bounds the run).
    #[arg(long = "max-requests", default_value_t = 0)]
    max_requests: u64,
    /// How many distinct keys the requests spread over (written once before a read run).
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// The value size in bytes.
    #[arg(long = "value-size", default_value_t = 128)]
    value_size: usize,
    /// The keys' prefix.
    #[arg(long, default_value = "bench/")]
    prefix: String,
    /// Drive etcd's v3 JSON gateway (`POST /v3/kv/put`, `/v3/kv/range`) instead of Consul's KV API.
    #[arg(long)]
    etcd: bool,
}

/// How one request is built, shared by the clients.
struct Workload {
    target: Target,
    mode: Mode,
    etcd: bool,
    prefix: String,
    keys: u64,
    value: Bytes,
}

impl Workload {
    fn key(&self, n: u64) -> String {
        format!("{}{:08}", self.prefix, n % self.keys)
    }

    /// The service the catalog modes register and read: the prefix without its slashes.
    fn service(&self) -> String {
        let name = self.prefix.trim_matches('/').replace('/', "-");
        if name.is_empty() { "bench".to_owned() } else { name }
    }

    fn request(&self, mode: Mode, n: u64) -> Result<Request<RequestBody>, CliError> {
        let key = self.key(n);
        let (method, path, body) = if matches!(mode, Mode::Register | Mode::Health) {
            let service = self.service();
            let instance = n % self.keys;
            match mode {
                Mode::Register => (
                    Method::PUT,
                    "/v1/catalog/register".to_owned(),
                    json!({
                        "Node": format!("{service}-node-{instance:06}"),
                        "Address": "192.0.2.1",
                        "Service": {"ID": format!("{service}-{instance:06}"), "Service": service,
                                    "Port": 8000 + instance % 1000, "Tags": ["bench"]},
                        "Check": {"CheckID": format!("{service}-{instance:06}-alive"), "Name": "alive",
                                  "ServiceID": format!("{service}-{instance:06}"), "Status": "passing",
                                  // A changing output makes every request a real write.
                                  "Output": format!("request {n}")},
                    })
                    .to_string()
                    .into(),
                ),
                _ => (
                    Method::GET,
                    format!("/v1/health/service/{}?passing", encode_key(&service)),
                    Bytes::new(),
                ),
            }
        } else if self.etcd {
            let key64 = BASE64.encode(&key);
            match mode {
                Mode::Put => (
                    Method::POST,
                    "/v3/kv/put".to_owned(),
                    json!({ "key": key64, "value": BASE64.encode(&self.value) })
                        .to_string()
                        .into(),
                ),
                // The catalog modes never reach here (refused with -etcd).
                Mode::Get | Mode::Consistent | Mode::Register | Mode::Health => (
                    Method::POST,
                    "/v3/kv/range".to_owned(),
                    json!({ "key": key64 }).to_string().into(),
                ),
                Mode::Stale => (
                    Method::POST,
                    "/v3/kv/range".to_owned(),
                    json!({ "key": key64, "serializable": true }).to_string().into(),
                ),
            }
        } else {
            let path = format!("/v1/kv/{}", encode_key(&key));
            match mode {
                Mode::Put => (Method::PUT, path, self.value.clone()),
                Mode::Get => (Method::GET, path, Bytes::new()),
                Mode::Stale => (Method::GET, format!("{path}?stale"), Bytes::new()),
                // The catalog modes are built above.
                Mode::Consistent | Mode::Register | Mode::Health => {
                    (Method::GET, format!("{path}?consistent"), Bytes::new())
                }
            }
        };
        // `-datacenter` sends Consul's requests to another datacenter through this agent.
        let uri = if self.etcd {
            path
        } else {
            self.target.uri_for(&path)
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, &self.target.authority);
        if let Some(token) = &self.target.token {
            builder = builder.header("x-consul-token", token);
        }
        if self.etcd {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        builder
            .body(full_body(body))
            .map_err(|error| CliError::Usage(format!("building a request: {error}")))
    }
}

/// What one client measured.
#[derive(Default)]
struct ClientReport {
    latencies: Histogram,
    errors: u64,
    first_error: Option<String>,
}

pub(crate) async fn run(args: BenchArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        return Err(CliError::Usage(format!(
            "-clients must be between 1 and {MAX_CLIENTS}"
        )));
    }
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        return Err(CliError::Usage(
            "-duration must be above zero and at most 1h".into(),
        ));
    }
    if args.keys == 0 {
        return Err(CliError::Usage("-keys must be above zero".into()));
    }
    if args.etcd && matches!(args.mode, Mode::Register | Mode::Health) {
        return Err(CliError::Usage(
            "-mode register and health drive Consul's catalog: etcd has none".into(),
        ));
    }
    let target = Target::resolve(global.http_addr.as_deref(), global.token.as_deref())?
        .with_datacenter(global.datacenter.as_deref());
    let workload = Arc::new(Workload {
        target,
        mode: args.mode,
        etcd: args.etcd,
        prefix: args.prefix.clone(),
        keys: args.keys,
        value: Bytes::from(vec![b'x'; args.value_size]),
    });
    let system = match args.mode {
        _ if args.etcd => "etcd v3 gateway",
        Mode::Register | Mode::Health => "Consul catalog API",
        Mode::Put | Mode::Get | Mode::Stale | Mode::Consistent => "Consul KV API",
    };
    let mode = match args.mode {
        Mode::Put => "put",
        Mode::Get => "get",
        Mode::Stale => "stale",
        Mode::Consistent => "consistent",
        Mode::Register => "register",
        Mode::Health => "health",
    };
    println!(
        "==> bench: mode={mode} target={} ({system}) clients={} duration={}",
        workload.target.authority,
        args.clients,
        humantime::format_duration(args.duration)
    );
    match args.mode {
        Mode::Put | Mode::Register => {}
        Mode::Health => populate(&workload, Mode::Register).await?,
        Mode::Get | Mode::Stale | Mode::Consistent => populate(&workload, Mode::Put).await?,
    }

    let started = Instant::now();
    let deadline = started + args.duration;
    let budget = Arc::new(AtomicU64::new(if args.max_requests == 0 {
        u64::MAX
    } else {
        args.max_requests
    }));
    let mut clients = Vec::with_capacity(args.clients);
    for id in 0..args.clients {
        let workload = Arc::clone(&workload);
        let budget = Arc::clone(&budget);
        clients.push(tokio::spawn(async move {
            client_loop(&workload, id as u64, deadline, &budget).await
        }));
    }
    let mut total = ClientReport::default();
    for client in clients {
        let report = client
            .await
            .map_err(|error| CliError::Failed(format!("a bench client failed: {error}")))?;
        total.latencies.merge(&report.latencies);
        total.errors += report.errors;
        if total.first_error.is_none() {
            total.first_error = report.first_error;
        }
    }
    let elapsed = started.elapsed();
    print!("{}", format_report(&total, elapsed));
    if total.latencies.count() == 0 {
        return Err(CliError::Failed(format!(
            "no request succeeded: {}",
            total.first_error.unwrap_or_else(|| "no request was sent".into())
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn format_report(report: &ClientReport, elapsed: Duration) -> String {
    let ok = report.latencies.count();
    let rate = ok as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    let ms = |micros: u64| micros as f64 / 1000.0;
    let mut out = format!(
        "requests: {ok} ok, {} errors in {:.2}s\nthroughput: {rate:.1} req/s\nlatency: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n",
        report.errors,
        elapsed.as_secs_f64(),
        ms(report.latencies.percentile(50.0)),
        ms(report.latencies.percentile(99.0)),
        ms(report.latencies.max()),
    );
    if let Some(error) = &report.first_error {
        out.push_str(&format!("first error: {error}\n"));
    }
    out
}

/// Writes every key (or registers every instance) once so reads find something.
async fn populate(workload: &Workload, write: Mode) -> Result<(), CliError> {
    let mut sender = connect(&workload.target.authority).await?;
    for n in 0..workload.keys {
        let request = workload.request(write, n)?;
        let status = send(&mut sender, request)
            .await
            .map_err(|error| CliError::Failed(format!("writing the keys to read: {error}")))?;
        if status != StatusCode::OK {
            return Err(CliError::Failed(format!(
                "writing the keys to read: {} answered {status}",
                workload.key(n)
            )));
        }
    }
    Ok(())
}

async fn send(
    sender: &mut SendRequest<RequestBody>,
    request: Request<RequestBody>,
) -> Result<StatusCode, String> {
    sender.ready().await.map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    // Read the whole body so the connection can carry the next request.
    response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?;
    Ok(status)
}

async fn client_loop(workload: &Workload, id: u64, deadline: Instant, budget: &AtomicU64) -> ClientReport {
    let mut report = ClientReport::default();
    let mut sender = None;
    let mut n = id.wrapping_mul(7919);
    let record_error = |report: &mut ClientReport, error: String| {
        report.errors += 1;
        report.first_error.get_or_insert(error);
    };
    while Instant::now() < deadline {
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
            .is_err()
        {
            break;
        }
        if sender.is_none() {
            match connect(&workload.target.authority).await {
                Ok(connected) => sender = Some(connected),
                Err(error) => {
                    // Without a connection this client cannot go on; the others keep measuring.
                    record_error(&mut report, error.to_string());
                    break;
                }
            }
        }
        let Some(connection) = sender.as_mut() else { break };
        let request = match workload.request(workload.mode, n) {
            Ok(request) => request,
            Err(error) => {
                record_error(&mut report, error.to_string());
                break;
            }
        };
        n = n.wrapping_add(1);
        let sent = Instant::now();
        match send(connection, request).await {
            Ok(StatusCode::OK) => report
                .latencies
                .record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX)),
            Ok(status) => record_error(&mut report, format!("HTTP {status}")),
            Err(error) => {
                record_error(&mut report, error);
                sender = None;
            }
        }
    }
    report
}

/// A log-linear latency histogram in microseconds: exact below 64 µs, then 32 buckets per power of
/// two (about 3 % relative error), so memory is fixed whatever the request count.
#[derive(Clone)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

const LINEAR_BUCKETS: u64 = 64;
const SUB_BUCKET_BITS: u32 = 5;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; Self::bucket_of(u64::MAX) + 1],
            count: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn bucket_of(value: u64) -> usize {
        if value < LINEAR_BUCKETS {
            return value as usize;
        }
        let exponent = 63 - value.leading_zeros();
        let sub = (value >> (exponent - SUB_BUCKET_BITS)) & ((1 << SUB_BUCKET_BITS) - 1);
        let first_exponent = LINEAR_BUCKETS.trailing_zeros();
        (LINEAR_BUCKETS + u64::from(exponent - first_exponent) * (1 << SUB_BUCKET_BITS) + sub) as usize
    }

    /// The smallest value of a bucket.
    fn lower_bound(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < LINEAR_BUCKETS {
            return bucket;
        }
        let offset = bucket - LINEAR_BUCKETS;
        let exponent = u64::from(LINEAR_BUCKETS.trailing_zeros()) + (offset >> SUB_BUCKET_BITS);
        let sub = offset & ((1 << SUB_BUCKET_BITS) - 1);
        (1 << exponent) + (sub << (exponent - u64::from(SUB_BUCKET_BITS)))
    }

    fn record(&mut self, micros: u64) {
        self.buckets[Self::bucket_of(micros)] += 1;
        self.count += 1;
        self.max = self.max.max(micros);
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    fn count(&self) -> u64 {
        self.count
    }

    fn max(&self) -> u64 {
        self.max
    }

    /// The value at or below which `percent` of the samples fall (a bucket's lower bound).
    fn percentile(&self, percent: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((percent / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::lower_bound(bucket).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for value in (0..100_000u64).chain([1 << 40, u64::MAX]) {
            let bucket = Histogram::bucket_of(value);
            assert!(bucket >= last, "{value}");
            last = bucket;
            let low = Histogram::lower_bound(bucket);
            assert!(low <= value, "{value}: {low}");
            assert!(value - low <= value / 30 + 1, "{value}: {low}");
        }
    }

    #[test]
    fn requests_ask_the_chosen_datacenter() {
        let workload = |etcd: bool| Workload {
            target: Target::resolve(Some("127.0.0.1:8500"), None)
                .unwrap()
                .with_datacenter(Some("dc2")),
            mode: Mode::Stale,
            etcd,
            prefix: "bench/".into(),
            keys: 10,
            value: Bytes::from_static(b"v"),
        };
        let consul = workload(false).request(Mode::Stale, 3).unwrap();
        assert_eq!(consul.uri().to_string(), "/v1/kv/bench/00000003?stale&dc=dc2");
        let put = workload(false).request(Mode::Put, 4).unwrap();
        assert_eq!(put.uri().to_string(), "/v1/kv/bench/00000004?dc=dc2");
        let etcd = workload(true).request(Mode::Put, 4).unwrap();
        assert_eq!(etcd.uri().to_string(), "/v3/kv/put", "etcd has no datacenters");
        let register = workload(false).request(Mode::Register, 13).unwrap();
        assert_eq!(register.method(), Method::PUT);
        assert_eq!(register.uri().to_string(), "/v1/catalog/register?dc=dc2");
        let health = workload(false).request(Mode::Health, 13).unwrap();
        assert_eq!(
            health.uri().to_string(),
            "/v1/health/service/bench?passing&dc=dc2"
        );
    }

    #[test]
    fn percentiles() {
        let mut histogram = Histogram::default();
        for micros in 1..=1000 {
            histogram.record(micros);
        }
        let p50 = histogram.percentile(50.0);
        let p99 = histogram.percentile(99.0);
        assert!((480..=500).contains(&p50), "{p50}");
        assert!((960..=990).contains(&p99), "{p99}");
        assert_eq!(histogram.max(), 1000);
    }
}
