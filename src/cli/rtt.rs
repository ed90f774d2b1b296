//! `tribune rtt [-wan] node1 [node2]`: the round trip time between two nodes as their network
//! coordinates estimate it, computed here from the coordinates the agent serves, as Consul's CLI does.

use std::collections::BTreeMap;
use std::process::ExitCode;

use hyper::Method;
use serde::Deserialize;

use super::{CliError, GlobalArgs};

/// `tribune rtt`.
#[derive(Debug, clap::Args)]
pub(crate) struct RttArgs {
    /// Use the WAN pool's coordinates; node names are then `<node>.<datacenter>`.
    #[arg(long)]
    wan: bool,
    /// One or two node names; the second defaults to the agent's own node.
    #[arg(required = true, num_args = 1..=2, value_name = "NODE")]
    nodes: Vec<String>,
}

/// A Vivaldi network coordinate as Serf serialises it; distances are in seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Coordinate {
    pub(crate) vec: Vec<f64>,
    #[serde(default)]
    pub(crate) error: f64,
    #[serde(default)]
    pub(crate) adjustment: f64,
    #[serde(default)]
    pub(crate) height: f64,
}

/// Two coordinates of different dimensions cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("coordinates of {0} and {1} dimensions cannot be compared")]
pub(crate) struct DimensionMismatch(usize, usize);

impl Coordinate {
    /// The estimated round trip time to `other`, in seconds: the Euclidean distance between the
    /// vectors plus both heights, then plus both adjustments unless that would make it non-positive.
    pub(crate) fn distance_to(&self, other: &Coordinate) -> Result<f64, DimensionMismatch> {
        if self.vec.len() != other.vec.len() {
            return Err(DimensionMismatch(self.vec.len(), other.vec.len()));
        }
        let squares: f64 = self
            .vec
            .iter()
            .zip(&other.vec)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let raw = squares.sqrt() + self.height + other.height;
        let adjusted = raw + self.adjustment + other.adjustment;
        Ok(if adjusted > 0.0 { adjusted } else { raw })
    }
}

/// Milliseconds as Consul prints them: the distance is first made a whole number of nanoseconds
/// (Go's `time.Duration`), then shown with three decimals.
pub(crate) fn format_millis(seconds: f64) -> String {
    // `as` saturates out-of-range floats; a distance that large is nonsense either way.
    let nanos = (seconds * 1e9) as i64;
    format!("{:.3} ms", nanos as f64 / 1e6)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeCoordinate {
    node: String,
    #[serde(default)]
    segment: String,
    coord: Option<Coordinate>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DatacenterMap {
    datacenter: String,
    #[serde(rename = "AreaID", default)]
    area_id: String,
    #[serde(default)]
    coordinates: Vec<NodeCoordinate>,
}

#[derive(Debug, Deserialize)]
struct AgentSelf {
    #[serde(rename = "Config")]
    config: AgentSelfConfig,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentSelfConfig {
    node_name: String,
    datacenter: String,
}

/// Why no estimate could be given, worded as Consul words it (printed without an "Error" prefix).
#[derive(Debug, PartialEq)]
enum Verdict {
    NotFound(String),
    BadWanName,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::NotFound(node) => write!(f, "Could not find a coordinate for node {node:?}"),
            Verdict::BadWanName => {
                f.write_str("Node names must be specified as <node name>.<datacenter> with -wan")
            }
        }
    }
}

/// The pair of LAN coordinates to compare. A node may have one coordinate per network segment;
/// they are compared in the default segment, unless one of them is in a single segment (a client),
/// which then decides, as Consul's `CoordinateSet.Intersect` does.
fn lan_pair<'a>(
    entries: &'a [NodeCoordinate],
    first: &str,
    second: &str,
) -> Result<(&'a Coordinate, &'a Coordinate), Verdict> {
    let set = |name: &str| -> BTreeMap<&'a str, &'a Coordinate> {
        entries
            .iter()
            .filter(|entry| entry.node.eq_ignore_ascii_case(name))
            .filter_map(|entry| Some((entry.segment.as_str(), entry.coord.as_ref()?)))
            .collect()
    };
    let (set1, set2) = (set(first), set(second));
    let only = |set: &BTreeMap<&'a str, &'a Coordinate>| match set.len() {
        1 => set.keys().next().copied(),
        _ => None,
    };
    let segment = only(&set2).or(only(&set1)).unwrap_or("");
    let coord1 = set1
        .get(segment)
        .ok_or_else(|| Verdict::NotFound(first.to_owned()))?;
    let coord2 = set2
        .get(segment)
        .ok_or_else(|| Verdict::NotFound(second.to_owned()))?;
    Ok((coord1, coord2))
}

