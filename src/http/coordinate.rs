//! `/v1/coordinate/*`: the Vivaldi network coordinates gossip measures, in Consul's shapes. The WAN
//! pool's are per datacenter (`datacenters`); the LAN pool's are the nodes of this datacenter as this
//! server's pool has measured them (`nodes`, `node/:node`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use tribune_gossip::Coordinate;
use tribune_kvstore::Backend;

use super::{ApiError, Shared, json_response};

/// One datacenter's servers and their WAN coordinates.
#[derive(Debug, Serialize)]
struct DatacenterMap {
    #[serde(rename = "Datacenter")]
    datacenter: String,
    #[serde(rename = "AreaID")]
    area_id: &'static str,
    #[serde(rename = "Coordinates")]
    coordinates: Vec<NodeCoordinate>,
}

/// A node and its coordinate, as Consul's `CoordinateEntry`.
#[derive(Debug, Serialize)]
struct NodeCoordinate {
    #[serde(rename = "Node")]
    node: String,
    #[serde(rename = "Segment")]
    segment: &'static str,
    #[serde(rename = "Partition")]
    partition: &'static str,
    #[serde(rename = "Coord")]
    coord: Coordinate,
}

impl NodeCoordinate {
    fn new(node: String, coord: Coordinate) -> Self {
        NodeCoordinate {
            node,
            segment: "",
            partition: "default",
            coord,
        }
    }
}

/// `GET /v1/coordinate/datacenters`: every known datacenter with its servers' WAN coordinates
/// (node names without `.<dc>`); never forwarded, no ACL check, as Consul's.
pub(crate) async fn datacenters<B: Backend>(State(agent): State<Shared<B>>) -> Response {
    let maps: Vec<DatacenterMap> = match &agent.federation {
        Some(federation) => federation
            .datacenter_coordinates()
            .await
            .into_iter()
            .map(|(datacenter, nodes)| DatacenterMap {
                datacenter,
                area_id: "wan",
                coordinates: nodes
                    .into_iter()
                    .map(|(node, coord)| NodeCoordinate::new(node, coord))
                    .collect(),
            })
            .collect(),
        None => Vec::new(),
    };
    json_response(HeaderMap::new(), &maps)
}

/// The LAN coordinates this server knows, filtered by `node:read`, sorted by node.
async fn lan_coordinates<B: Backend>(
    agent: &Shared<B>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Vec<NodeCoordinate>, ApiError> {
    let access = agent.access(headers, uri)?;
    let Some(lan) = &agent.gossip else {
        return Ok(Vec::new());
    };
    let mut entries: Vec<NodeCoordinate> = lan
        .coordinates()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .map(|(node, coord)| NodeCoordinate::new(node, coord))
        .collect();
    access.filter(&mut entries, |authorizer, entry| {
        authorizer.node_read(&entry.node)
    });
    entries.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(entries)
}

/// `GET /v1/coordinate/nodes`: the LAN coordinates of this datacenter's nodes.
pub(crate) async fn nodes<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entries = lan_coordinates(&agent, &headers, &uri).await?;
    Ok(json_response(HeaderMap::new(), &entries))
}

/// `GET /v1/coordinate/node/:node`: that node's LAN coordinate, as a one-entry list; 404 when none is
/// known (or the token may not read the node).
pub(crate) async fn node<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(node): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entries: Vec<NodeCoordinate> = lan_coordinates(&agent, &headers, &uri)
        .await?
        .into_iter()
        .filter(|e| e.node == node)
        .collect();
    if entries.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, ""));
    }
    Ok(json_response(HeaderMap::new(), &entries))
}
