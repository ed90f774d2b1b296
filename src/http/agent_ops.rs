//! `/v1/agent/reload`, `/v1/agent/monitor` and `/v1/agent/host`: operating one agent, served by
//! servers and client agents alike and never forwarded.
//!
//! - reload re-reads the configuration through the agent's reload source and replaces the
//!   services and checks the files define (`agent:write`);
//! - monitor streams the agent's log lines (src/logs.rs) at a level, as text or JSON (`agent:read`);
//! - host describes the machine from `/proc` and the data directory's file system
//!   (`operator:read`); what cannot be read is named in `Errors`, as Consul does.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::agent_local::LocalHost;
use super::{ApiError, ApiRoute, Endpoint, Params, endpoint, json_response};

/// The routes, for both route tables.
pub(crate) fn endpoints<H: LocalHost>() -> Vec<Endpoint<Arc<H>>> {
    vec![
        endpoint!(PUT, "/v1/agent/reload", reload::<H>),
        endpoint!(GET, "/v1/agent/monitor", monitor::<H>),
        endpoint!(GET, "/v1/agent/host", host::<H>),
    ]
}

/// `PUT /v1/agent/reload`.
async fn reload<H: LocalHost>(
    State(agent): State<Arc<H>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = agent.local().node_name.clone();
    agent
        .local_access(&headers, &uri)?
        .require(|a| a.agent_write(&node))?;
    agent
        .local()
        .reload_from_source()
        .map_err(|e| ApiError::internal(format!("Failed to reload configs: {e}")))?;
    tracing::info!("reloaded the configuration's services and checks");
    Ok(StatusCode::OK.into_response())
}

/// `GET /v1/agent/monitor?loglevel=&logjson`: the log lines from now on, until the client goes away
/// or the agent stops. An unknown level is Consul's 400.
async fn monitor<H: LocalHost>(
    State(agent): State<Arc<H>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = agent.local().node_name.clone();
    agent
        .local_access(&headers, &uri)?
        .require(|a| a.agent_read(&node))?;
    let params = Params::parse(uri.query());
    let requested = params.get("loglevel").unwrap_or("INFO");
    let level = crate::logs::parse_level(requested)
        .ok_or_else(|| ApiError::bad_request(format!("Unknown log level: {requested}")))?;
    let json = params.has("logjson");
    let (lines, streaming) = crate::logs::subscribe(level);
    let stop = agent.stop_signal();
    // The stream owns the guard: the level stays counted in until the client goes away.
    let state = (lines, stop, streaming);
    let stream = futures::stream::unfold(state, move |(mut lines, mut stop, streaming)| async move {
        loop {
            let line = tokio::select! {
                received = lines.recv() => received,
                _ = stop.wait_for(|stopped| *stopped) => return None,
            };
            let text = match line {
                // tracing orders levels by verbosity: ERROR is the "smallest".
                Ok(line) if line.level <= level => {
                    if json {
                        line.json
                    } else {
                        line.text
                    }
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(skipped)) => {
                    format!("[monitor] {skipped} log lines dropped: the reader fell behind")
                }
                Err(RecvError::Closed) => return None,
            };
            let chunk = Bytes::from(text + "\n");
            return Some((Ok::<_, std::io::Error>(chunk), (lines, stop, streaming)));
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// `GET /v1/agent/host`.
async fn host<H: LocalHost>(
    State(agent): State<Arc<H>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    agent
        .local_access(&headers, &uri)?
        .require(|a| a.operator_read())?;
    let data_dir = agent.data_dir();
    let info = tokio::task::spawn_blocking(move || host_info(data_dir.as_deref()))
        .await
        .map_err(|e| ApiError::internal(format!("reading the host: {e}")))?;
    Ok(json_response(HeaderMap::new(), &info))
}

/// What `/v1/agent/host` answers, in Consul's shape (gopsutil's field names).
fn host_info(data_dir: Option<&std::path::Path>) -> Value {
    let mut errors: Vec<String> = Vec::new();
    let mut read = |path: &str| match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            errors.push(format!("{path}: {e}"));
            None
        }
    };
    let meminfo = read("/proc/meminfo").unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let uptime = read("/proc/uptime")
        .and_then(|text| text.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()))
        .map_or(0, |seconds| seconds as u64);
    let hostname = read("/proc/sys/kernel/hostname").unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    let procs = std::fs::read_dir("/proc").map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count()
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let disk_path = data_dir.map_or_else(|| "/".to_owned(), |dir| dir.display().to_string());
    let disk = match rustix::fs::statvfs(disk_path.as_str()) {
        Ok(stat) => {
            let total = stat.f_blocks.saturating_mul(stat.f_frsize);
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            let used = total.saturating_sub(stat.f_bfree.saturating_mul(stat.f_frsize));
            json!({
                "path": disk_path,
                "total": total,
                "free": free,
                "used": used,
                "usedPercent": if total == 0 { 0.0 } else { used as f64 * 100.0 / total as f64 },
            })
        }
        Err(e) => {
            errors.push(format!("{disk_path}: {e}"));
            Value::Null
        }
    };
    json!({
        "Memory": memory(&meminfo),
        "CPU": cpus(&cpuinfo),
        "Host": {
            "hostname": hostname.trim(),
            "uptime": uptime,
            "bootTime": now.as_secs().saturating_sub(uptime),
            "procs": procs,
            "os": std::env::consts::OS,
            "kernelVersion": kernel.trim(),
            "kernelArch": std::env::consts::ARCH,
        },
        "Disk": disk,
        "CollectionTime": u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
        "Errors": errors,
    })
}

/// `/proc/meminfo`'s figures in bytes, as gopsutil's `VirtualMemoryStat`.
fn memory(meminfo: &str) -> Value {
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib.saturating_mul(1024))
    };
    let total = field("MemTotal");
    let available = field("MemAvailable");
    let used = total.saturating_sub(available);
    json!({
        "total": total,
        "available": available,
        "used": used,
        "usedPercent": if total == 0 { 0.0 } else { used as f64 * 100.0 / total as f64 },
        "free": field("MemFree"),
        "buffers": field("Buffers"),
        "cached": field("Cached"),
        "swapTotal": field("SwapTotal"),
        "swapFree": field("SwapFree"),
    })
}

