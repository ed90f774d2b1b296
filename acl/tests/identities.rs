//! Service and node identities, templated policies and roles: validation with Consul's messages, the
//! policies they synthesize, the template catalog and the JSON shapes.

use tribune_acl::{
    Authorizer, Decision, DefaultPolicy, IdentityError, IdentityOwner, NodeIdentity, PolicyLink, PolicyRules,
    Role, RoleError, RoleLink, ServiceIdentity, TEMPLATE_API_GATEWAY, TEMPLATE_DNS, TEMPLATE_NODE,
    TEMPLATE_NOMAD_CLIENT, TEMPLATE_NOMAD_SERVER, TEMPLATE_SERVICE, TemplateError, TemplateVariables,
    TemplatedPolicy, Token, builtin_template, builtin_templates, is_valid_identity_name, preview,
};

fn authorizer(rules: &str) -> Authorizer {
    match PolicyRules::parse(rules) {
        Ok(parsed) => Authorizer::new([&parsed], DefaultPolicy::Deny),
        Err(error) => panic!("synthesized rules do not parse: {error}\n{rules}"),
    }
}

#[test]
fn identity_names_follow_consul() {
    for ok in ["a-bc", "a_bc", "0abc", "abc0", "a0bc", "a", "web"] {
        assert!(is_valid_identity_name(ok), "{ok} should be valid");
    }
    for bad in [
        "", "-abc", "abc-", "_abc", "abc_", ":abc", "a:bc", "Abc", "aBc", "a\"b", "a b",
    ] {
        assert!(!is_valid_identity_name(bad), "{bad} should be invalid");
    }
    assert!(is_valid_identity_name(&"x".repeat(256)));
    assert!(!is_valid_identity_name(&"x".repeat(257)));
}

#[test]
fn service_identity_validation_messages() {
    let err = ServiceIdentity::new("")
        .validate(IdentityOwner::Token)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service identity is missing the service name field on this token"
    );
    let err = ServiceIdentity::new("")
        .validate(IdentityOwner::Role)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service identity is missing the service name field on this role"
    );
    let err = ServiceIdentity::new("Web")
        .validate(IdentityOwner::Token)
        .unwrap_err();
    assert_eq!(err, IdentityError::InvalidServiceName { name: "Web".into() });
    assert_eq!(
        err.to_string(),
        "Service identity \"Web\" has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed"
    );
    assert!(ServiceIdentity::new("web").validate(IdentityOwner::Token).is_ok());
}

#[test]
fn node_identity_validation_messages() {
    let err = NodeIdentity::new("", "dc1")
        .validate(IdentityOwner::Role)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Node identity is missing the node name field on this role"
    );
    let err = NodeIdentity::new("n1", "")
        .validate(IdentityOwner::Token)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Node identity is missing the datacenter field on this token"
    );
    let err = NodeIdentity::new("N1", "dc1")
        .validate(IdentityOwner::Token)
        .unwrap_err();
    assert_eq!(err, IdentityError::InvalidNodeName { name: "N1".into() });
    assert!(
        NodeIdentity::new("node-1", "dc1")
            .validate(IdentityOwner::Token)
            .is_ok()
    );
}

#[test]
fn service_identity_synthesizes_consul_policy() {
    let mut identity = ServiceIdentity::new("web");
    identity.datacenters = vec!["dc1".into(), "dc3".into()];
    let policy = identity.synthesized_policy();
    assert_eq!(
        policy.rules,
        "\nservice \"web\" {\n\tpolicy = \"write\"\n}\nservice \"web-sidecar-proxy\" {\n\tpolicy = \"write\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}\nnode_prefix \"\" {\n\tpolicy = \"read\"\n}"
    );
    assert_eq!(
        policy.description,
        "synthetic policy for service identity \"web\""
    );
    assert_eq!(policy.name, format!("synthetic-policy-{}", policy.id));
    // Go's fnv128a Sum(rules) appends the empty digest to the rules bytes.
    assert!(policy.id.starts_with("0a7365727669636520"), "{}", policy.id);
    assert!(policy.id.ends_with("6c62272e07bb014262b821756295c58d"));
    assert_eq!(policy.datacenters, vec!["dc1".to_string(), "dc3".to_string()]);

    let authz = authorizer(&policy.rules);
    assert_eq!(authz.service_write("web"), Decision::Allow);
    assert_eq!(authz.service_write("web-sidecar-proxy"), Decision::Allow);
    assert_eq!(authz.service_write("web2"), Decision::Deny);
    assert_eq!(authz.service_read("db"), Decision::Allow);
    assert_eq!(authz.node_read("any"), Decision::Allow);
    assert_eq!(authz.node_write("any"), Decision::Deny);
    assert!(identity.applies_in("dc3") && !identity.applies_in("dc2"));
    assert!(ServiceIdentity::new("web").applies_in("anywhere"));
}

