//! The primary's ACL records as its HTTP API shows them, read back as this datacenter stores them.
//! Only the fields replication needs are read; unknown fields are ignored, so a primary of a newer
//! version still replicates.

use std::time::SystemTime;

use serde::Deserialize;
use tribune_acl::{NodeIdentity, ServiceIdentity, TemplatedPolicy};
use tribune_kvstore::{AclPolicy, AclRole, AclToken, PolicyLink, RoleLink};

use crate::acl::convert;

/// Go's zero time, which Consul prints for a time never set.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Deserialize)]
pub(super) struct PolicyStub {
    #[serde(rename = "ID")]
    pub(super) id: String,
    #[serde(rename = "ModifyIndex", default)]
    pub(super) modify_index: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct LinkJson {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct PolicyJson {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Description", default)]
    description: String,
    #[serde(rename = "Rules", default)]
    rules: String,
    #[serde(rename = "Datacenters", default)]
    datacenters: Option<Vec<String>>,
}

impl PolicyJson {
    pub(super) fn into_policy(self) -> AclPolicy {
        AclPolicy {
            id: self.id,
            name: self.name,
            description: self.description,
            rules: self.rules,
            datacenters: self.datacenters.unwrap_or_default(),
            create_index: 0,
            modify_index: 0,
        }
    }
}

/// The identity fields tokens and roles share.
#[derive(Debug, Default, Deserialize)]
pub(super) struct IdentitiesJson {
    #[serde(rename = "ServiceIdentities", default)]
    service_identities: Option<Vec<ServiceIdentity>>,
    #[serde(rename = "NodeIdentities", default)]
    node_identities: Option<Vec<NodeIdentity>>,
    #[serde(rename = "TemplatedPolicies", default)]
    templated_policies: Option<Vec<TemplatedPolicy>>,
}

fn policy_links(links: Option<Vec<LinkJson>>) -> Vec<PolicyLink> {
    links
        .unwrap_or_default()
        .into_iter()
        .map(|l| PolicyLink {
            id: l.id,
            name: l.name,
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub(super) struct RoleJson {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Description", default)]
    description: String,
    #[serde(rename = "Policies", default)]
    policies: Option<Vec<LinkJson>>,
    #[serde(flatten)]
    identities: IdentitiesJson,
}

impl RoleJson {
    pub(super) fn into_role(self) -> AclRole {
        let IdentitiesJson {
            service_identities,
            node_identities,
            templated_policies,
        } = self.identities;
        AclRole {
            id: self.id,
            name: self.name,
            description: self.description,
            policies: policy_links(self.policies),
            service_identities: service_identities
                .unwrap_or_default()
                .iter()
                .map(convert::store_service_identity)
                .collect(),
            node_identities: node_identities
                .unwrap_or_default()
                .iter()
                .map(convert::store_node_identity)
                .collect(),
            templated_policies: templated_policies
                .unwrap_or_default()
                .iter()
                .map(convert::store_templated_policy)
                .collect(),
            create_index: 0,
            modify_index: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenJson {
    #[serde(rename = "AccessorID")]
    pub(super) accessor_id: String,
    #[serde(rename = "SecretID", default)]
    pub(super) secret_id: String,
    #[serde(rename = "Description", default)]
    description: String,
    #[serde(rename = "Policies", default)]
    policies: Option<Vec<LinkJson>>,
    #[serde(rename = "Roles", default)]
    roles: Option<Vec<LinkJson>>,
    #[serde(flatten)]
    identities: IdentitiesJson,
    #[serde(rename = "Local", default)]
    pub(super) local: bool,
    #[serde(rename = "AuthMethod", default)]
    auth_method: String,
    #[serde(rename = "ExpirationTime", default)]
    expiration_time: Option<String>,
    #[serde(rename = "CreateTime", default)]
    create_time: Option<String>,
}

/// An RFC 3339 time as unix milliseconds; absent, empty and Go's zero time are "never set".
fn unix_ms(accessor: &str, field: &str, text: Option<&str>) -> Result<Option<u64>, String> {
    let Some(text) = text.filter(|t| !t.is_empty() && *t != ZERO_TIME) else {
        return Ok(None);
    };
    let at = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("token {accessor}: bad {field} {text:?}: {e}"))?;
    Ok(Some(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    ))
}

impl TokenJson {
    pub(super) fn into_token(self) -> Result<AclToken, String> {
        let expiration_unix_ms = unix_ms(
            &self.accessor_id,
            "ExpirationTime",
            self.expiration_time.as_deref(),
        )?;
        let create_time_unix_ms = unix_ms(&self.accessor_id, "CreateTime", self.create_time.as_deref())?;
        let IdentitiesJson {
            service_identities,
            node_identities,
            templated_policies,
        } = self.identities;
        Ok(AclToken {
            accessor_id: self.accessor_id,
            secret_id: self.secret_id,
            description: self.description,
            policies: policy_links(self.policies),
            roles: self
                .roles
                .unwrap_or_default()
                .into_iter()
                .map(|l| RoleLink {
                    id: l.id,
                    name: l.name,
                })
                .collect(),
            service_identities: service_identities
                .unwrap_or_default()
                .iter()
                .map(convert::store_service_identity)
                .collect(),
            node_identities: node_identities
                .unwrap_or_default()
                .iter()
                .map(convert::store_node_identity)
                .collect(),
            templated_policies: templated_policies
                .unwrap_or_default()
                .iter()
                .map(convert::store_templated_policy)
                .collect(),
            local: self.local,
            auth_method: self.auth_method,
            expiration_unix_ms,
            create_time_unix_ms,
            create_index: 0,
            modify_index: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_as_consul_shows_it_reads_back_whole() {
        let json = serde_json::json!({
            "AccessorID": "a", "SecretID": "s", "Description": "d",
            "Policies": [{"ID": "p1", "Name": "one"}],
            "Roles": [{"ID": "r1", "Name": "ops"}],
            "ServiceIdentities": [{"ServiceName": "web", "Datacenters": ["dc1"]}],
            "NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc2"}],
            "TemplatedPolicies": [{"TemplateName": "builtin/service", "TemplateVariables": {"Name": "api"}}],
            "Local": false, "AuthMethod": "jwt",
            "ExpirationTime": "1970-01-01T00:00:01.5Z",
            "CreateTime": "0001-01-01T00:00:00Z",
            "Hash": "x", "CreateIndex": 4, "ModifyIndex": 5, "Legacy": false
        });
        let token = serde_json::from_value::<TokenJson>(json)
            .unwrap()
            .into_token()
            .unwrap();
        assert_eq!(token.roles[0].id, "r1");
        assert_eq!(token.service_identities[0].service_name, "web");
        assert_eq!(token.node_identities[0].datacenter, "dc2");
        assert_eq!(token.templated_policies[0].name, "api");
        assert_eq!(token.auth_method, "jwt");
        assert_eq!(token.expiration_unix_ms, Some(1_500));
        assert_eq!(token.create_time_unix_ms, None);
        assert_eq!(token.create_index, 0);
    }

    #[test]
    fn tokens_are_read_as_consul_lists_them() {
        let json: TokenJson = serde_json::from_str(
            r#"{"AccessorID":"a","SecretID":"s","Description":"d","Policies":[{"ID":"p","Name":"n"}],
                "Local":false,"ExpirationTime":"2030-01-01T00:00:00Z","Hash":"x"}"#,
        )
        .unwrap();
        let token = json.into_token().unwrap();
        assert_eq!(token.policies[0].id, "p");
        assert_eq!(token.expiration_unix_ms, Some(1_893_456_000_000));
        let bare: TokenJson = serde_json::from_str(r#"{"AccessorID":"a","Policies":null}"#).unwrap();
        assert!(bare.into_token().unwrap().policies.is_empty());
    }
}
