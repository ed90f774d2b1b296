//! Service identities, node identities and templated policies in token and role requests: read,
//! checked with Consul's words, deduplicated, and shown back.

use serde::Deserialize;
use tribune_acl::{IdentityError, IdentityOwner, NodeIdentity, ServiceIdentity, TemplatedPolicy};
use tribune_kvstore::{AclRole, AclToken};

use crate::acl::convert;

/// The identity fields of a token or role request body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(super) struct IdentitiesRequest {
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    service_identities: Vec<ServiceIdentity>,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    node_identities: Vec<NodeIdentity>,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    templated_policies: Vec<TemplatedPolicy>,
}

/// Checked identities, ready to store or to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Identities {
    pub(super) service_identities: Vec<ServiceIdentity>,
    pub(super) node_identities: Vec<NodeIdentity>,
    pub(super) templated_policies: Vec<TemplatedPolicy>,
}

impl IdentitiesRequest {
    /// Checks every identity as Consul does and drops repeats; the message is Consul's. A local
    /// token's service identities may not name datacenters.
    pub(super) fn validate(self, owner: IdentityOwner, local_token: bool) -> Result<Identities, String> {
        let mut service_identities: Vec<ServiceIdentity> = Vec::new();
        for identity in self.service_identities {
            identity.validate(owner).map_err(|e| e.to_string())?;
            if local_token && !identity.datacenters.is_empty() {
                return Err(IdentityError::DatacentersOnLocalToken {
                    name: identity.service_name,
                }
                .to_string());
            }
            match service_identities
                .iter_mut()
                .find(|known| known.service_name == identity.service_name)
            {
                // The same service twice: everywhere if either is everywhere, else both lists.
                Some(known) => {
                    if known.datacenters.is_empty() || identity.datacenters.is_empty() {
                        known.datacenters.clear();
                    } else {
                        for dc in identity.datacenters {
                            if !known.datacenters.contains(&dc) {
                                known.datacenters.push(dc);
                            }
                        }
                    }
                }
                None => service_identities.push(identity),
            }
        }
        let mut node_identities: Vec<NodeIdentity> = Vec::new();
        for identity in self.node_identities {
            identity.validate(owner).map_err(|e| e.to_string())?;
            if !node_identities.contains(&identity) {
                node_identities.push(identity);
            }
        }
        let mut templated_policies: Vec<TemplatedPolicy> = Vec::new();
        for templated in self.templated_policies {
            templated.validate().map_err(|e| e.to_string())?;
            if !templated_policies.contains(&templated) {
                templated_policies.push(templated);
            }
        }
        Ok(Identities {
            service_identities,
            node_identities,
            templated_policies,
        })
    }
}

impl Identities {
    pub(super) fn from_token(token: &AclToken) -> Self {
        Identities {
            service_identities: token
                .service_identities
                .iter()
                .map(convert::service_identity)
                .collect(),
            node_identities: token.node_identities.iter().map(convert::node_identity).collect(),
            templated_policies: token
                .templated_policies
                .iter()
                .map(convert::templated_policy)
                .collect(),
        }
    }

    pub(super) fn from_role(role: &AclRole) -> Self {
        Identities {
            service_identities: role
                .service_identities
                .iter()
                .map(convert::service_identity)
                .collect(),
            node_identities: role.node_identities.iter().map(convert::node_identity).collect(),
            templated_policies: role
                .templated_policies
                .iter()
                .map(convert::templated_policy)
                .collect(),
        }
    }

    pub(super) fn into_token(self, mut token: AclToken) -> AclToken {
        token.service_identities = self
            .service_identities
            .iter()
            .map(convert::store_service_identity)
            .collect();
        token.node_identities = self
            .node_identities
            .iter()
            .map(convert::store_node_identity)
            .collect();
        token.templated_policies = self
            .templated_policies
            .iter()
            .map(convert::store_templated_policy)
            .collect();
        token
    }

    pub(super) fn into_role(self, mut role: AclRole) -> AclRole {
        role.service_identities = self
            .service_identities
            .iter()
            .map(convert::store_service_identity)
            .collect();
        role.node_identities = self
            .node_identities
            .iter()
            .map(convert::store_node_identity)
            .collect();
        role.templated_policies = self
            .templated_policies
            .iter()
            .map(convert::store_templated_policy)
            .collect();
        role
    }

    pub(super) fn is_empty(&self) -> bool {
        self.service_identities.is_empty()
            && self.node_identities.is_empty()
            && self.templated_policies.is_empty()
    }

    /// The fields the content hash covers, in a fixed order.
    pub(super) fn hash_fields(&self) -> Vec<String> {
        let mut fields = Vec::new();
        for identity in &self.service_identities {
            fields.push(format!("service:{}", identity.service_name));
            fields.extend(identity.datacenters.iter().cloned());
        }
        for identity in &self.node_identities {
            fields.push(format!("node:{}@{}", identity.node_name, identity.datacenter));
        }
        for templated in &self.templated_policies {
            fields.push(format!("template:{}", templated.template_name));
            if let Some(vars) = &templated.template_variables {
                fields.push(vars.name.clone());
            }
            fields.extend(templated.datacenters.iter().cloned());
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_service_identities_merge_their_datacenters() {
        let request = IdentitiesRequest {
            service_identities: vec![
                ServiceIdentity {
                    service_name: "web".into(),
                    datacenters: vec!["dc1".into()],
                },
                ServiceIdentity {
                    service_name: "web".into(),
                    datacenters: vec!["dc2".into()],
                },
            ],
            ..IdentitiesRequest::default()
        };
        let checked = request.validate(IdentityOwner::Token, false).unwrap();
        assert_eq!(checked.service_identities.len(), 1);
        assert_eq!(checked.service_identities[0].datacenters, vec!["dc1", "dc2"]);
    }

    #[test]
    fn a_node_identity_needs_a_datacenter() {
        let request = IdentitiesRequest {
            node_identities: vec![NodeIdentity {
                node_name: "n1".into(),
                datacenter: String::new(),
            }],
            ..IdentitiesRequest::default()
        };
        assert_eq!(
            request.validate(IdentityOwner::Role, false).unwrap_err(),
            "Node identity is missing the datacenter field on this role"
        );
    }
}
