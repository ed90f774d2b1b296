//! [`HttpSource`]: the source datacenter read through an agent's HTTP API, as blocking recursive KV
//! reads forwarded with `?dc=`. It reads; it does not decide whether an answer is trustworthy (stale,
//! leaderless, gone backwards): the runner does.

use std::time::Duration;

use crate::model::{ReadContent, ReadQuery, SourceRead};
use crate::traits::{Source, SourceError};

use super::client::{ConsulClient, Reply};
use super::wire::{self, DeltaBody, DirEntry};
use super::{HttpError, encode_query_value, kv_path};

/// The header a Tribune agent sets when it answers `?changes-since=` with a delta; its value is the
/// index the changes start after. Without it the answer is the ordinary recursive read.
pub const CHANGES_SINCE_HEADER: &str = "x-tribune-changes-since";

/// A [`Source`] over a Consul-compatible HTTP API.
#[derive(Debug, Clone)]
pub struct HttpSource {
    client: ConsulClient,
}

impl HttpSource {
    /// A source reading through `client`'s agent.
    pub fn new(client: ConsulClient) -> Self {
        HttpSource { client }
    }

    /// The client it reads through.
    pub fn client(&self) -> &ConsulClient {
        &self.client
    }

    async fn read_http(&self, query: &ReadQuery) -> Result<SourceRead, HttpError> {
        let path = read_path(query);
        let reply = self.client.get_blocking(&path, query.wait).await?;
        decode_read(&reply)
    }
}

impl Source for HttpSource {
    async fn read(&self, query: &ReadQuery) -> Result<SourceRead, SourceError> {
        self.read_http(query)
            .await
            .map_err(|error| error.into_source_error(&query.prefix, &query.datacenter))
    }
}

/// `/v1/kv/<prefix>?recurse&dc=..&index=..&wait=..s[&stale][&changes-since=..]`.
pub(crate) fn read_path(query: &ReadQuery) -> String {
    let mut path = format!(
        "{}?recurse&dc={}&index={}&wait={}s",
        kv_path(&query.prefix),
        encode_query_value(&query.datacenter),
        query.index,
        wait_seconds(query.wait)
    );
    if query.stale {
        path.push_str("&stale");
    }
    if let Some(since) = query.changes_since {
        path.push_str(&format!("&changes-since={since}"));
    }
    path
}

/// Whole seconds, rounded up so that a short wait does not become "answer at once".
fn wait_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs();
    if wait.subsec_nanos() > 0 {
        seconds.saturating_add(1)
    } else {
        seconds
    }
}

/// A recursive read's answer: a delta when the agent says so, the full prefix otherwise.
pub(crate) fn decode_read(reply: &Reply) -> Result<SourceRead, HttpError> {
    let content = if reply.is_not_found() {
        ReadContent::Full(Vec::new())
    } else if reply.is_ok() {
        match reply.header_u64(CHANGES_SINCE_HEADER)? {
            Some(since) => {
                let delta: DeltaBody = reply.json()?;
                let changed = wire::entries(delta.changed.unwrap_or_default())
                    .map_err(|reason| reply.decode_error(reason))?;
                let mut deleted: Vec<_> = delta
                    .deleted
                    .unwrap_or_default()
                    .into_iter()
                    .map(Into::into)
                    .collect();
                deleted.sort_by(|a: &crate::model::DeletedKey, b| a.key.cmp(&b.key));
                ReadContent::Delta {
                    since,
                    changed,
                    deleted,
                }
            }
            None => {
                let entries: Vec<DirEntry> = reply.json()?;
                ReadContent::Full(wire::entries(entries).map_err(|reason| reply.decode_error(reason))?)
            }
        }
    } else {
        return Err(reply.status_error());
    };
    let index = reply
        .index()?
        .ok_or_else(|| reply.decode_error("no X-Consul-Index header".to_owned()))?;
    Ok(SourceRead {
        index,
        known_leader: reply.known_leader(),
        last_contact: reply.last_contact()?,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> ReadQuery {
        ReadQuery {
            prefix: "global/app cfg".into(),
            datacenter: "dc1".into(),
            index: 42,
            wait: Duration::from_millis(1500),
            stale: false,
            changes_since: None,
        }
    }

    #[test]
    fn the_read_asks_for_what_the_query_says() {
        assert_eq!(
            read_path(&query()),
            "/v1/kv/global/app%20cfg?recurse&dc=dc1&index=42&wait=2s"
        );
        let query = ReadQuery {
            stale: true,
            changes_since: Some(40),
            wait: Duration::from_secs(60),
            ..query()
        };
        assert_eq!(
            read_path(&query),
            "/v1/kv/global/app%20cfg?recurse&dc=dc1&index=42&wait=60s&stale&changes-since=40"
        );
    }
}
