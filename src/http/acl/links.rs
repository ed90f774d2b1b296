//! Links from tokens and roles to policies and roles: resolved by ID or name on write, named as the
//! linked object is named now on read.

use serde::{Deserialize, Serialize};
use tribune_kvstore::{Backend, GLOBAL_MANAGEMENT_POLICY_ID, PolicyLink, RoleLink};

use super::super::{ApiError, Shared};

#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct LinkJson {
    #[serde(rename = "ID", default, deserialize_with = "crate::http::null_as_default")]
    pub(crate) id: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    pub(crate) name: String,
}

/// Resolves the policy links of a token or role request (by ID or by name) to stored policies, dropping
/// repeats, with Consul's words for a link that names nothing.
pub(super) fn resolve_policy_links<B: Backend>(
    agent: &Shared<B>,
    links: Vec<LinkJson>,
) -> Result<Vec<PolicyLink>, ApiError> {
    let mut resolved: Vec<PolicyLink> = Vec::with_capacity(links.len());
    for link in links {
        let by_id = !link.id.is_empty();
        let found = if by_id {
            agent.store.acl_policy(&link.id).map_err(ApiError::read)?.value
        } else {
            agent
                .store
                .acl_policy_by_name(&link.name)
                .map_err(ApiError::read)?
                .value
        };
        let policy = match found {
            Some(policy) => PolicyLink {
                id: policy.id,
                name: policy.name,
            },
            None if link.id == GLOBAL_MANAGEMENT_POLICY_ID => PolicyLink {
                id: link.id,
                name: String::new(),
            },
            None if by_id => {
                return Err(ApiError::internal(format!(
                    "No such ACL policy with ID {:?}",
                    link.id
                )));
            }
            None => {
                return Err(ApiError::internal(format!(
                    "No such ACL policy with name {:?}",
                    link.name
                )));
            }
        };
        if !resolved.iter().any(|known| known.id == policy.id) {
            resolved.push(policy);
        }
    }
    Ok(resolved)
}

/// Resolves the role links of a token request (by ID or by name), dropping repeats, with Consul's words
/// for a link that names nothing.
pub(super) fn resolve_role_links<B: Backend>(
    agent: &Shared<B>,
    links: Vec<LinkJson>,
) -> Result<Vec<RoleLink>, ApiError> {
    let mut resolved: Vec<RoleLink> = Vec::with_capacity(links.len());
    for link in links {
        let found = if link.id.is_empty() {
            agent
                .store
                .acl_role_by_name(&link.name)
                .map_err(ApiError::read)?
                .value
        } else {
            agent.store.acl_role(&link.id).map_err(ApiError::read)?.value
        };
        let role = match found {
            Some(role) => RoleLink {
                id: role.id,
                name: role.name,
            },
            None if link.id.is_empty() => {
                return Err(ApiError::internal(format!(
                    "No such ACL role with name {:?}",
                    link.name
                )));
            }
            None => {
                return Err(ApiError::internal(format!(
                    "No such ACL role with ID {:?}",
                    link.id
                )));
            }
        };
        if !resolved.iter().any(|known| known.id == role.id) {
            resolved.push(role);
        }
    }
    Ok(resolved)
}

/// Policy links as the API shows them: named as the policies are named now (a renamed policy shows its
/// new name), links to deleted policies left out, as Consul does.
pub(super) fn policy_links_json<B: Backend>(
    agent: &Shared<B>,
    links: &[PolicyLink],
) -> Result<Vec<LinkJson>, ApiError> {
    let mut shown = Vec::with_capacity(links.len());
    for link in links {
        let policy = agent.store.acl_policy(&link.id).map_err(ApiError::read)?.value;
        match policy {
            Some(policy) => shown.push(LinkJson {
                id: policy.id,
                name: policy.name,
            }),
            None if link.id == GLOBAL_MANAGEMENT_POLICY_ID => shown.push(LinkJson {
                id: link.id.clone(),
                name: link.name.clone(),
            }),
            None => {}
        }
    }
    Ok(shown)
}

/// Role links as the API shows them: named as the roles are named now, links to deleted roles left out.
pub(super) fn role_links_json<B: Backend>(
    agent: &Shared<B>,
    links: &[RoleLink],
) -> Result<Vec<LinkJson>, ApiError> {
    let mut shown = Vec::with_capacity(links.len());
    for link in links {
        if let Some(role) = agent.store.acl_role(&link.id).map_err(ApiError::read)?.value {
            shown.push(LinkJson {
                id: role.id,
                name: role.name,
            });
        }
    }
    Ok(shown)
}
