//! Building a DNS answer from a question and what the catalog says: Consul's rules for which
//! instances are answered, in which records and sections, with which TTLs, and the SOA of an
//! empty or NXDOMAIN answer. The catalog is behind [`Catalog`], so everything here is testable
//! without a server; the clock's reading (the SOA serial) and the shuffle's RNG are passed in.
//!
//! Not here: sockets, UDP size limits and truncation, forwarding to recursors (`server.rs`).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom as _;

use super::name::{self, Lookup, Parsed};
use crate::config::DnsConfig;

/// How an instance's checks add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Passing,
    Warning,
    Critical,
}

/// One instance of a service, as a DNS answer needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Instance {
    pub(crate) node: String,
    pub(crate) node_address: String,
    /// The service's own address; empty when it uses its node's.
    pub(crate) service_address: String,
    pub(crate) port: u16,
    pub(crate) weight_passing: u16,
    pub(crate) weight_warning: u16,
    pub(crate) health: Health,
}

/// A node, as a DNS answer needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeInfo {
    pub(crate) address: String,
    pub(crate) meta: BTreeMap<String, String>,
}

/// Why the catalog gave no list.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    /// The datacenter in the name is not known (the answer is NXDOMAIN, as in Consul).
    #[error("no path to datacenter {0:?}")]
    UnknownDatacenter(String),
    /// The catalog could not be read (the answer is SERVFAIL).
    #[error("catalog read failed: {0}")]
    Failed(String),
}

/// The catalog reads a DNS answer needs. Implementations MUST apply the agent's ACLs (the default
/// token) and consistency settings themselves; `dc = None` means the agent's own datacenter.
pub(crate) trait Catalog: Send + Sync + 'static {
    /// The instances of `service` (with `tag`), whatever their health.
    fn service<'a>(
        &'a self,
        dc: Option<&'a str>,
        service: &'a str,
        tag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, LookupError>>;

    /// The node called `node`, or `None`.
    fn node<'a>(
        &'a self,
        dc: Option<&'a str>,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<NodeInfo>, LookupError>>;
}

/// What to do with a question.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send this answer.
    Answer(Message),
    /// The name is outside the agent's domains: ask the recursors.
    Recurse,
}

/// Answers questions under the agent's domains.
pub(crate) struct Responder {
    pub(crate) config: DnsConfig,
    /// The agent's datacenter, named in SRV targets when the question names none.
    pub(crate) datacenter: String,
    pub(crate) catalog: Box<dyn Catalog>,
}

impl Responder {
    /// The answer to `request`. `serial` is the SOA serial (Consul: the current Unix time);
    /// `rng` orders the instances.
    pub(crate) async fn answer(
        &self,
        request: &Message,
        serial: u32,
        rng: &mut (dyn rand::RngCore + Send),
    ) -> Outcome {
        let mut response = reply_to(request, !self.config.recursors.is_empty());
        let Some(query) = request.queries().first() else {
            response.set_response_code(ResponseCode::FormErr);
            return Outcome::Answer(response);
        };
        let mut domains = vec![self.config.domain.as_str()];
        if let Some(alt) = &self.config.alt_domain {
            domains.push(alt);
        }
        let (lookup, domain) = match name::parse(&query.name().to_ascii(), &domains) {
            Parsed::Outside => return Outcome::Recurse,
            Parsed::Local { lookup, domain } => (lookup, domain),
        };
        response.set_authoritative(true);
        let qname = query.name().clone();
        let qtype = query.query_type();
        let built = match lookup {
            Lookup::Apex => Ok(self.apex(&qname, qtype, &domain, serial)),
            Lookup::Service {
                service,
                tag,
                datacenter,
            } => {
                let found = self
                    .catalog
                    .service(datacenter.as_deref(), &service, tag.as_deref())
                    .await;
                found.map(|instances| {
                    let dc = datacenter.as_deref().unwrap_or(&self.datacenter);
                    self.service_records(&qname, qtype, &service, dc, &domain, instances, rng)
                })
            }
            Lookup::Node { node, datacenter } => self
                .catalog
                .node(datacenter.as_deref(), &node)
                .await
                .map(|found| self.node_records(&qname, qtype, found)),
            Lookup::Addr(ip) => Ok(Records::found(
                address_record(&qname, ip, qtype, 0).into_iter().collect(),
                Vec::new(),
            )),
            Lookup::Unknown => Ok(Records::NxDomain),
        };
        match built {
            Ok(Records::Found { answers, extra }) => {
                if answers.is_empty() {
                    response.add_name_server(soa(&domain, serial));
                }
                response.add_answers(answers);
                response.add_additionals(extra);
            }
            Ok(Records::NxDomain) | Err(LookupError::UnknownDatacenter(_)) => {
                response.set_response_code(ResponseCode::NXDomain);
                response.add_name_server(soa(&domain, serial));
            }
            Err(LookupError::Failed(reason)) => {
                tracing::warn!(name = %qname, %reason, "DNS lookup failed");
                response.set_response_code(ResponseCode::ServFail);
            }
        }
        Outcome::Answer(response)
    }

