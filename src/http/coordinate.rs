//! `/v1/coordinate/*`: the Vivaldi network coordinates gossip measures, in Consul's shapes. The WAN
//! pool's are per datacenter (`datacenters`); the LAN pool's are the nodes of this datacenter as this
//! server's pool has measured them (`nodes`, `node/:node`), where `update` may set one, until the
//! pool measures that node again.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use tribune_gossip::Coordinate;
use tribune_kvstore::{Backend, WatchScope};

use super::{ApiError, Params, QueryMeta, Shared, json_response};

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

/// Blocks as the request asks on the catalog's nodes table (the coordinates themselves are not in
/// the replicated state), and the read's meta and index.
async fn coordinates_read<B: Backend>(agent: &Shared<B>, uri: &Uri) -> Result<(QueryMeta, u64), ApiError> {
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Nodes)
        .await?;
    let index = agent
        .store
        .scope_index(&WatchScope::Nodes)
        .map_err(ApiError::read)?;
    Ok((meta, index))
}

/// `GET /v1/coordinate/nodes`: the LAN coordinates of this datacenter's nodes. The coordinates
/// live in the gossip pool, not the replicated state, so the index (and what a blocking read waits
/// on) is the catalog's nodes': a blocked reader wakes when a node comes or goes, or at `wait`,
/// and always gets the coordinates as measured at that moment.
pub(crate) async fn nodes<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (meta, index) = coordinates_read(&agent, &uri).await?;
    let entries = lan_coordinates(&agent, &headers, &uri).await?;
    Ok(json_response(meta.with_index(index).headers(), &entries))
}

/// The body of `PUT /v1/coordinate/update`.
#[derive(Debug, serde::Deserialize)]
struct CoordinateUpdate {
    #[serde(rename = "Node")]
    node: String,
    #[serde(rename = "Coord")]
    coord: Coordinate,
}

/// `PUT /v1/coordinate/update`: sets a LAN member's coordinate in this server's pool (`node:write`).
/// A node the pool does not know, or a coordinate of the wrong size or with a non-finite value, is
/// a 400.
pub(crate) async fn update<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let update: CoordinateUpdate = super::decode_json(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    agent.authorize(&headers, &uri, |a| a.node_write(&update.node))?;
    let Some(lan) = &agent.gossip else {
        return Err(ApiError::internal("this server has no LAN pool"));
    };
    lan.set_member_coordinate(&update.node, update.coord)
        .await
        .map_err(|e| match e {
            tribune_gossip::RuntimeError::Pool(pool) => {
                ApiError::bad_request(format!("Invalid coordinate: {pool}"))
            }
            other => ApiError::internal(other.to_string()),
        })?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::OK))
}

/// `GET /v1/coordinate/node/:node`: that node's LAN coordinate, as a one-entry list; 404 when none is
/// known (or the token may not read the node). Index and blocking as for `nodes`.
pub(crate) async fn node<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(node): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (meta, index) = coordinates_read(&agent, &uri).await?;
    let entries: Vec<NodeCoordinate> = lan_coordinates(&agent, &headers, &uri)
        .await?
        .into_iter()
        .filter(|e| e.node == node)
        .collect();
    let headers = meta.with_index(index).headers();
    if entries.is_empty() {
        return Ok(axum::response::IntoResponse::into_response((
            StatusCode::NOT_FOUND,
            headers,
        )));
    }
    Ok(json_response(headers, &entries))
}