#[test]
fn node_identity_synthesizes_consul_policy() {
    let identity = NodeIdentity::new("node-1", "dc2");
    let policy = identity.synthesized_policy();
    assert_eq!(
        policy.rules,
        "\nnode \"node-1\" {\n\tpolicy = \"write\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}"
    );
    assert_eq!(
        policy.description,
        "synthetic policy for node identity \"node-1\""
    );
    assert_eq!(policy.datacenters, vec!["dc2".to_string()]);
    assert!(policy.applies_in("dc2") && !policy.applies_in("dc1"));
    let authz = authorizer(&policy.rules);
    assert_eq!(authz.node_write("node-1"), Decision::Allow);
    assert_eq!(authz.node_write("node-2"), Decision::Deny);
    assert_eq!(authz.service_read("x"), Decision::Allow);
    assert_eq!(authz.service_write("x"), Decision::Deny);
}

#[test]
fn catalog_lists_consul_templates() {
    let names: Vec<&str> = builtin_templates().iter().map(|t| t.name).collect();
    for name in [
        TEMPLATE_SERVICE,
        TEMPLATE_NODE,
        TEMPLATE_DNS,
        TEMPLATE_NOMAD_SERVER,
        TEMPLATE_NOMAD_CLIENT,
        TEMPLATE_API_GATEWAY,
    ] {
        assert!(names.contains(&name), "{name} missing");
    }
    let service = builtin_template(TEMPLATE_SERVICE).expect("builtin/service");
    assert!(service.requires_name());
    assert!(service.template.contains("service \"{{.Name}}-sidecar-proxy\""));
    let json = serde_json::to_value(service).expect("serialises");
    assert_eq!(json["TemplateName"], "builtin/service");
    assert!(
        json["Schema"]
            .as_str()
            .is_some_and(|s| s.contains("\"required\": [\"name\"]"))
    );
    assert!(
        json["Description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Gives the token or role"))
    );
    assert!(json.get("TemplateID").is_none() && json.get("id").is_none());
    let dns = builtin_template(TEMPLATE_DNS).expect("builtin/dns");
    assert!(!dns.requires_name() && dns.schema.is_empty());
    assert!(builtin_template("builtin/nope").is_none());
    // Every template renders to rules this crate parses.
    for template in builtin_templates() {
        let policy = preview(template.name, Some(TemplateVariables::named("x1"))).expect("renders");
        assert!(PolicyRules::parse(&policy.rules).is_ok(), "{}", template.name);
    }
}