    fn apex(&self, qname: &Name, qtype: RecordType, domain: &str, serial: u32) -> Records {
        let answers = if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            let mut record = soa(domain, serial);
            record.set_name(qname.clone());
            vec![record]
        } else {
            Vec::new()
        };
        Records::found(answers, Vec::new())
    }

    fn service_ttl(&self, service: &str) -> u32 {
        let ttl = self
            .config
            .service_ttl
            .get(service)
            .or_else(|| self.config.service_ttl.get("*"))
            .copied()
            .unwrap_or(Duration::ZERO);
        seconds(ttl)
    }

    #[allow(clippy::too_many_arguments)]
    fn service_records(
        &self,
        qname: &Name,
        qtype: RecordType,
        service: &str,
        dc: &str,
        domain: &str,
        instances: Vec<Instance>,
        rng: &mut (dyn rand::RngCore + Send),
    ) -> Records {
        let mut healthy: Vec<Instance> = instances
            .into_iter()
            .filter(|i| match i.health {
                Health::Passing => true,
                Health::Warning => !self.config.only_passing,
                Health::Critical => false,
            })
            .collect();
        if healthy.is_empty() {
            return Records::NxDomain;
        }
        healthy.shuffle(rng);
        let ttl = self.service_ttl(service);
        let mut answers = Vec::new();
        let mut extra = Vec::new();
        let mut seen = HashSet::new();
        for instance in &healthy {
            let address = if instance.service_address.is_empty() {
                instance.node_address.as_str()
            } else {
                instance.service_address.as_str()
            };
            if qtype == RecordType::SRV {
                let weight = match instance.health {
                    Health::Warning => instance.weight_warning,
                    _ => instance.weight_passing,
                };
                let own_ip =
                    !instance.service_address.is_empty() && instance.service_address != instance.node_address;
                let (target, target_records) = match address.parse::<IpAddr>() {
                    Ok(ip) => {
                        let target = if own_ip {
                            format!("{}.addr.{dc}.{domain}", name::ip_label(ip))
                        } else {
                            format!("{}.node.{dc}.{domain}", instance.node)
                        };
                        let Ok(target) = Name::from_ascii(&target) else {
                            continue;
                        };
                        let a = address_record(&target, ip, RecordType::ANY, ttl);
                        (target, a.into_iter().collect::<Vec<_>>())
                    }
                    // A host name is its own target; its addresses are for the client to find.
                    Err(_) => match Name::from_ascii(fqdn(address)) {
                        Ok(target) => (target, Vec::new()),
                        Err(_) => continue,
                    },
                };
                answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::SRV(SRV::new(1, weight, instance.port, target)),
                ));
                extra.extend(target_records);
            } else if seen.insert(address.to_owned()) {
                match address.parse::<IpAddr>() {
                    Ok(ip) => answers.extend(address_record(qname, ip, qtype, ttl)),
                    Err(_) if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) => {
                        if let Ok(target) = Name::from_ascii(fqdn(address)) {
                            answers.push(Record::from_rdata(
                                qname.clone(),
                                ttl,
                                RData::CNAME(CNAME(target)),
                            ));
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        Records::found(answers, extra)
    }

    fn node_records(&self, qname: &Name, qtype: RecordType, node: Option<NodeInfo>) -> Records {
        let Some(node) = node else {
            return Records::NxDomain;
        };
        let ttl = seconds(self.config.node_ttl);
        let mut answers = Vec::new();
        match node.address.parse::<IpAddr>() {
            Ok(ip) => answers.extend(address_record(qname, ip, qtype, ttl)),
            Err(_) if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) => {
                if let Ok(target) = Name::from_ascii(fqdn(&node.address)) {
                    answers.push(Record::from_rdata(
                        qname.clone(),
                        ttl,
                        RData::CNAME(CNAME(target)),
                    ));
                }
            }
            Err(_) => {}
        }
        // Node meta as TXT: in the answer when asked for, beside the addresses otherwise (Consul's
        // `enable_additional_node_meta_txt`, on by default).
        let meta: Vec<Record> = node
            .meta
            .iter()
            .map(|(key, value)| {
                // Consul's `rfc1035-` keys carry a bare value.
                let text = if key.starts_with("rfc1035-") {
                    value.clone()
                } else {
                    format!("{key}={value}")
                };
                Record::from_rdata(qname.clone(), ttl, RData::TXT(TXT::new(vec![text])))
            })
            .collect();
        if matches!(qtype, RecordType::TXT | RecordType::ANY) {
            answers.extend(meta);
            Records::found(answers, Vec::new())
        } else if answers.is_empty() {
            Records::found(answers, Vec::new())
        } else {
            Records::found(answers, meta)
        }
    }
}