/// One entry per processor of `/proc/cpuinfo`, as gopsutil's `InfoStat`.
fn cpus(cpuinfo: &str) -> Vec<Value> {
    cpuinfo
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let get = |key: &str| {
                block
                    .lines()
                    .find_map(|line| {
                        let (k, v) = line.split_once(':')?;
                        (k.trim() == key).then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            json!({
                "cpu": get("processor").parse::<u64>().unwrap_or(0),
                "vendorId": get("vendor_id"),
                "family": get("cpu family"),
                "model": get("model"),
                "modelName": get("model name"),
                "cores": get("cpu cores").parse::<u64>().unwrap_or(1),
                "mhz": get("cpu MHz").parse::<f64>().unwrap_or(0.0),
                "cacheSize": get("cache size").split_whitespace().next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
                "flags": get("flags").split_whitespace().collect::<Vec<_>>(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_cpus_read_procs_text() {
        let memory = memory("MemTotal:       2000 kB\nMemFree:         500 kB\nMemAvailable:   1500 kB\n");
        assert_eq!(memory["total"], 2_048_000);
        assert_eq!(memory["available"], 1_536_000);
        assert_eq!(memory["used"], 512_000);
        let cpus = cpus(
            "processor\t: 0\nmodel name\t: Some CPU\ncpu MHz\t\t: 2400.5\n\nprocessor\t: 1\nmodel name\t: Some CPU\n",
        );
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1]["cpu"], 1);
        assert_eq!(cpus[0]["modelName"], "Some CPU");
        assert_eq!(cpus[0]["mhz"], 2400.5);
    }

    #[test]
    fn the_host_answer_has_consuls_sections() {
        let info = host_info(None);
        for key in ["Memory", "CPU", "Host", "Disk", "CollectionTime", "Errors"] {
            assert!(info.get(key).is_some(), "{key} in {info}");
        }
    }
}
