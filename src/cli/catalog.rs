//! `tribune catalog datacenters|nodes|services`: Consul's catalog listing commands, with their
//! flags and aligned columns.

use std::collections::BTreeMap;
use std::process::ExitCode;

use hyper::Method;
use serde_json::Value;

use super::http::{add_query_param, encode_query_value};
use super::{CliError, GlobalArgs, columns};

/// The catalog verbs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CatalogCommand {
    /// Lists every known datacenter, sorted by estimated round trip time from this one.
    Datacenters,
    /// Lists the nodes of the catalog.
    Nodes(NodesArgs),
    /// Lists the services of the catalog.
    Services(ServicesArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct NodesArgs {
    /// Only nodes running this service.
    #[arg(long)]
    service: Option<String>,
    /// Only nodes with this metadata, `key=value` (repeatable).
    #[arg(long = "node-meta", value_name = "KEY=VALUE")]
    node_meta: Vec<String>,
    /// Print the full node ID, tagged addresses and metadata.
    #[arg(long)]
    detailed: bool,
    /// Sort by round trip time from this node (`_agent`: the agent's).
    #[arg(long, value_name = "NODE")]
    near: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServicesArgs {
    /// Only the services of this node.
    #[arg(long)]
    node: Option<String>,
    /// Print each service's tags.
    #[arg(long)]
    tags: bool,
    /// Only services on nodes with this metadata, `key=value` (repeatable).
    #[arg(long = "node-meta", value_name = "KEY=VALUE")]
    node_meta: Vec<String>,
}

pub(crate) async fn run(command: CatalogCommand, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    match command {
        CatalogCommand::Datacenters => datacenters(global).await,
        CatalogCommand::Nodes(args) => nodes(args, global).await,
        CatalogCommand::Services(args) => services(args, global).await,
    }
}

async fn get(global: &GlobalArgs, path: &str, doing: &str) -> Result<Value, CliError> {
    global
        .client()?
        .call(Method::GET, path, "")
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context(doing))
}

async fn datacenters(global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let datacenters = get(global, "/v1/catalog/datacenters", "listing datacenters").await?;
    for datacenter in datacenters.as_array().into_iter().flatten() {
        println!("{}", datacenter.as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

/// `key=value` flags as the API's `node-meta=key:value` parameters.
fn add_node_meta(mut path: String, pairs: &[String]) -> Result<String, CliError> {
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            CliError::Usage(format!("Error parsing -node-meta {pair:?}: expected key=value"))
        })?;
        path = add_query_param(&path, "node-meta", &format!("{key}:{value}"));
    }
    Ok(path)
}

fn text(value: &Value, field: &str) -> String {
    match value.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A JSON object as `k=v` pairs sorted by key, joined by ", " (Consul's `mapToKV`).
fn map_to_kv(value: Option<&Value>) -> String {
    let Some(map) = value.and_then(Value::as_object) else {
        return String::new();
    };
    let sorted: BTreeMap<&String, String> = map
        .iter()
        .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of `catalog nodes`: the node's ID cut to 8 characters unless detailed.
pub(crate) fn node_rows(nodes: &[Value], detailed: bool) -> Vec<Vec<String>> {
    let mut rows = vec![if detailed {
        ["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]
            .map(String::from)
            .to_vec()
    } else {
        ["Node", "ID", "Address", "DC"].map(String::from).to_vec()
    }];
    for node in nodes {
        let id = text(node, "ID");
        let mut row = vec![
            text(node, "Node"),
            if detailed {
                id
            } else {
                id.chars().take(8).collect()
            },
            text(node, "Address"),
            text(node, "Datacenter"),
        ];
        if detailed {
            row.push(map_to_kv(node.get("TaggedAddresses")));
            row.push(map_to_kv(node.get("Meta")));
        }
        rows.push(row);
    }
    rows
}

async fn nodes(args: NodesArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut path = match &args.service {
        Some(service) => format!("/v1/catalog/service/{}", encode_query_value(service)),
        None => "/v1/catalog/nodes".to_owned(),
    };
    path = add_node_meta(path, &args.node_meta)?;
    if let Some(near) = &args.near {
        path = add_query_param(&path, "near", near);
    }
    let answer = get(global, &path, "Error listing nodes").await?;
    let mut nodes: Vec<Value> = answer.as_array().cloned().unwrap_or_default();
    if args.service.is_some() {
        // Service instances, one per node and service: the node's own fields, once per node.
        let mut seen = std::collections::HashSet::new();
        nodes = nodes
            .into_iter()
            .filter(|instance| seen.insert(text(instance, "Node")))
            .map(|instance| {
                serde_json::json!({
                    "ID": instance.get("ID"),
                    "Node": instance.get("Node"),
                    "Address": instance.get("Address"),
                    "Datacenter": instance.get("Datacenter"),
                    "TaggedAddresses": instance.get("TaggedAddresses"),
                    "Meta": instance.get("NodeMeta"),
                })
            })
            .collect();
    }
    if nodes.is_empty() {
        eprintln!("No nodes match the given query - try expanding your search.");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", columns(&node_rows(&nodes, args.detailed)));
    Ok(ExitCode::SUCCESS)
}

/// The output of `catalog services`: names, or names and their sorted tags joined by ",".
pub(crate) fn services_output(services: &BTreeMap<String, Vec<String>>, tags: bool) -> String {
    if !tags {
        return services.keys().map(|name| format!("{name}\n")).collect();
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|(name, tags)| {
            let mut tags = tags.clone();
            tags.sort();
            tags.dedup();
            vec![name.clone(), tags.join(",")]
        })
        .collect();
    columns(&rows)
}

fn tags_of(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tag| tag.as_str().map(str::to_owned))
        .collect()
}

async fn services(args: ServicesArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match &args.node {
        Some(node) => {
            let path = format!("/v1/catalog/node/{}", encode_query_value(node));
            let answer = get(global, &path, "Error listing services for node").await?;
            if let Some(map) = answer.get("Services").and_then(Value::as_object) {
                for service in map.values() {
                    services
                        .entry(text(service, "Service"))
                        .or_default()
                        .extend(tags_of(service.get("Tags").unwrap_or(&Value::Null)));
                }
            }
        }
        None => {
            let path = add_node_meta("/v1/catalog/services".into(), &args.node_meta)?;
            let answer = get(global, &path, "Error listing services").await?;
            if let Some(map) = answer.as_object() {
                for (name, tags) in map {
                    services.insert(name.clone(), tags_of(tags));
                }
            }
        }
    }
    if services.is_empty() {
        eprintln!("No services match the given query - try expanding your search.");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", services_output(&services, args.tags));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_aligned_with_short_ids() {
        let nodes = vec![serde_json::json!({
            "ID": "12345678-aaaa-bbbb-cccc-dddddddddddd",
            "Node": "server-one",
            "Address": "127.0.0.1",
            "Datacenter": "dc1",
            "TaggedAddresses": {"wan": "1.2.3.4", "lan": "127.0.0.1"},
            "Meta": {"b": "2", "a": "1"},
        })];
        assert_eq!(
            columns(&node_rows(&nodes, false)),
            "Node        ID        Address    DC\nserver-one  12345678  127.0.0.1  dc1\n"
        );
        let detailed = columns(&node_rows(&nodes, true));
        assert!(detailed.contains("lan=127.0.0.1, wan=1.2.3.4"), "{detailed}");
        assert!(detailed.contains("a=1, b=2"), "{detailed}");
    }

    #[test]
    fn services_list_names_or_names_and_tags() {
        let services = BTreeMap::from([
            ("web".to_owned(), vec!["v2".to_owned(), "v1".to_owned()]),
            ("consul".to_owned(), vec![]),
        ]);
        assert_eq!(services_output(&services, false), "consul\nweb\n");
        assert_eq!(services_output(&services, true), "consul\nweb     v1,v2\n");
    }
}
