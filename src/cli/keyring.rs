//! `tribune keyring`: lists and rotates the gossip encryption keys of every member of the pool
//! through `/v1/operator/keyring`, printed as Consul prints them. Rotation is install, then use,
//! then remove.

use std::collections::BTreeMap;
use std::process::ExitCode;

use hyper::Method;
use serde::Deserialize;
use serde_json::json;

use super::{CliError, GlobalArgs};

/// `tribune keyring`: exactly one of the actions.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyringArgs {
    /// List the keys installed on the members, with how many hold each.
    #[arg(long)]
    list: bool,
    /// List only the primary keys.
    #[arg(long = "list-primary")]
    list_primary: bool,
    /// Install a new key (base64) on every member, as a secondary key.
    #[arg(long, value_name = "KEY")]
    install: Option<String>,
    /// Make an installed key the primary one on every member.
    #[arg(long = "use", value_name = "KEY")]
    use_key: Option<String>,
    /// Remove a secondary key from every member.
    #[arg(long, value_name = "KEY")]
    remove: Option<String>,
    /// With -list or -list-primary: only the agent's own keys.
    #[arg(long = "local-only")]
    local_only: bool,
    /// Accepted for Consul's scripts (0-5); members are asked directly, so it changes nothing.
    #[arg(long = "relay-factor", default_value_t = 0)]
    relay_factor: u8,
}

/// One pool's answer (Consul's `KeyringResponse`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolKeys {
    #[serde(rename = "WAN", default)]
    wan: bool,
    #[serde(default)]
    datacenter: String,
    #[serde(default)]
    keys: BTreeMap<String, usize>,
    #[serde(default)]
    primary_keys: BTreeMap<String, usize>,
    #[serde(default)]
    num_nodes: usize,
}

pub(crate) async fn run(args: KeyringArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let actions = [
        args.list,
        args.list_primary,
        args.install.is_some(),
        args.use_key.is_some(),
        args.remove.is_some(),
    ];
    match actions.iter().filter(|given| **given).count() {
        0 => {
            return Err(CliError::Usage(
                "one of -list, -list-primary, -install, -use or -remove is required".into(),
            ));
        }
        1 => {}
        _ => return Err(CliError::Usage("Only a single action is allowed".into())),
    }
    if args.local_only && !(args.list || args.list_primary) {
        return Err(CliError::Usage(
            "-local-only can only be used with -list or -list-primary".into(),
        ));
    }
    if args.relay_factor > 5 {
        return Err(CliError::Usage("Relay factor must be in range: [0, 5]".into()));
    }
    let mut client = global.client()?;
    let mut query = format!("?relay-factor={}", args.relay_factor);
    if args.local_only {
        query.push_str("&local-only=1");
    }
    let path = format!("/v1/operator/keyring{query}");

    if args.list || args.list_primary {
        println!("==> Gathering installed encryption keys...");
        let pools: Vec<PoolKeys> = client
            .call(Method::GET, &path, "")
            .await
            .and_then(|reply| reply.ok())
            .and_then(|reply| reply.json())
            .map_err(|error| error.context("listing keys"))?;
        print!("{}", format_pools(&pools, args.list_primary));
        return Ok(ExitCode::SUCCESS);
    }
    let (method, key, doing, failing) = if let Some(key) = args.install {
        (
            Method::POST,
            key,
            "Installing new gossip encryption key...",
            "installing the key",
        )
    } else if let Some(key) = args.use_key {
        (
            Method::PUT,
            key,
            "Changing primary gossip encryption key...",
            "changing the primary key",
        )
    } else if let Some(key) = args.remove {
        (
            Method::DELETE,
            key,
            "Removing gossip encryption key...",
            "removing the key",
        )
    } else {
        return Err(CliError::Usage("no keyring action given".into()));
    };
    println!("==> {doing}");
    client
        .call(method, &path, json!({ "Key": key }).to_string())
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context(failing))?;
    Ok(ExitCode::SUCCESS)
}

/// Consul's listing: a block per pool (WAN first), each key with `[holders/members]`.
fn format_pools(pools: &[PoolKeys], primary_only: bool) -> String {
    let mut ordered: Vec<&PoolKeys> = pools.iter().collect();
    ordered.sort_by_key(|pool| (!pool.wan, pool.datacenter.clone()));
    let mut out = String::new();
    for pool in ordered {
        let title = if pool.wan {
            "WAN".to_owned()
        } else {
            format!("{} (LAN)", pool.datacenter)
        };
        out.push_str(&format!("\n{title}:\n"));
        let keys = if primary_only {
            &pool.primary_keys
        } else {
            &pool.keys
        };
        for (key, holders) in keys {
            out.push_str(&format!("  {key} [{holders}/{}]\n", pool.num_nodes));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn listing_is_printed_as_consul_prints_it() {
        let pools: Vec<PoolKeys> = serde_json::from_str(
            r#"[{"WAN": false, "Datacenter": "dc1", "Segment": "", "NumNodes": 3,
                 "Keys": {"K1": 3, "K2": 2}, "PrimaryKeys": {"K1": 3}, "Messages": {}}]"#,
        )
        .unwrap();
        assert_eq!(
            format_pools(&pools, false),
            "\ndc1 (LAN):\n  K1 [3/3]\n  K2 [2/3]\n"
        );
        assert_eq!(format_pools(&pools, true), "\ndc1 (LAN):\n  K1 [3/3]\n");
    }
}
