//! `?near=<node>`: catalog and health answers sorted by the estimated round trip time from a node,
//! nearest first, as Consul sorts them. The estimate comes from the LAN pool's Vivaldi coordinates;
//! `_agent` names the agent that received the request.
//!
//! Nodes without a known coordinate keep their order after every node that has one. When the named
//! node's own coordinate is unknown the answer keeps its usual order, as Consul's does.

use std::collections::HashMap;
use std::time::Duration;

use tribune_gossip::Coordinate;
use tribune_kvstore::Backend;

use super::Params;
use crate::node::Agent;

/// The node that stands for "the agent serving this request" in `?near=`.
pub(crate) const AGENT_ALIAS: &str = "_agent";

/// Round trip estimates from one node to the others, by lower-cased node name.
#[derive(Debug, Default)]
pub(crate) struct NearOrder {
    distances: HashMap<String, Duration>,
}

impl NearOrder {
    /// The order `?near=` asks for, from `coordinates` (every node's known coordinate); `None`
    /// when the request has no `near`, or the named node has no coordinate.
    pub(crate) fn from_params(
        params: &Params,
        agent_node: &str,
        coordinates: &[(String, Coordinate)],
    ) -> Option<NearOrder> {
        let named = params.get("near").filter(|n| !n.is_empty())?;
        let source = if named == AGENT_ALIAS { agent_node } else { named };
        let origin = coordinates
            .iter()
            .find(|(node, _)| node.eq_ignore_ascii_case(source))
            .map(|(_, coord)| coord)?;
        let distances = coordinates
            .iter()
            .filter(|(_, coord)| coord.is_compatible_with(origin))
            .map(|(node, coord)| (node.to_ascii_lowercase(), origin.distance_to(coord)))
            .collect();
        Some(NearOrder { distances })
    }

    /// Sorts `items` nearest first by the node each names; a stable sort, so items of one node
    /// (or of nodes at one distance) keep their order.
    pub(crate) fn sort<T>(&self, items: &mut [T], node_of: impl Fn(&T) -> &str) {
        items.sort_by_cached_key(|item| {
            let node = node_of(item).to_ascii_lowercase();
            match self.distances.get(&node) {
                Some(distance) => (false, *distance),
                None => (true, Duration::ZERO),
            }
        });
    }
}

/// The order `?near=` asks of `agent`'s answer, from its LAN pool's coordinates; `None` when none
/// is asked for or none can be given.
pub(crate) async fn order_for<B: Backend>(agent: &Agent<B>, params: &Params) -> Option<NearOrder> {
    if !wanted(params) {
        return None;
    }
    let coordinates = agent.gossip.as_ref()?.coordinates().await.ok()?;
    NearOrder::from_params(params, &agent.config.node_name, &coordinates)
}

/// A client agent forwards a read to a server, where `_agent` would name the server: it names
/// itself in the request before it leaves (`uri` is a path with its query).
pub(crate) fn name_agent_in(uri: &mut String, agent_node: &str) {
    let Some((path, query)) = uri.split_once('?') else {
        return;
    };
    let alias = format!("near={AGENT_ALIAS}");
    if !query.split('&').any(|pair| pair == alias) {
        return;
    }
    let named = format!("near={}", encode_component(agent_node));
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| if pair == alias { named.as_str() } else { pair })
        .collect();
    *uri = format!("{path}?{}", query.join("&"));
}

/// `text` as one query value: RFC 3986's unreserved bytes as they are, every other byte escaped.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether a request asks for `?near=` (and so needs the coordinates read).
pub(crate) fn wanted(params: &Params) -> bool {
    params.get("near").is_some_and(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coord(x: f64) -> Coordinate {
        let mut c = Coordinate::new(&tribune_gossip::CoordinateConfig::default());
        if let Some(first) = c.vec.first_mut() {
            *first = x;
        }
        c
    }

    fn order(query: &str, coords: &[(&str, f64)]) -> Option<NearOrder> {
        let coords: Vec<(String, Coordinate)> =
            coords.iter().map(|(n, x)| ((*n).to_owned(), coord(*x))).collect();
        NearOrder::from_params(&Params::parse(Some(query)), "self", &coords)
    }

    #[test]
    fn nearest_first_and_unknown_nodes_last_in_their_order() {
        let near = order("near=b", &[("a", 10.0), ("b", 0.0), ("c", 1.0), ("self", 5.0)]);
        let near = near.expect("b has a coordinate");
        let mut nodes = vec!["z1", "a", "c", "z0", "b", "self"];
        near.sort(&mut nodes, |n| n);
        assert_eq!(nodes, ["b", "c", "self", "a", "z1", "z0"]);
    }

    #[test]
    fn agent_alias_names_the_serving_agent_and_case_is_ignored() {
        let near = order("near=_agent", &[("A", 10.0), ("SELF", 9.0), ("c", 0.0)]).expect("self known");
        let mut nodes = vec!["c", "a", "self"];
        near.sort(&mut nodes, |n| n);
        assert_eq!(nodes, ["self", "a", "c"]);
    }

    #[test]
    fn a_client_names_itself_for_the_server() {
        let mut uri = "/v1/catalog/nodes?near=_agent&stale".to_owned();
        name_agent_in(&mut uri, "web 1");
        assert_eq!(uri, "/v1/catalog/nodes?near=web%201&stale");
        let mut uri = "/v1/catalog/nodes?near=other".to_owned();
        name_agent_in(&mut uri, "web");
        assert_eq!(uri, "/v1/catalog/nodes?near=other");
    }

    #[test]
    fn no_near_or_an_unknown_origin_keeps_the_order() {
        assert!(order("", &[("a", 1.0)]).is_none());
        assert!(order("near=", &[("a", 1.0)]).is_none());
        assert!(order("near=nobody", &[("a", 1.0)]).is_none());
        assert!(!wanted(&Params::parse(Some("near="))));
        assert!(wanted(&Params::parse(Some("near=a"))));
    }
}
