//! What a query name asks for under the agent's domains: Consul's naming rules, read from the
//! right. Pure string work: no catalog, no records.

/// A name under `domain` or `alt_domain`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The domain itself (`consul.`): SOA and NS questions.
    Apex,
    /// `[<tag>.]<service>.service[.<dc>]`, or RFC 2782's `_<service>._<tag|tcp>.service[.<dc>]`.
    Service {
        service: String,
        tag: Option<String>,
        datacenter: Option<String>,
    },
    /// `<node>.node[.<dc>]` (a node name may hold dots).
    Node {
        node: String,
        datacenter: Option<String>,
    },
    /// `<hex ip>.addr[.<dc>]`, the target Consul gives an SRV record of a service with its own IP.
    Addr(std::net::IpAddr),
    /// Under the domain but not a name Consul answers (NXDOMAIN).
    Unknown,
}

/// Where a question's name falls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Under one of the agent's domains; `domain` is the one it was asked under.
    Local { lookup: Lookup, domain: String },
    /// Outside them: for the recursors.
    Outside,
}

/// Reads `name` (any case, with or without its trailing dot) against `domains` (lower case,
/// each ending with a dot).
pub(crate) fn parse(name: &str, domains: &[&str]) -> Parsed {
    let mut lower = name.to_ascii_lowercase();
    if !lower.ends_with('.') {
        lower.push('.');
    }
    for domain in domains {
        let rest = if lower == *domain {
            Some("")
        } else {
            lower.strip_suffix(domain).and_then(|rest| rest.strip_suffix('.'))
        };
        if let Some(rest) = rest {
            return Parsed::Local {
                lookup: lookup(rest),
                domain: (*domain).to_owned(),
            };
        }
    }
    Parsed::Outside
}

/// The labels left of the domain, e.g. `web.service.dc1`.
fn lookup(rest: &str) -> Lookup {
    if rest.is_empty() {
        return Lookup::Apex;
    }
    let labels: Vec<&str> = rest.split('.').collect();
    // The kind is the rightmost label Consul knows; labels right of it name the datacenter.
    let Some(at) = labels
        .iter()
        .rposition(|l| matches!(*l, "service" | "node" | "addr"))
    else {
        return Lookup::Unknown;
    };
    let (parts, kind_and_suffix) = labels.split_at(at);
    let datacenter = match kind_and_suffix {
        [_] => None,
        [_, dc] if !dc.is_empty() => Some((*dc).to_owned()),
        _ => return Lookup::Unknown,
    };
    if parts.iter().any(|p| p.is_empty()) {
        return Lookup::Unknown;
    }
    match (kind_and_suffix.first().copied(), parts) {
        (Some("service"), [service]) => service_lookup(service, None, datacenter),
        (Some("service"), [first, second]) => {
            // RFC 2782: `_web._tcp` (any protocol label) or `_web._primary` (a tag).
            match (first.strip_prefix('_'), second.strip_prefix('_')) {
                (Some(service), Some(tag)) => {
                    let tag = (tag != "tcp").then(|| tag.to_owned());
                    service_lookup(service, tag, datacenter)
                }
                _ => service_lookup(second, Some((*first).to_owned()), datacenter),
            }
        }
        (Some("node"), parts) if !parts.is_empty() => Lookup::Node {
            node: parts.join("."),
            datacenter,
        },
        (Some("addr"), [hex]) => match hex_ip(hex) {
            Some(ip) => Lookup::Addr(ip),
            None => Lookup::Unknown,
        },
        _ => Lookup::Unknown,
    }
}

fn service_lookup(service: &str, tag: Option<String>, datacenter: Option<String>) -> Lookup {
    if service.is_empty() || tag.as_deref() == Some("") {
        return Lookup::Unknown;
    }
    Lookup::Service {
        service: service.to_owned(),
        tag,
        datacenter,
    }
}

/// The label Consul makes of an IP for `.addr.` names: its bytes in hex.
pub(crate) fn ip_label(ip: std::net::IpAddr) -> String {
    let bytes = match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_ip(hex: &str) -> Option<std::net::IpAddr> {
    let byte = |i: usize| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok());
    match hex.len() {
        8 => {
            let mut octets = [0u8; 4];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = byte(2 * i)?;
            }
            Some(std::net::IpAddr::from(octets))
        }
        32 => {
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = byte(2 * i)?;
            }
            Some(std::net::IpAddr::from(octets))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAINS: &[&str] = &["consul.", "example.org."];

    fn local(name: &str) -> Lookup {
        match parse(name, DOMAINS) {
            Parsed::Local { lookup, .. } => lookup,
            Parsed::Outside => panic!("{name} read as outside"),
        }
    }

    fn service(service: &str, tag: Option<&str>, dc: Option<&str>) -> Lookup {
        Lookup::Service {
            service: service.into(),
            tag: tag.map(Into::into),
            datacenter: dc.map(Into::into),
        }
    }

    #[test]
    fn service_names_in_every_form() {
        assert_eq!(local("web.service.consul."), service("web", None, None));
        assert_eq!(local("WEB.Service.CONSUL"), service("web", None, None));
        assert_eq!(
            local("web.service.dc2.consul."),
            service("web", None, Some("dc2"))
        );
        assert_eq!(
            local("primary.web.service.consul."),
            service("web", Some("primary"), None)
        );
        assert_eq!(local("_web._tcp.service.consul."), service("web", None, None));
        assert_eq!(
            local("_web._primary.service.dc1.consul."),
            service("web", Some("primary"), Some("dc1"))
        );
        assert_eq!(local("web.service.example.org."), service("web", None, None));
    }

    #[test]
    fn node_addr_apex_and_unknown_names() {
        assert_eq!(
            local("db-1.node.consul."),
            Lookup::Node {
                node: "db-1".into(),
                datacenter: None
            }
        );
        assert_eq!(
            local("db.rack.node.dc1.consul."),
            Lookup::Node {
                node: "db.rack".into(),
                datacenter: Some("dc1".into())
            }
        );
        assert_eq!(
            local("c0000210.addr.dc1.consul."),
            Lookup::Addr("192.0.2.16".parse().unwrap())
        );
        assert_eq!(ip_label("192.0.2.16".parse().unwrap()), "c0000210");
        assert_eq!(local("consul."), Lookup::Apex);
        for unknown in [
            "web.consul.",
            "service.consul.",
            "a.b.web.service.consul.",
            "web.service.dc1.extra.consul.",
            "zz.addr.consul.",
            "x.query.consul.",
        ] {
            assert_eq!(local(unknown), Lookup::Unknown, "{unknown}");
        }
        assert_eq!(parse("example.com.", DOMAINS), Parsed::Outside);
        assert_eq!(parse("notconsul.", DOMAINS), Parsed::Outside);
    }
}