/// What a lookup produced.
enum Records {
    Found {
        answers: Vec<Record>,
        extra: Vec<Record>,
    },
    NxDomain,
}

impl Records {
    fn found(answers: Vec<Record>, extra: Vec<Record>) -> Self {
        Records::Found { answers, extra }
    }
}

/// An empty response to `request`: its id, question, RD flag and EDNS echoed.
pub(crate) fn reply_to(request: &Message, recursion_available: bool) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(recursion_available)
        .add_queries(request.queries().iter().cloned());
    if let Some(edns) = request.extensions() {
        let mut echoed = hickory_proto::op::Edns::new();
        echoed.set_max_payload(edns.max_payload().max(512));
        response.set_edns(echoed);
    }
    response
}

/// An A or AAAA record of `ip` when the question's type asks for that family.
fn address_record(name: &Name, ip: IpAddr, qtype: RecordType, ttl: u32) -> Option<Record> {
    match ip {
        IpAddr::V4(v4) if matches!(qtype, RecordType::A | RecordType::ANY) => {
            Some(Record::from_rdata(name.clone(), ttl, RData::A(A(v4))))
        }
        IpAddr::V6(v6) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
            Some(Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6))))
        }
        _ => None,
    }
}

/// Consul's SOA of a domain: `ns.<domain>`, `hostmaster.<domain>`, refresh 1 h, retry 10 min,
/// expire 1 day, minimum TTL 0 (also the record's TTL).
pub(crate) fn soa(domain: &str, serial: u32) -> Record {
    let under = |prefix: &str| Name::from_ascii(format!("{prefix}{domain}")).unwrap_or_else(|_| Name::root());
    Record::from_rdata(
        under(""),
        0,
        RData::SOA(SOA::new(
            under("ns."),
            under("hostmaster."),
            serial,
            3600,
            600,
            86400,
            0,
        )),
    )
}

fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_owned()
    } else {
        format!("{host}.")
    }
}

