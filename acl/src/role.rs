//! ACL roles: a named bundle of policy links, service and node identities and templated policies that
//! tokens link to instead of repeating them.

use serde::{Deserialize, Serialize};

use crate::identity::{IdentityError, IdentityOwner, NodeIdentity, ServiceIdentity, TemplatedPolicy};
use crate::token::PolicyLink;

/// The longest role name Consul accepts.
pub const ROLE_NAME_MAX_LENGTH: usize = 256;

/// An ACL role. Serialises with Consul's JSON names; empty lists are omitted as Consul does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Role {
    /// Unique identifier (a UUID).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Unique name (letters, digits, `-`, `_`; at most 256).
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Free text.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// Linked policies.
    #[serde(rename = "Policies", default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyLink>,
    /// Service identities the role grants.
    #[serde(rename = "ServiceIdentities", default, skip_serializing_if = "Vec::is_empty")]
    pub service_identities: Vec<ServiceIdentity>,
    /// Node identities the role grants.
    #[serde(rename = "NodeIdentities", default, skip_serializing_if = "Vec::is_empty")]
    pub node_identities: Vec<NodeIdentity>,
    /// Templated policies the role grants.
    #[serde(rename = "TemplatedPolicies", default, skip_serializing_if = "Vec::is_empty")]
    pub templated_policies: Vec<TemplatedPolicy>,
    /// Raft index of creation.
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    /// Raft index of the last change.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

/// Why a role is refused. Messages are Consul's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoleError {
    /// The name is empty.
    #[error("Invalid Role: no Name is set")]
    MissingName,
    /// The name does not match `^[A-Za-z0-9\-_]{1,256}$`.
    #[error("Invalid Role: invalid Name. Only alphanumeric characters, '-' and '_' are allowed")]
    InvalidName {
        /// The refused name.
        name: String,
    },
    /// One of its identities or templated policies is invalid.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Whether `name` may name a role: 1 to 256 ASCII letters, digits, `-` and `_`.
pub fn is_valid_role_name(name: &str) -> bool {
    (1..=ROLE_NAME_MAX_LENGTH).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Role {
    /// A role with the given identifiers and nothing in it.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Role {
            id: id.into(),
            name: name.into(),
            ..Role::default()
        }
    }

    /// Checks what Consul checks on its own when a role is written: the name, the identities and the
    /// templated policies. (Policy links are checked against the store by the caller.)
    pub fn validate(&self) -> Result<(), RoleError> {
        if self.name.is_empty() {
            return Err(RoleError::MissingName);
        }
        if !is_valid_role_name(&self.name) {
            return Err(RoleError::InvalidName {
                name: self.name.clone(),
            });
        }
        for identity in &self.service_identities {
            identity.validate(IdentityOwner::Role)?;
        }
        for identity in &self.node_identities {
            identity.validate(IdentityOwner::Role)?;
        }
        for templated in &self.templated_policies {
            templated.validate().map_err(IdentityError::from)?;
        }
        Ok(())
    }
}