#[test]
fn templated_policy_validation() {
    let unknown = TemplatedPolicy::named("builtin/nope", "x");
    assert_eq!(
        unknown.validate().unwrap_err().to_string(),
        "acl templated policy does not exist: builtin/nope"
    );
    let no_vars = TemplatedPolicy::unnamed(TEMPLATE_SERVICE);
    assert_eq!(
        no_vars.validate().unwrap_err(),
        TemplateError::MissingVariables {
            template: TEMPLATE_SERVICE.into()
        }
    );
    let empty_gateway = TemplatedPolicy::named(TEMPLATE_API_GATEWAY, "");
    assert_eq!(
        empty_gateway.validate().unwrap_err().to_string(),
        "name is required"
    );
    // Consul checks identity names first: an empty service name is invalid, not missing.
    let empty_service = TemplatedPolicy::named(TEMPLATE_SERVICE, "");
    assert!(matches!(
        empty_service.validate(),
        Err(TemplateError::InvalidServiceName { .. })
    ));
    let bad_service = TemplatedPolicy::named(TEMPLATE_SERVICE, "Web");
    assert_eq!(
        bad_service.validate().unwrap_err().to_string(),
        "service identity \"Web\" has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed"
    );
    let bad_node = TemplatedPolicy::named(TEMPLATE_NODE, "a:b");
    assert!(matches!(
        bad_node.validate(),
        Err(TemplateError::InvalidNodeName { .. })
    ));
    let smuggling =
        TemplatedPolicy::named(TEMPLATE_API_GATEWAY, "gw\" { policy = \"write\" }\nacl = \"write");
    assert!(matches!(
        smuggling.validate(),
        Err(TemplateError::UnsafeName { .. })
    ));
    assert!(TemplatedPolicy::unnamed(TEMPLATE_DNS).validate().is_ok());
    assert!(TemplatedPolicy::named(TEMPLATE_NODE, "node-1").validate().is_ok());
}

#[test]
fn templated_policy_synthesizes_and_previews() {
    let mut templated = TemplatedPolicy::named(TEMPLATE_SERVICE, "api");
    templated.datacenters = vec!["dc1".into()];
    let policy = templated.synthesized_policy().expect("valid");
    assert_eq!(policy.rules, ServiceIdentity::new("api").rules());
    assert_eq!(policy.id, ServiceIdentity::new("api").synthesized_policy().id);
    assert_eq!(
        policy.description,
        "synthetic policy generated from templated policy: builtin/service"
    );
    assert_eq!(policy.datacenters, vec!["dc1".to_string()]);

    let previewed = preview(TEMPLATE_NODE, Some(TemplateVariables::named("n1"))).expect("valid");
    assert_eq!(previewed.rules, NodeIdentity::new("n1", "dc1").rules());
    assert!(previewed.datacenters.is_empty());
    let dns = preview(TEMPLATE_DNS, None).expect("no variables needed");
    assert_eq!(authorizer(&dns.rules).query_read("q"), Decision::Allow);
    assert_eq!(
        preview("builtin/nope", None).unwrap_err(),
        TemplateError::UnknownTemplate {
            name: "builtin/nope".into()
        }
    );
    assert!(matches!(
        preview(TEMPLATE_NODE, None),
        Err(TemplateError::MissingVariables { .. })
    ));
}

