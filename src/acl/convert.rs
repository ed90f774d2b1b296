//! The stored ACL records (plain data in `tribune-kvstore`) as the ACL engine's types, and back. The
//! two crates do not depend on each other; this is the one place their shapes meet.

use std::time::{Duration, SystemTime};

use tribune_acl as acl;
use tribune_kvstore as kv;

fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn policy_link(link: &kv::PolicyLink) -> acl::PolicyLink {
    acl::PolicyLink {
        id: link.id.clone(),
        name: link.name.clone(),
    }
}

fn role_link(link: &kv::RoleLink) -> acl::RoleLink {
    acl::RoleLink {
        id: link.id.clone(),
        name: link.name.clone(),
    }
}

pub(crate) fn service_identity(identity: &kv::ServiceIdentity) -> acl::ServiceIdentity {
    acl::ServiceIdentity {
        service_name: identity.service_name.clone(),
        datacenters: identity.datacenters.clone(),
    }
}

pub(crate) fn store_service_identity(identity: &acl::ServiceIdentity) -> kv::ServiceIdentity {
    kv::ServiceIdentity {
        service_name: identity.service_name.clone(),
        datacenters: identity.datacenters.clone(),
    }
}

pub(crate) fn node_identity(identity: &kv::NodeIdentity) -> acl::NodeIdentity {
    acl::NodeIdentity {
        node_name: identity.node_name.clone(),
        datacenter: identity.datacenter.clone(),
    }
}

pub(crate) fn store_node_identity(identity: &acl::NodeIdentity) -> kv::NodeIdentity {
    kv::NodeIdentity {
        node_name: identity.node_name.clone(),
        datacenter: identity.datacenter.clone(),
    }
}

/// A stored templated policy; an empty `name` is a template used without variables.
pub(crate) fn templated_policy(templated: &kv::TemplatedPolicy) -> acl::TemplatedPolicy {
    acl::TemplatedPolicy {
        template_name: templated.template_name.clone(),
        template_variables: (!templated.name.is_empty()).then(|| acl::TemplateVariables {
            name: templated.name.clone(),
        }),
        datacenters: templated.datacenters.clone(),
    }
}

pub(crate) fn store_templated_policy(templated: &acl::TemplatedPolicy) -> kv::TemplatedPolicy {
    kv::TemplatedPolicy {
        template_name: templated.template_name.clone(),
        name: templated
            .template_variables
            .as_ref()
            .map(|vars| vars.name.clone())
            .unwrap_or_default(),
        datacenters: templated.datacenters.clone(),
    }
}

/// The ACL engine's view of a stored token.
pub(crate) fn token_from_store(token: kv::AclToken) -> acl::Token {
    let mut converted = acl::Token::new(token.accessor_id, token.secret_id);
    converted.description = token.description;
    converted.policies = token.policies.iter().map(policy_link).collect();
    converted.roles = token.roles.iter().map(role_link).collect();
    converted.service_identities = token.service_identities.iter().map(service_identity).collect();
    converted.node_identities = token.node_identities.iter().map(node_identity).collect();
    converted.templated_policies = token.templated_policies.iter().map(templated_policy).collect();
    converted.local = token.local;
    converted.auth_method = token.auth_method;
    converted.expiration_time = token.expiration_unix_ms.map(from_unix_ms);
    converted.create_time = token.create_time_unix_ms.map(from_unix_ms);
    converted.create_index = token.create_index;
    converted.modify_index = token.modify_index;
    converted
}

/// The ACL engine's view of a stored policy.
pub(crate) fn policy_from_store(policy: kv::AclPolicy) -> acl::Policy {
    acl::Policy {
        id: policy.id,
        name: policy.name,
        description: policy.description,
        rules: policy.rules,
        datacenters: policy.datacenters,
        create_index: policy.create_index,
        modify_index: policy.modify_index,
    }
}

/// The ACL engine's view of a stored role.
pub(crate) fn role_from_store(role: kv::AclRole) -> acl::Role {
    acl::Role {
        id: role.id,
        name: role.name,
        description: role.description,
        policies: role.policies.iter().map(policy_link).collect(),
        service_identities: role.service_identities.iter().map(service_identity).collect(),
        node_identities: role.node_identities.iter().map(node_identity).collect(),
        templated_policies: role.templated_policies.iter().map(templated_policy).collect(),
        create_index: role.create_index,
        modify_index: role.modify_index,
    }
}

/// A stored auth method as the ACL engine models it. The stored form was checked on write, so a
/// failure here means the record was damaged; the message says which part.
pub(crate) fn auth_method_from_store(method: kv::AclAuthMethod) -> Result<acl::auth::AuthMethod, String> {
    let config = if method.config_json.is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str(&method.config_json)
            .map_err(|e| format!("auth method {}: stored Config is not JSON: {e}", method.name))?
    };
    let token_locality = method
        .token_locality
        .parse()
        .map_err(|e: acl::auth::TokenLocalityError| format!("auth method {}: {e}", method.name))?;
    Ok(acl::auth::AuthMethod {
        name: method.name,
        method_type: method.method_type,
        display_name: method.display_name,
        description: method.description,
        max_token_ttl: Duration::from_millis(method.max_token_ttl_ms),
        token_locality,
        config,
        create_index: method.create_index,
        modify_index: method.modify_index,
    })
}

pub(crate) fn store_auth_method(method: &acl::auth::AuthMethod) -> kv::AclAuthMethod {
    kv::AclAuthMethod {
        name: method.name.clone(),
        method_type: method.method_type.clone(),
        display_name: method.display_name.clone(),
        description: method.description.clone(),
        max_token_ttl_ms: u64::try_from(method.max_token_ttl.as_millis()).unwrap_or(u64::MAX),
        token_locality: method.token_locality.as_str().to_owned(),
        config_json: method.config.to_string(),
        create_index: method.create_index,
        modify_index: method.modify_index,
    }
}

/// A stored binding rule as the ACL engine models it (see [`auth_method_from_store`] on failures).
pub(crate) fn binding_rule_from_store(rule: kv::AclBindingRule) -> Result<acl::auth::BindingRule, String> {
    let bind_type = rule
        .bind_type
        .parse()
        .map_err(|e: acl::auth::BindTypeError| format!("binding rule {}: {e}", rule.id))?;
    Ok(acl::auth::BindingRule {
        id: rule.id,
        description: rule.description,
        auth_method: rule.auth_method,
        selector: rule.selector,
        bind_type,
        bind_name: rule.bind_name,
        bind_vars: (!rule.bind_vars_name.is_empty()).then_some(acl::TemplateVariables {
            name: rule.bind_vars_name,
        }),
        create_index: rule.create_index,
        modify_index: rule.modify_index,
    })
}

pub(crate) fn store_binding_rule(rule: &acl::auth::BindingRule) -> kv::AclBindingRule {
    kv::AclBindingRule {
        id: rule.id.clone(),
        description: rule.description.clone(),
        auth_method: rule.auth_method.clone(),
        selector: rule.selector.clone(),
        bind_type: rule.bind_type.as_str().to_owned(),
        bind_name: rule.bind_name.clone(),
        bind_vars_name: rule
            .bind_vars
            .as_ref()
            .map(|v| v.name.clone())
            .unwrap_or_default(),
        create_index: rule.create_index,
        modify_index: rule.modify_index,
    }
}