/// `<node>.<dc>` split at its last dot.
fn split_wan_name(name: &str) -> Result<(&str, &str), Verdict> {
    match name.rsplit_once('.') {
        Some((node, dc)) if !node.is_empty() && !dc.is_empty() => Ok((node, dc)),
        _ => Err(Verdict::BadWanName),
    }
}

/// The pair of WAN coordinates to compare: both must come from the same network area.
fn wan_pair<'a>(
    maps: &'a [DatacenterMap],
    first: &str,
    second: &str,
) -> Result<(&'a Coordinate, &'a Coordinate), Verdict> {
    let (node1, dc1) = split_wan_name(first)?;
    let (node2, dc2) = split_wan_name(second)?;
    // Consul serves the names without their datacenter suffix; a full `<node>.<dc>` is matched too.
    let find = |area: &str, node: &str, dc: &str, full: &str| {
        maps.iter()
            .filter(|map| map.area_id == area && map.datacenter == dc)
            .flat_map(|map| &map.coordinates)
            .find(|entry| entry.node.eq_ignore_ascii_case(node) || entry.node.eq_ignore_ascii_case(full))
            .and_then(|entry| entry.coord.as_ref())
    };
    let mut areas: Vec<&str> = maps.iter().map(|map| map.area_id.as_str()).collect();
    areas.dedup();
    let mut seen_first = false;
    for area in areas {
        let coord1 = find(area, node1, dc1, first);
        let coord2 = find(area, node2, dc2, second);
        seen_first |= coord1.is_some();
        if let (Some(coord1), Some(coord2)) = (coord1, coord2) {
            return Ok((coord1, coord2));
        }
    }
    let missing = if seen_first { second } else { first };
    Err(Verdict::NotFound(missing.to_owned()))
}

/// The sentence Consul prints.
fn report(first: &str, second: &str, seconds: f64, wan: bool) -> String {
    let source = if wan { "WAN" } else { "LAN" };
    format!(
        "Estimated {first} <-> {second} rtt: {} (using {source} coordinates)",
        format_millis(seconds)
    )
}