#[test]
fn template_variables_read_both_spellings() {
    let upper: TemplatedPolicy =
        serde_json::from_str(r#"{"TemplateName":"builtin/service","TemplateVariables":{"Name":"api"}}"#)
            .unwrap();
    let lower: TemplatedPolicy =
        serde_json::from_str(r#"{"TemplateName":"builtin/service","TemplateVariables":{"name":"api"}}"#)
            .unwrap();
    assert_eq!(upper, lower);
    assert_eq!(upper.template_variables, Some(TemplateVariables::named("api")));
}

#[test]
fn role_validation() {
    assert_eq!(Role::new("r", "").validate().unwrap_err(), RoleError::MissingName);
    assert_eq!(
        Role::new("r", "").validate().unwrap_err().to_string(),
        "Invalid Role: no Name is set"
    );
    let err = Role::new("r", "bad name").validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "Invalid Role: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
    );
    assert!(Role::new("r", "Ops_Team-1").validate().is_ok());
    assert!(Role::new("r", "x".repeat(256)).validate().is_ok());
    assert!(Role::new("r", "x".repeat(257)).validate().is_err());

    let mut role = Role::new("r", "ops");
    role.service_identities.push(ServiceIdentity::new(""));
    assert_eq!(
        role.validate().unwrap_err().to_string(),
        "Service identity is missing the service name field on this role"
    );
    let mut role = Role::new("r", "ops");
    role.node_identities.push(NodeIdentity::new("n1", ""));
    assert_eq!(
        role.validate().unwrap_err(),
        RoleError::Identity(IdentityError::MissingNodeDatacenter {
            owner: IdentityOwner::Role
        })
    );
    let mut role = Role::new("r", "ops");
    role.templated_policies
        .push(TemplatedPolicy::named("builtin/nope", "x"));
    assert!(matches!(
        role.validate(),
        Err(RoleError::Identity(IdentityError::TemplatedPolicy(
            TemplateError::UnknownTemplate { .. }
        )))
    ));
}

#[test]
fn role_json_uses_consul_names() {
    let mut role = Role::new("r-1", "ops");
    role.description = "operators".into();
    role.policies.push(PolicyLink::by_id("p-1"));
    role.node_identities.push(NodeIdentity::new("n1", "dc1"));
    role.create_index = 5;
    role.modify_index = 7;
    let json = serde_json::to_value(&role).unwrap();
    assert_eq!(json["ID"], "r-1");
    assert_eq!(json["Name"], "ops");
    assert_eq!(json["Description"], "operators");
    assert_eq!(json["Policies"][0]["ID"], "p-1");
    assert_eq!(json["NodeIdentities"][0]["NodeName"], "n1");
    assert_eq!(json["NodeIdentities"][0]["Datacenter"], "dc1");
    assert_eq!(json["CreateIndex"], 5);
    assert_eq!(json["ModifyIndex"], 7);
    assert!(json.get("ServiceIdentities").is_none() && json.get("TemplatedPolicies").is_none());
    let back: Role = serde_json::from_value(json).unwrap();
    assert_eq!(back, role);
    let minimal: Role = serde_json::from_str(r#"{"ID":"r","Name":"n"}"#).unwrap();
    assert_eq!(minimal, Role::new("r", "n"));
}

#[test]
fn token_carries_roles_and_identities() {
    let token = Token::new("a", "s");
    assert!(token.roles.is_empty() && token.service_identities.is_empty());
    assert!(token.node_identities.is_empty() && token.templated_policies.is_empty());
    assert!(token.auth_method.is_empty() && token.create_time.is_none());

    let json = r#"{"AccessorID":"a","SecretID":"s","Roles":[{"ID":"r-1"}],
        "ServiceIdentities":[{"ServiceName":"web","Datacenters":["dc1"]}],
        "NodeIdentities":[{"NodeName":"n1","Datacenter":"dc2"}],
        "TemplatedPolicies":[{"TemplateName":"builtin/dns"}],
        "AuthMethod":"k8s"}"#;
    let token: Token = serde_json::from_str(json).unwrap();
    assert_eq!(token.roles, vec![RoleLink::by_id("r-1")]);
    assert_eq!(token.service_identities[0].datacenters, vec!["dc1".to_string()]);
    assert_eq!(token.node_identities, vec![NodeIdentity::new("n1", "dc2")]);
    assert_eq!(
        token.templated_policies,
        vec![TemplatedPolicy::unnamed("builtin/dns")]
    );
    assert_eq!(token.auth_method, "k8s");
    let round: Token = serde_json::from_value(serde_json::to_value(&token).unwrap()).unwrap();
    assert_eq!(round, token);
    // Older serialisations without the new fields still read.
    let old: Token = serde_json::from_str(r#"{"AccessorID":"a","SecretID":"s"}"#).unwrap();
    assert_eq!(old, Token::new("a", "s"));
}

#[test]
fn token_identity_validation() {
    let mut token = Token::new("a", "s");
    token.service_identities.push(ServiceIdentity {
        service_name: "web".into(),
        datacenters: vec!["dc1".into()],
    });
    assert!(token.validate_identities().is_ok());
    token.local = true;
    assert_eq!(
        token.validate_identities().unwrap_err().to_string(),
        "Service identity \"web\" cannot specify a list of datacenters on a local token"
    );
    let mut token = Token::new("a", "s");
    token.node_identities.push(NodeIdentity::new("", "dc1"));
    assert_eq!(
        token.validate_identities().unwrap_err().to_string(),
        "Node identity is missing the node name field on this token"
    );
    let mut token = Token::new("a", "s");
    token
        .templated_policies
        .push(TemplatedPolicy::unnamed(TEMPLATE_NODE));
    assert!(matches!(
        token.validate_identities(),
        Err(IdentityError::TemplatedPolicy(_))
    ));
}