fn seconds(ttl: Duration) -> u32 {
    u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use rand::SeedableRng as _;

    /// A catalog of fixed answers: `web` in dc1 (three instances: passing, warning, critical),
    /// the node `db-1` with meta, and dc2 unknown.
    struct Fixed;

    fn web() -> Vec<Instance> {
        let instance = |node: &str, ip: &str, service_ip: &str, health| Instance {
            node: node.into(),
            node_address: ip.into(),
            service_address: service_ip.into(),
            port: 8080,
            weight_passing: 3,
            weight_warning: 1,
            health,
        };
        vec![
            instance("web-1", "192.0.2.1", "", Health::Passing),
            instance("web-2", "192.0.2.2", "198.51.100.2", Health::Warning),
            instance("web-3", "192.0.2.3", "", Health::Critical),
        ]
    }

    impl Catalog for Fixed {
        fn service<'a>(
            &'a self,
            dc: Option<&'a str>,
            service: &'a str,
            tag: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Vec<Instance>, LookupError>> {
            Box::pin(async move {
                match (dc, service, tag) {
                    (Some("dc2"), ..) => Err(LookupError::UnknownDatacenter("dc2".into())),
                    (_, "web", None) => Ok(web()),
                    (_, "web", Some("primary")) => Ok(web().into_iter().take(1).collect()),
                    (_, "down", _) => Ok(web().into_iter().skip(2).collect()),
                    _ => Ok(Vec::new()),
                }
            })
        }

        fn node<'a>(
            &'a self,
            _dc: Option<&'a str>,
            node: &'a str,
        ) -> BoxFuture<'a, Result<Option<NodeInfo>, LookupError>> {
            Box::pin(async move {
                Ok((node == "db-1").then(|| NodeInfo {
                    address: "192.0.2.9".into(),
                    meta: BTreeMap::from([("rack".into(), "r1".into())]),
                }))
            })
        }
    }

    fn responder(config: DnsConfig) -> Responder {
        Responder {
            config,
            datacenter: "dc1".into(),
            catalog: Box::new(Fixed),
        }
    }

    fn ask(responder: &Responder, name: &str, qtype: RecordType) -> Message {
        let mut request = Message::new();
        request
            .set_id(7)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let outcome = futures::executor::block_on(responder.answer(&request, 1_700_000_000, &mut rng));
        match outcome {
            Outcome::Answer(message) => message,
            Outcome::Recurse => panic!("{name} was sent to the recursors"),
        }
    }

    fn addresses(records: &[Record]) -> Vec<String> {
        let mut out: Vec<String> = records
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_answers_leave_out_critical_instances_and_warning_ones_with_only_passing() {
        let all = responder(DnsConfig::default());
        let answer = ask(&all, "web.service.consul.", RecordType::A);
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert!(answer.authoritative());
        assert_eq!(addresses(answer.answers()), ["192.0.2.1", "198.51.100.2"]);

        let passing = responder(DnsConfig {
            only_passing: true,
            ..DnsConfig::default()
        });
        let answer = ask(&passing, "WEB.service.dc1.consul.", RecordType::A);
        assert_eq!(addresses(answer.answers()), ["192.0.2.1"]);

        // Every instance critical: NXDOMAIN with the SOA, as for an unknown service.
        let answer = ask(&all, "down.service.consul.", RecordType::A);
        assert_eq!(answer.response_code(), ResponseCode::NXDomain);
        assert_eq!(answer.name_servers()[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn srv_answers_name_node_or_address_targets_with_their_addresses_beside() {
        let responder = responder(DnsConfig::default());
        let answer = ask(&responder, "_web._tcp.service.consul.", RecordType::SRV);
        let mut targets: Vec<(String, u16, u16)> = answer
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(srv) => Some((srv.target().to_ascii(), srv.port(), srv.weight())),
                _ => None,
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            [
                ("c6336402.addr.dc1.consul.".to_owned(), 8080, 1),
                ("web-1.node.dc1.consul.".to_owned(), 8080, 3),
            ]
        );
        assert_eq!(addresses(answer.additionals()), ["192.0.2.1", "198.51.100.2"]);
        let tagged = ask(&responder, "primary.web.service.consul.", RecordType::SRV);
        assert_eq!(tagged.answers().len(), 1);
    }

    #[test]
    fn node_answers_carry_meta_as_txt() {
        let responder = responder(DnsConfig {
            node_ttl: Duration::from_secs(30),
            ..DnsConfig::default()
        });
        let answer = ask(&responder, "db-1.node.consul.", RecordType::A);
        assert_eq!(addresses(answer.answers()), ["192.0.2.9"]);
        assert_eq!(answer.answers()[0].ttl(), 30);
        let txt = |records: &[Record]| -> Vec<String> {
            records
                .iter()
                .filter_map(|r| match r.data() {
                    RData::TXT(t) => Some(t.to_string()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(txt(answer.additionals()), ["rack=r1"]);
        let answer = ask(&responder, "db-1.node.consul.", RecordType::TXT);
        assert_eq!(txt(answer.answers()), ["rack=r1"]);
        // A known node with no record of the type: NOERROR, empty, the SOA in authority.
        let answer = ask(&responder, "db-1.node.consul.", RecordType::AAAA);
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert!(answer.answers().is_empty());
        assert_eq!(answer.name_servers().len(), 1);
    }

    #[test]
    fn unknown_names_and_datacenters_are_nxdomain_with_consuls_soa() {
        let responder = responder(DnsConfig {
            alt_domain: Some("example.org.".into()),
            ..DnsConfig::default()
        });
        for name in [
            "nope.node.consul.",
            "web.service.dc2.consul.",
            "x.query.consul.",
            "web.example.org.",
        ] {
            let answer = ask(&responder, name, RecordType::A);
            assert_eq!(answer.response_code(), ResponseCode::NXDomain, "{name}");
            let soa_record = &answer.name_servers()[0];
            let RData::SOA(soa) = soa_record.data() else {
                panic!("{name}: no SOA")
            };
            assert_eq!(soa.serial(), 1_700_000_000);
            assert_eq!(
                (soa.refresh(), soa.retry(), soa.expire(), soa.minimum()),
                (3600, 600, 86400, 0)
            );
            assert!(soa.mname().to_ascii().starts_with("ns."), "{}", soa.mname());
            assert!(
                soa.rname().to_ascii().starts_with("hostmaster."),
                "{}",
                soa.rname()
            );
        }
        let answer = ask(&responder, "web.service.example.org.", RecordType::A);
        assert_eq!(answer.answers().len(), 2);
    }

    #[test]
    fn service_ttls_come_from_the_map_or_its_star() {
        let responder = responder(DnsConfig {
            service_ttl: BTreeMap::from([
                ("*".into(), Duration::from_secs(5)),
                ("db".into(), Duration::from_secs(50)),
            ]),
            ..DnsConfig::default()
        });
        assert_eq!(responder.service_ttl("db"), 50);
        assert_eq!(responder.service_ttl("web"), 5);
        let answer = ask(&responder, "web.service.consul.", RecordType::A);
        assert!(answer.answers().iter().all(|r| r.ttl() == 5));
    }

    #[test]
    fn names_outside_the_domain_go_to_the_recursors() {
        let responder = responder(DnsConfig::default());
        let mut request = Message::new();
        request.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let outcome = futures::executor::block_on(responder.answer(&request, 0, &mut rng));
        assert!(matches!(outcome, Outcome::Recurse));
    }
}