pub(crate) async fn run(args: RttArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    let mut nodes = args.nodes;
    if nodes.len() < 2 {
        let agent: AgentSelf = client
            .call(Method::GET, "/v1/agent/self", "")
            .await
            .and_then(|reply| reply.ok())
            .and_then(|reply| reply.json())
            .map_err(|error| CliError::Failed(format!("Unable to look up agent info: {error}")))?;
        let name = if args.wan {
            format!("{}.{}", agent.config.node_name, agent.config.datacenter)
        } else {
            agent.config.node_name
        };
        nodes.push(name);
    }
    let (Some(first), Some(second)) = (nodes.first(), nodes.get(1)) else {
        return Err(CliError::Usage("One or two node names must be specified".into()));
    };
    let path = if args.wan {
        "/v1/coordinate/datacenters"
    } else {
        "/v1/coordinate/nodes"
    };
    let reply = client
        .call(Method::GET, path, "")
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context("getting coordinates"))?;
    let pair = if args.wan {
        let maps: Vec<DatacenterMap> = reply
            .json()
            .map_err(|error| error.context("getting coordinates"))?;
        wan_pair(&maps, first, second).map(|(a, b)| (a.clone(), b.clone()))
    } else {
        let entries: Vec<NodeCoordinate> = reply
            .json()
            .map_err(|error| error.context("getting coordinates"))?;
        lan_pair(&entries, first, second).map(|(a, b)| (a.clone(), b.clone()))
    };
    let (coord1, coord2) = match pair {
        Ok(pair) => pair,
        Err(verdict) => {
            eprintln!("{verdict}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let seconds = coord1
        .distance_to(&coord2)
        .map_err(|error| CliError::Failed(format!("comparing coordinates: {error}")))?;
    println!("{}", report(first, second, seconds, args.wan));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coord(vec: &[f64], height: f64, adjustment: f64) -> Coordinate {
        Coordinate {
            vec: vec.to_vec(),
            error: 1.5,
            adjustment,
            height,
        }
    }

    #[test]
    fn the_distance_is_euclidean_plus_heights_plus_adjustments_when_positive() {
        let a = coord(&[0.0, 0.0, 0.0], 0.001, 0.0);
        let b = coord(&[0.003, 0.004, 0.0], 0.002, 0.0);
        // |(3, 4, 0)| ms = 5 ms, plus heights 1 ms and 2 ms.
        assert!((a.distance_to(&b).unwrap() - 0.008).abs() < 1e-12);
        assert_eq!(a.distance_to(&b), b.distance_to(&a));
        // Adjustments count when the sum stays positive...
        let a = coord(&[0.0, 0.0, 0.0], 0.001, 0.0005);
        let b = coord(&[0.003, 0.004, 0.0], 0.002, -0.0015);
        assert!((a.distance_to(&b).unwrap() - 0.007).abs() < 1e-12);
        // ...and are dropped when they would make the distance non-positive.
        let b = coord(&[0.003, 0.004, 0.0], 0.002, -0.0090);
        assert!((a.distance_to(&b).unwrap() - 0.008).abs() < 1e-12);
        assert_eq!(
            a.distance_to(&coord(&[0.0; 8], 0.0, 0.0)),
            Err(DimensionMismatch(3, 8))
        );
    }

    #[test]
    fn the_estimate_prints_as_consul_prints_it() {
        let a = coord(&[0.0; 8], 0.0001, 0.0);
        let mut vec = [0.0; 8];
        vec[0] = 0.001_134;
        let b = coord(&vec, 0.0, 0.0);
        let seconds = a.distance_to(&b).unwrap();
        assert_eq!(
            report("n1", "n2", seconds, false),
            "Estimated n1 <-> n2 rtt: 1.234 ms (using LAN coordinates)"
        );
        assert_eq!(format_millis(0.0), "0.000 ms");
        assert_eq!(format_millis(0.050), "50.000 ms");
    }

    fn entry(node: &str, segment: &str, x: f64) -> NodeCoordinate {
        NodeCoordinate {
            node: node.to_owned(),
            segment: segment.to_owned(),
            coord: Some(coord(&[x, 0.0], 0.0, 0.0)),
        }
    }

    #[test]
    fn lan_coordinates_are_compared_within_one_segment() {
        let entries = vec![
            entry("server", "", 0.0),
            entry("server", "alpha", 0.5),
            entry("Client", "alpha", 0.003),
            entry("other", "", 0.002),
        ];
        let (a, b) = lan_pair(&entries, "server", "client").unwrap();
        assert_eq!(
            (a.vec[0], b.vec[0]),
            (0.5, 0.003),
            "the client's one segment decides"
        );
        let (a, b) = lan_pair(&entries, "server", "other").unwrap();
        assert_eq!((a.vec[0], b.vec[0]), (0.0, 0.002));
        assert_eq!(
            lan_pair(&entries, "client", "other").unwrap_err(),
            Verdict::NotFound("client".into()),
            "two clients of different segments have no coordinates in common"
        );
        assert_eq!(
            lan_pair(&entries, "ghost", "server").unwrap_err().to_string(),
            "Could not find a coordinate for node \"ghost\""
        );
    }

    #[test]
    fn wan_names_carry_their_datacenter() {
        let maps = vec![
            DatacenterMap {
                datacenter: "dc1".into(),
                area_id: "wan".into(),
                coordinates: vec![entry("s1", "", 0.0), entry("s2", "", 0.001)],
            },
            DatacenterMap {
                datacenter: "dc2".into(),
                area_id: "wan".into(),
                coordinates: vec![entry("s1", "", 0.040), entry("s9.dc2", "", 0.041)],
            },
        ];
        let (a, b) = wan_pair(&maps, "s1.dc1", "s1.dc2").unwrap();
        assert_eq!((a.vec[0], b.vec[0]), (0.0, 0.040));
        let (_, b) = wan_pair(&maps, "s2.dc1", "s9.dc2").unwrap();
        assert_eq!(b.vec[0], 0.041, "a name served with its suffix is matched too");
        assert_eq!(
            wan_pair(&maps, "s2.dc2", "s1.dc1").unwrap_err(),
            Verdict::NotFound("s2.dc2".into())
        );
        assert_eq!(
            wan_pair(&maps, "s1.dc1", "s1.dc3").unwrap_err(),
            Verdict::NotFound("s1.dc3".into())
        );
        assert_eq!(wan_pair(&maps, "s1", "s1.dc2").unwrap_err(), Verdict::BadWanName);
        assert_eq!(wan_pair(&maps, "s1.dc1", "s1.").unwrap_err(), Verdict::BadWanName);
    }
}
