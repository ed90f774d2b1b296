use super::*;
use crate::sim::{SimConfig, Simulation};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn pool_with(name: &str, port: u16, keyring: Option<Keyring>) -> Pool {
    seeded_pool(name, port, keyring, 7)
}

fn seeded_pool(name: &str, port: u16, keyring: Option<Keyring>, seed: u64) -> Pool {
    let local = LocalNode {
        name: name.into(),
        addr: addr(port),
        tags: Tags::new(),
    };
    // The nonce source the tokio runtime gives its pools.
    let nonces = Box::new(crate::SystemNonces::new());
    Pool::new(Config::local(), local, keyring, nonces, seed, Instant::ZERO).unwrap()
}

fn drain(p: &mut Pool) -> Vec<Output> {
    std::iter::from_fn(|| p.poll_output()).collect()
}

fn events(outs: &[Output]) -> Vec<Event> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn alive(name: &str, port: u16, inc: u32) -> Vec<u8> {
    encode_packet(&[Message::Alive {
        incarnation: inc,
        node: name.into(),
        addr: addr(port),
        tags: Tags::new(),
    }])
}

fn encode_packet(m: &[Message]) -> Vec<u8> {
    codec::encode_packet(m)
}

#[test]
fn new_pool_schedules_its_timers_and_refuses_bad_input() {
    let mut p = pool_with("a", 1, None);
    let outs = drain(&mut p);
    let timers: Vec<&Timer> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Timer { timer, .. } => Some(timer),
            _ => None,
        })
        .collect();
    for t in [Timer::Probe, Timer::Gossip, Timer::PushPull, Timer::Reconnect] {
        assert!(timers.contains(&&t), "{t:?} not scheduled");
    }
    let local = LocalNode {
        name: String::new(),
        addr: addr(1),
        tags: Tags::new(),
    };
    assert!(matches!(
        Pool::new(
            Config::lan(),
            local,
            None,
            Box::new(crate::SimulatedNonces::new(0)),
            1,
            Instant::ZERO
        ),
        Err(PoolError::InvalidName { len: 0, .. })
    ));
    let mut big = Tags::new();
    big.insert("k".into(), "v".repeat(600));
    assert!(matches!(
        p.update_tags(big, Instant::ZERO),
        Err(PoolError::TagsTooLarge { .. })
    ));
    assert!(matches!(
        p.send_user_event("e", &[0; 600], Instant::ZERO),
        Err(PoolError::UserEventTooLarge { .. })
    ));
}

#[test]
fn alive_suspect_dead_transitions_and_events() {
    let mut p = pool_with("a", 1, None);
    drain(&mut p);
    let t = Instant::from_micros(1000);
    p.handle_packet(addr(2), &alive("b", 2, 1), t);
    assert_eq!(p.num_live(), 2);
    assert!(matches!(events(&drain(&mut p))[..], [Event::Joined(ref m)] if m.name == "b"));

    // An older or equal claim changes nothing.
    p.handle_packet(addr(2), &alive("b", 2, 1), t);
    assert!(events(&drain(&mut p)).is_empty());

    let suspect = encode_packet(&[Message::Suspect {
        incarnation: 1,
        node: "b".into(),
        from: "c".into(),
    }]);
    p.handle_packet(addr(3), &suspect, t);
    assert!(matches!(events(&drain(&mut p))[..], [Event::Suspect(_)]));
    assert_eq!(p.member("b").unwrap().status, MemberStatus::Suspect);

    // Refuted by a higher incarnation: alive again, no event (it never stopped being live).
    p.handle_packet(addr(2), &alive("b", 2, 2), t);
    assert!(events(&drain(&mut p)).is_empty());
    assert_eq!(p.member("b").unwrap().status, MemberStatus::Alive);

    // A stale death claim is ignored; a current one is a failure.
    let dead = |inc| {
        encode_packet(&[Message::Dead {
            incarnation: inc,
            node: "b".into(),
            from: "c".into(),
        }])
    };
    p.handle_packet(addr(3), &dead(1), t);
    assert!(events(&drain(&mut p)).is_empty());
    p.handle_packet(addr(3), &dead(2), t);
    assert!(matches!(events(&drain(&mut p))[..], [Event::Failed(_)]));
    assert_eq!(p.num_live(), 1);

    // It comes back with a higher incarnation: rejoined.
    p.handle_packet(addr(2), &alive("b", 2, 3), t);
    assert!(matches!(events(&drain(&mut p))[..], [Event::Rejoined(_)]));

    // New tags at a new incarnation: updated.
    let mut tags = Tags::new();
    tags.insert("role".into(), "server".into());
    let msg = encode_packet(&[Message::Alive {
        incarnation: 4,
        node: "b".into(),
        addr: addr(2),
        tags,
    }]);
    p.handle_packet(addr(2), &msg, t);
    assert!(matches!(events(&drain(&mut p))[..], [Event::Updated(ref m)] if m.tags["role"] == "server"));

    // A departure announced by the member itself is a leave, never a failure.
    let leave = encode_packet(&[Message::Dead {
        incarnation: 4,
        node: "b".into(),
        from: "b".into(),
    }]);
    p.handle_packet(addr(2), &leave, t);
    assert!(matches!(events(&drain(&mut p))[..], [Event::Left(_)]));
    assert_eq!(p.member("b").unwrap().status, MemberStatus::Left);
}

#[test]
fn a_late_leave_announcement_turns_a_failure_into_a_leave() {
    let mut p = pool_with("a", 1, None);
    let t = Instant::from_micros(1);
    p.handle_packet(addr(2), &alive("b", 2, 1), t);
    let dead = encode_packet(&[Message::Dead {
        incarnation: 1,
        node: "b".into(),
        from: "c".into(),
    }]);
    p.handle_packet(addr(3), &dead, t);
    drain(&mut p);
    let leave = encode_packet(&[Message::Dead {
        incarnation: 1,
        node: "b".into(),
        from: "b".into(),
    }]);
    p.handle_packet(addr(2), &leave, t);
    assert!(matches!(events(&drain(&mut p))[..], [Event::Left(_)]));
    // And a failure claim after the leave is ignored.
    p.handle_packet(addr(3), &dead, t);
    assert!(events(&drain(&mut p)).is_empty());
}

/// A member that leaves while another has just failed must still tell the live one: its
/// departure has only a couple of transmissions, and sampling peers at random could spend them
/// all on the dead member (then the live one reports a failure instead of the leave).
#[test]
fn a_leave_reaches_the_live_peer_when_another_peer_is_dead_whatever_the_seed() {
    let t = Instant::from_micros(1);
    for seed in 0..500 {
        let mut b = seeded_pool("b", 2, None, seed);
        b.handle_packet(addr(1), &alive("a", 1, 1), t);
        b.handle_packet(addr(3), &alive("c", 3, 1), t);
        let dead_c = encode_packet(&[Message::Dead {
            incarnation: 1,
            node: "c".into(),
            from: "a".into(),
        }]);
        b.handle_packet(addr(1), &dead_c, t);
        // Let the news about c run out its transmissions first.
        for _ in 0..4 {
            b.gossip(t);
        }
        drain(&mut b);

        b.leave(t);
        let told_a = drain(&mut b).into_iter().any(|o| match o {
            Output::Packet { to, data } if to == addr(1) => codec::decode_packet(&data)
                .unwrap()
                .iter()
                .any(|m| matches!(m, Message::Dead { node, from, .. } if node == "b" && from == "b")),
            _ => false,
        });
        assert!(told_a, "seed {seed}: b's leave was never sent to a");
    }
}

#[test]
fn force_leave_turns_a_failed_member_into_a_left_one_everywhere() {
    let mut a = pool_with("a", 1, None);
    let mut c = pool_with("c", 3, None);
    let t = Instant::from_micros(1);
    for p in [&mut a, &mut c] {
        p.handle_packet(addr(2), &alive("b", 2, 1), t);
    }
    a.handle_packet(addr(3), &alive("c", 3, 1), t);
    c.handle_packet(addr(1), &alive("a", 1, 1), t);
    let dead = encode_packet(&[Message::Dead {
        incarnation: 1,
        node: "b".into(),
        from: "x".into(),
    }]);
    a.handle_packet(addr(9), &dead, t);
    drain(&mut a);
    drain(&mut c);

    assert!(matches!(
        a.force_leave("nobody", t),
        Err(PoolError::UnknownMember { .. })
    ));
    assert!(matches!(
        a.force_leave("a", t),
        Err(PoolError::UnknownMember { .. })
    ));
    a.force_leave("b", t).unwrap();
    let outs = drain(&mut a);
    assert!(matches!(events(&outs)[..], [Event::Left(ref m)] if m.name == "b"));
    assert_eq!(a.member("b").unwrap().status, MemberStatus::Left);
    // The announcement travels as the member's own departure: c, which still saw b alive, reports
    // a leave, not a failure.
    let packets: Vec<Vec<u8>> = (0..3)
        .flat_map(|_| {
            a.gossip(t);
            drain(&mut a)
        })
        .filter_map(|o| match o {
            Output::Packet { to, data } if to == addr(3) => Some(data),
            _ => None,
        })
        .collect();
    assert!(!packets.is_empty(), "a gossiped the leave to c");
    for data in packets {
        c.handle_packet(addr(1), &data, t);
    }
    assert!(
        events(&drain(&mut c))
            .iter()
            .any(|e| matches!(e, Event::Left(m) if m.name == "b"))
    );

    // A live member is left alone.
    c.force_leave("a", t).unwrap();
    assert!(events(&drain(&mut c)).is_empty());
    assert_eq!(c.member("a").unwrap().status, MemberStatus::Alive);
}

#[test]
fn refutes_suspicion_about_itself_and_loses_health() {
    let mut p = pool_with("a", 1, None);
    drain(&mut p);
    let inc = p.incarnation();
    let suspect = encode_packet(&[Message::Suspect {
        incarnation: inc,
        node: "a".into(),
        from: "b".into(),
    }]);
    p.handle_packet(addr(2), &suspect, Instant::ZERO);
    assert_eq!(p.incarnation(), inc + 1);
    assert_eq!(p.health_score(), 1);
    assert_eq!(p.stats().refutations, 1);
    // A push-pull saying we are dead is refuted too (a restarted node outbids its old self).
    let pp = PushPull {
        join: false,
        reply: true,
        push: false,
        event_ltime: 0,
        members: vec![MemberState {
            name: "a".into(),
            addr: addr(1),
            incarnation: 9,
            status: MemberStatus::Failed,
            tags: Tags::new(),
            brief: false,
        }],
        want: Vec::new(),
    };
    assert!(
        p.handle_stream(addr(2), &codec::encode_push_pull(&pp), Instant::ZERO)
            .is_none()
    );
    assert_eq!(p.incarnation(), 10);
}

#[test]
fn acks_pings_for_itself_only() {
    let mut p = pool_with("a", 1, None);
    drain(&mut p);
    p.handle_packet(
        addr(2),
        &encode_packet(&[Message::Ping {
            seq: 5,
            target: "zz".into(),
        }]),
        Instant::ZERO,
    );
    assert!(drain(&mut p).iter().all(|o| !matches!(o, Output::Packet { .. })));
    p.handle_packet(
        addr(2),
        &encode_packet(&[Message::Ping {
            seq: 5,
            target: "a".into(),
        }]),
        Instant::ZERO,
    );
    let outs = drain(&mut p);
    let Some(Output::Packet { to, data }) = outs.first() else {
        panic!("no ack: {outs:?}")
    };
    assert_eq!(*to, addr(2));
    let msgs = codec::decode_packet(data).unwrap();
    // The ack carries our coordinate, at the wire's f32 precision.
    let Message::Ack {
        seq: 5,
        coordinate: Some(sent),
    } = &msgs[0]
    else {
        panic!("not an ack with a coordinate: {:?}", msgs[0])
    };
    let ours = p.coordinate().unwrap();
    assert_eq!(sent.vec, ours.vec);
    assert!((sent.height - ours.height).abs() < 1e-12);
    assert!(data.len() <= Config::local().packet_size);
}

/// The first sealed stream a fresh pool sends when it joins through `addr(9)`.
fn first_join_stream(pool: &mut Pool) -> Vec<u8> {
    drain(pool);
    pool.join(&[addr(9)], Instant::ZERO);
    drain(pool)
        .into_iter()
        .find_map(|o| match o {
            Output::Stream { data, .. } => Some(data),
            _ => None,
        })
        .unwrap()
}

#[test]
fn two_pools_with_one_seed_and_key_never_repeat_a_nonce() {
    let key = Keyring::new(&[1; 32]).unwrap();
    let mut a = seeded_pool("a", 1, Some(key.clone()), 42);
    let mut b = seeded_pool("a", 1, Some(key), 42);
    let (sealed_a, sealed_b) = (first_join_stream(&mut a), first_join_stream(&mut b));
    let nonce = 1..1 + ring::aead::NONCE_LEN;
    assert_eq!(sealed_a[0], ENCRYPTION_VERSION);
    assert_eq!(sealed_a.len(), sealed_b.len(), "the same message");
    assert_ne!(
        sealed_a[nonce.clone()],
        sealed_b[nonce],
        "one seed must not give one nonce sequence"
    );
    assert!(a.nonces_are_cryptographic());
}

#[test]
fn a_failing_nonce_source_sends_nothing() {
    #[derive(Debug)]
    struct Broken;
    impl NonceSource for Broken {
        fn next_nonce(&mut self) -> Option<[u8; 12]> {
            None
        }
        fn is_cryptographic(&self) -> bool {
            true
        }
    }
    let local = LocalNode {
        name: "a".into(),
        addr: addr(1),
        tags: Tags::new(),
    };
    let key = Keyring::new(&[1; 32]).unwrap();
    let mut p = Pool::new(
        Config::local(),
        local,
        Some(key),
        Box::new(Broken),
        1,
        Instant::ZERO,
    )
    .unwrap();
    drain(&mut p);
    p.join(&[addr(9)], Instant::ZERO);
    let sent = drain(&mut p)
        .into_iter()
        .filter(|o| matches!(o, Output::Stream { .. } | Output::Packet { .. }))
        .count();
    assert_eq!(sent, 0);
    assert_eq!(p.stats().nonce_failures, 1);
}

#[test]
fn encrypted_pool_drops_and_counts_plaintext_and_foreign_keys() {
    let mut p = pool_with("a", 1, Some(Keyring::new(&[1; 32]).unwrap()));
    drain(&mut p);
    p.handle_packet(addr(2), &alive("b", 2, 1), Instant::ZERO);
    assert_eq!(p.stats().plaintext_dropped, 1);
    assert!(
        p.member("b").is_none(),
        "a plaintext packet must never be applied"
    );

    let mut other = pool_with("b", 2, Some(Keyring::new(&[2; 32]).unwrap()));
    let outs = drain(&mut other);
    other.join(&[addr(1)], Instant::ZERO);
    let Some(Output::Stream { data, .. }) = other.poll_output() else {
        panic!("no stream")
    };
    assert!(p.handle_stream(addr(2), &data, Instant::ZERO).is_none());
    assert_eq!(p.stats().undecryptable_dropped, 1);
    assert!(p.member("b").is_none());
    drop(outs);

    // Same key: applied, and the reply is encrypted too.
    let mut friend = pool_with("c", 3, Some(Keyring::new(&[1; 32]).unwrap()));
    friend.join(&[addr(1)], Instant::ZERO);
    let stream = drain(&mut friend)
        .into_iter()
        .find_map(|o| match o {
            Output::Stream { data, .. } => Some(data),
            _ => None,
        })
        .unwrap();
    assert_eq!(stream[0], ENCRYPTION_VERSION);
    let reply = p.handle_stream(addr(3), &stream, Instant::ZERO).unwrap();
    assert!(p.member("c").is_some());
    assert!(friend.handle_stream(addr(1), &reply, Instant::ZERO).is_none());
    assert_eq!(friend.num_live(), 2);

    // Without a keyring, an encrypted packet is counted as undecryptable.
    let mut plain = pool_with("d", 4, None);
    plain.handle_stream(addr(3), &stream, Instant::ZERO);
    assert_eq!(plain.stats().undecryptable_dropped, 1);
}

#[test]
fn dynamic_suspicion_timeout_shrinks_with_confirmations() {
    let s = Suspicion {
        incarnation: 1,
        start: Instant::ZERO,
        min: Duration::from_secs(12),
        max: Duration::from_secs(72),
        wanted: 2,
        accusers: HashSet::new(),
        deadline: Instant::ZERO,
    };
    assert_eq!(s.timeout_after(0), Duration::from_secs(72));
    let one = s.timeout_after(1);
    assert!(
        one < Duration::from_secs(72) && one > Duration::from_secs(12),
        "{one:?}"
    );
    assert_eq!(s.timeout_after(2), Duration::from_secs(12));
    assert_eq!(s.timeout_after(5), Duration::from_secs(12));
}

#[test]
fn missed_acks_raise_the_health_score_up_to_its_cap_only_with_lifeguard() {
    for lifeguard in [true, false] {
        let mut cfg = Config::local();
        cfg.lifeguard = lifeguard;
        let local = LocalNode {
            name: "a".into(),
            addr: addr(1),
            tags: Tags::new(),
        };
        let nonces = Box::new(crate::SimulatedNonces::new(0));
        let mut p = Pool::new(cfg.clone(), local, None, nonces, 3, Instant::ZERO).unwrap();
        // Many members that never answer.
        for i in 0..20u16 {
            p.handle_packet(addr(100 + i), &alive(&format!("m{i}"), 100 + i, 1), Instant::ZERO);
        }
        let mut now = Instant::ZERO;
        for _ in 0..200 {
            now = now + cfg.probe_interval;
            p.handle_timer(Timer::Probe, now);
            drain(&mut p);
        }
        if lifeguard {
            assert_eq!(p.health_score(), cfg.awareness_max_multiplier - 1);
        } else {
            assert_eq!(p.health_score(), 0);
        }
        assert!(p.stats().failed_probes > 0);
    }
}

#[test]
fn user_events_are_delivered_once_everywhere() {
    let mut sim = Simulation::new(SimConfig {
        nodes: 30,
        pool: Config::local(),
        seed: 4,
        ..SimConfig::default()
    });
    assert!(
        sim.run_until(Duration::from_secs(30), Duration::from_millis(100), |s| s
            .converged())
    );
    assert!(sim.send_user_event(3, "deploy", b"v2"));
    sim.run_for(Duration::from_secs(5));
    let mut who: Vec<usize> = sim.deliveries("deploy").iter().map(|d| d.0).collect();
    who.sort_unstable();
    assert_eq!(who, (0..30).collect::<Vec<_>>(), "each node exactly once");
}

#[test]
fn a_graceful_leave_is_never_reported_as_a_failure() {
    let mut sim = Simulation::new(SimConfig {
        nodes: 20,
        pool: Config::local(),
        seed: 5,
        ..SimConfig::default()
    });
    assert!(
        sim.run_until(Duration::from_secs(30), Duration::from_millis(100), |s| s
            .converged())
    );
    sim.leave(7);
    sim.run_for(Duration::from_secs(10));
    let about_7: Vec<_> = sim.verdicts().iter().filter(|v| v.subject == 7).collect();
    assert_eq!(about_7.len(), 19, "every other node saw the leave: {about_7:?}");
    assert!(about_7.iter().all(|v| v.left));
    assert!(!sim.is_up(7));
    assert!(sim.converged());
}

#[test]
fn a_stale_accusation_is_answered_with_the_newer_claim() {
    let mut p = pool_with("a", 1, None);
    let t = Instant::from_micros(1);
    p.handle_packet(addr(2), &alive("b", 2, 5), t);
    drain(&mut p);
    // Peer 3 passes on an old suspicion of b, and one of us from before our last refutation.
    let stale = encode_packet(&[Message::Suspect {
        incarnation: 4,
        node: "b".into(),
        from: "c".into(),
    }]);
    p.handle_packet(addr(3), &stale, t);
    let inc = p.incarnation();
    let about_me = encode_packet(&[Message::Dead {
        incarnation: inc - 1,
        node: "a".into(),
        from: "c".into(),
    }]);
    p.handle_packet(addr(3), &about_me, t);
    let sent: Vec<Message> = drain(&mut p)
        .into_iter()
        .filter_map(|o| match o {
            Output::Packet { to, data } if to == addr(3) => Some(codec::decode_packet(&data).unwrap()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(sent.contains(&Message::Alive {
        incarnation: 5,
        node: "b".into(),
        addr: addr(2),
        tags: Tags::new()
    }));
    assert!(sent.iter().any(
        |m| matches!(m, Message::Alive { node, incarnation, .. } if node == "a" && *incarnation == inc)
    ));
    assert_eq!(p.member("b").unwrap().status, MemberStatus::Alive);
    assert_eq!(p.incarnation(), inc, "a stale claim is not refuted again");
}

#[test]
fn a_joiner_ignores_events_from_before_its_join() {
    let mut a = pool_with("a", 1, None);
    for i in 0..3 {
        a.send_user_event(&format!("old-{i}"), b"", Instant::ZERO)
            .unwrap();
    }
    drain(&mut a);
    let mut b = pool_with("b", 2, None);
    drain(&mut b);
    b.join(&[addr(1)], Instant::ZERO);
    let Some(Output::Stream { data, .. }) = b.poll_output() else {
        panic!("no join stream")
    };
    let reply = a.handle_stream(addr(2), &data, Instant::ZERO).unwrap();
    assert!(b.handle_stream(addr(1), &reply, Instant::ZERO).is_none());
    drain(&mut b);
    let event = |ltime: u64, name: &str| {
        encode_packet(&[Message::UserEvent {
            ltime,
            name: name.into(),
            payload: vec![],
        }])
    };
    b.handle_packet(addr(1), &event(1, "old-1"), Instant::ZERO);
    assert!(
        events(&drain(&mut b)).is_empty(),
        "an event from before the join is history"
    );
    b.handle_packet(addr(1), &event(3, "new"), Instant::ZERO);
    assert!(matches!(&events(&drain(&mut b))[..], [Event::User(u)] if u.name == "new"));
}

fn tagged_alive(name: &str, port: u16, inc: u32, role: &str) -> Vec<u8> {
    let mut tags = Tags::new();
    tags.insert("role".into(), role.into());
    tags.insert("dc".into(), "dc1".into());
    encode_packet(&[Message::Alive {
        incarnation: inc,
        node: name.into(),
        addr: addr(port),
        tags,
    }])
}

/// Carries every stream `from` wants to send to `to`, and the replies back, until neither side
/// has a stream left (a push-pull takes up to three: request, reply, push of wanted members).
/// Returns the stream payloads sent each way.
fn exchange(from: &mut Pool, to: &mut Pool, now: Instant) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut forward, mut back) = (Vec::new(), Vec::new());
    loop {
        let streams: Vec<Vec<u8>> = drain(from)
            .into_iter()
            .filter_map(|o| match o {
                Output::Stream { to: dest, data } if dest == to.local_addr() => Some(data),
                _ => None,
            })
            .collect();
        if streams.is_empty() {
            return (forward, back);
        }
        for data in streams {
            let reply = to.handle_stream(from.local_addr(), &data, now);
            drain(to);
            forward.push(data);
            if let Some(reply) = reply {
                from.handle_stream(to.local_addr(), &reply, now);
                back.push(reply);
            }
        }
    }
}

fn role(p: &Pool, name: &str) -> Option<String> {
    p.member(name).and_then(|m| m.tags.get("role").cloned())
}

#[test]
fn push_pull_sends_tags_only_to_peers_that_lack_them() {
    let t = Instant::from_micros(1000);
    let mut a = pool_with("a", 1, None);
    for (name, port) in [("x", 10), ("y", 11)] {
        a.handle_packet(addr(port), &tagged_alive(name, port, 1, "old"), t);
    }
    drain(&mut a);

    // A fresh joiner knows nobody: it gets every member, tags included.
    let mut c = pool_with("c", 3, None);
    drain(&mut c);
    c.join(&[a.local_addr()], t);
    exchange(&mut c, &mut a, t);
    assert_eq!(role(&c, "x").as_deref(), Some("old"));
    assert_eq!(role(&c, "y").as_deref(), Some("old"));
    assert_eq!(a.member("c").map(|m| m.incarnation), Some(1));

    // Identical views: the request describes others briefly, the reply carries only its sender.
    c.send_push_pull(a.local_addr(), Some("a"), false);
    let (req, reply) = exchange(&mut c, &mut a, t);
    assert_eq!(req.len(), 1, "no third stream when nothing is wanted");
    let req = codec::decode_push_pull(&req[0]).unwrap();
    let briefs: Vec<&str> = req
        .members
        .iter()
        .filter(|m| m.brief)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        briefs.len(),
        2,
        "x and y are brief, c and its target a in full: {briefs:?}"
    );
    assert!(!briefs.contains(&"a") && !briefs.contains(&"c"));
    let reply = codec::decode_push_pull(&reply[0]).unwrap();
    assert_eq!(reply.members.len(), 1);
    assert!(reply.want.is_empty());

    // x changed its tags and only a heard it: c pulls the new tags in a's reply.
    a.handle_packet(addr(10), &tagged_alive("x", 10, 2, "new-x"), t);
    drain(&mut a);
    c.send_push_pull(a.local_addr(), Some("a"), false);
    exchange(&mut c, &mut a, t);
    assert_eq!(role(&c, "x").as_deref(), Some("new-x"));

    // y changed its tags and only c heard it: a asks for y, c pushes it in a third stream.
    c.handle_packet(addr(11), &tagged_alive("y", 11, 2, "new-y"), t);
    drain(&mut c);
    c.send_push_pull(a.local_addr(), Some("a"), false);
    let (req, _) = exchange(&mut c, &mut a, t);
    assert_eq!(req.len(), 2, "request, then the push of what a wanted");
    assert_eq!(role(&a, "y").as_deref(), Some("new-y"));
    assert_eq!(a.member("y").map(|m| m.incarnation), Some(2));

    // The same exchange the other way round, a as requester, now finds nothing to send.
    a.send_push_pull(c.local_addr(), Some("c"), false);
    let (req, reply) = exchange(&mut a, &mut c, t);
    assert_eq!(req.len(), 1);
    assert_eq!(codec::decode_push_pull(&reply[0]).unwrap().members.len(), 1);
}

#[test]
fn a_push_pull_request_is_a_fraction_of_the_full_state_with_tags() {
    let t = Instant::from_micros(1000);
    let mut a = pool_with("a", 1, None);
    for i in 0..200u16 {
        a.handle_packet(
            addr(100 + i),
            &tagged_alive(&format!("node-{i}"), 100 + i, 1, "client"),
            t,
        );
    }
    drain(&mut a);
    let mut b = pool_with("b", 2, None);
    drain(&mut b);
    b.join(&[a.local_addr()], t);
    let (_, first) = exchange(&mut b, &mut a, t);
    let full = first.iter().map(Vec::len).sum::<usize>();
    assert_eq!(b.num_live(), 202);

    b.send_push_pull(a.local_addr(), Some("a"), false);
    let (req, reply) = exchange(&mut b, &mut a, t);
    let delta = req.iter().chain(&reply).map(Vec::len).sum::<usize>();
    assert!(
        delta * 2 < full,
        "a converged exchange ({delta} bytes both ways) should cost well under the full state ({full} bytes)"
    );
}

#[test]
fn a_restarted_member_reusing_its_incarnation_learns_its_old_self_and_refutes() {
    let t = Instant::from_micros(1000);
    let mut a = pool_with("a", 1, None);
    // a remembers c at incarnation 1 with another address.
    a.handle_packet(addr(9), &alive("c", 9, 1), t);
    drain(&mut a);
    let mut c = pool_with("c", 3, None);
    drain(&mut c);
    c.join(&[a.local_addr()], t);
    exchange(&mut c, &mut a, t);
    assert_eq!(c.incarnation(), 2, "c outbids the stale entry about itself");
}

/// Starts a probe of "b" (the only other member, at `addr(2)`) at `now` and returns its seq.
fn probe_b(p: &mut Pool, now: Instant) -> u32 {
    p.handle_timer(Timer::Probe, now);
    for o in drain(p) {
        if let Output::Packet { to, data } = o
            && to == addr(2)
        {
            for m in codec::decode_packet(&data).unwrap() {
                if let Message::Ping { seq, target } = m {
                    assert_eq!(target, "b");
                    return seq;
                }
            }
        }
    }
    panic!("no ping to b");
}

fn ack(seq: u32, coordinate: Option<Coordinate>) -> Vec<u8> {
    encode_packet(&[Message::Ack { seq, coordinate }])
}

#[test]
fn direct_acks_time_the_rtt_and_carry_the_peers_coordinate() {
    let mut p = pool_with("a", 1, None);
    p.handle_packet(addr(2), &alive("b", 2, 1), Instant::ZERO);
    drain(&mut p);
    let mut theirs = Coordinate::new(&CoordinateConfig::default());
    // Exact in f32, the wire's precision, so that what arrives compares equal.
    theirs.vec[0] = 0.0078125;
    theirs.error = 0.125;
    theirs.height = 0.0009765625;
    let start = p.coordinate().unwrap().clone();
    let rtt = Duration::from_millis(30);

    // An ack without a coordinate (coordinates off there, or an older build): the probe succeeds,
    // nothing is learned.
    let mut now = Instant::ZERO + Duration::from_secs(1);
    let seq = probe_b(&mut p, now);
    p.handle_packet(addr(2), &ack(seq, None), now + rtt);
    assert_eq!(*p.coordinate().unwrap(), start);
    assert_eq!(p.coordinate_of("b"), None);

    // The same ack relayed by a helper (another address): not a direct RTT.
    now = now + Duration::from_secs(1);
    let seq = probe_b(&mut p, now);
    p.handle_packet(addr(3), &ack(seq, Some(theirs.clone())), now + rtt);
    assert_eq!(*p.coordinate().unwrap(), start);
    assert_eq!(p.stats().coordinate_updates, 0);

    // A bad coordinate is refused and counted.
    now = now + Duration::from_secs(1);
    let seq = probe_b(&mut p, now);
    let mut bad = theirs.clone();
    bad.vec.truncate(3);
    p.handle_packet(addr(2), &ack(seq, Some(bad)), now + rtt);
    assert_eq!(p.stats().coordinate_rejected, 1);
    assert_eq!(p.coordinate_of("b"), None);

    // A good one, directly from b: our coordinate moves and b's is kept.
    for _ in 0..30 {
        now = now + Duration::from_secs(1);
        let seq = probe_b(&mut p, now);
        p.handle_packet(addr(2), &ack(seq, Some(theirs.clone())), now + rtt);
    }
    assert_eq!(p.stats().coordinate_updates, 30);
    assert_eq!(p.coordinate_of("b"), Some(&theirs));
    assert_ne!(*p.coordinate().unwrap(), start);
    let est = p.estimated_rtt("a", "b").unwrap();
    assert!(est.abs_diff(rtt) < Duration::from_millis(3), "estimate {est:?}");
    assert_eq!(p.estimated_rtt("b", "a"), Some(est));
    assert_eq!(p.member_coordinates().count(), 2);
    assert_eq!(p.member_coordinates().next().map(|(n, _)| n), Some("a"));
}

#[test]
fn without_coordinates_acks_carry_none_and_nothing_is_kept() {
    let mut cfg = Config::local();
    cfg.coordinates = false;
    let local = LocalNode {
        name: "a".into(),
        addr: addr(1),
        tags: Tags::new(),
    };
    let nonces = Box::new(crate::SimulatedNonces::new(0));
    let mut p = Pool::new(cfg, local, None, nonces, 3, Instant::ZERO).unwrap();
    drain(&mut p);
    p.handle_packet(
        addr(2),
        &encode_packet(&[Message::Ping {
            seq: 5,
            target: "a".into(),
        }]),
        Instant::ZERO,
    );
    let acked = drain(&mut p).into_iter().any(|o| match o {
        Output::Packet { data, .. } => codec::decode_packet(&data).unwrap().contains(&Message::Ack {
            seq: 5,
            coordinate: None,
        }),
        _ => false,
    });
    assert!(acked);
    assert_eq!(p.coordinate(), None);
    assert_eq!(
        p.set_coordinate(Coordinate::new(&CoordinateConfig::default())),
        Err(PoolError::CoordinatesDisabled)
    );
}

/// a and c know b; b is failed at a.
fn two_pools_and_a_failed_b() -> (Pool, Pool, Instant) {
    let mut a = pool_with("a", 1, None);
    let mut c = pool_with("c", 3, None);
    let t = Instant::from_micros(1);
    for p in [&mut a, &mut c] {
        p.handle_packet(addr(2), &alive("b", 2, 1), t);
    }
    a.handle_packet(addr(3), &alive("c", 3, 1), t);
    c.handle_packet(addr(1), &alive("a", 1, 1), t);
    let dead = encode_packet(&[Message::Dead {
        incarnation: 1,
        node: "b".into(),
        from: "x".into(),
    }]);
    a.handle_packet(addr(9), &dead, t);
    drain(&mut a);
    drain(&mut c);
    (a, c, t)
}

fn packets_to(outs: &[Output], to: SocketAddr) -> Vec<Vec<Message>> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Packet { to: dest, data } if *dest == to => Some(codec::decode_packet(data).unwrap()),
            _ => None,
        })
        .collect()
}

#[test]
fn force_leave_prune_erases_a_failed_member_everywhere() {
    let (mut a, mut c, t) = two_pools_and_a_failed_b();
    assert!(matches!(
        a.force_leave_prune("nobody", t),
        Err(PoolError::UnknownMember { .. })
    ));
    assert!(matches!(
        a.force_leave_prune("a", t),
        Err(PoolError::UnknownMember { .. })
    ));
    let before = a.num_members();
    a.force_leave_prune("b", t).unwrap();
    let outs = drain(&mut a);
    assert!(matches!(events(&outs)[..], [Event::Left(ref m)] if m.name == "b"));
    assert!(a.member("b").is_none(), "b is erased, not listed as left");
    assert_eq!(a.num_members(), before - 1);
    assert!(a.is_pruned("b"));

    // c still held b alive: the prune reaches it by gossip, and c reports a leave, then erases b.
    let mut told_c = false;
    for _ in 0..3 {
        a.gossip(t);
        for data in packets_to(&drain(&mut a), addr(3)) {
            told_c |= data
                .iter()
                .any(|m| matches!(m, Message::Prune { node, .. } if node == "b"));
            c.handle_packet(addr(1), &codec::encode_packet(&data), t);
        }
    }
    assert!(told_c, "a gossiped the prune to c");
    let at_c = events(&drain(&mut c));
    assert!(
        at_c.iter().any(|e| matches!(e, Event::Left(m) if m.name == "b")),
        "{at_c:?}"
    );
    assert!(c.member("b").is_none());

    // A live member is left alone.
    c.force_leave_prune("a", t).unwrap();
    assert!(events(&drain(&mut c)).is_empty());
    assert_eq!(c.member("a").unwrap().status, MemberStatus::Alive);
}

#[test]
fn a_member_that_already_left_can_be_pruned() {
    let (mut a, _c, t) = two_pools_and_a_failed_b();
    a.force_leave("b", t).unwrap();
    drain(&mut a);
    assert_eq!(a.member("b").unwrap().status, MemberStatus::Left);
    a.force_leave_prune("b", t).unwrap();
    assert!(
        events(&drain(&mut a)).is_empty(),
        "no second Left for a member that left"
    );
    assert!(a.member("b").is_none());
}

#[test]
fn a_pruned_member_comes_back_only_at_a_newer_incarnation() {
    let (mut a, _c, t) = two_pools_and_a_failed_b();
    a.force_leave_prune("b", t).unwrap();
    drain(&mut a);

    // A stale claim (a peer that missed the failure, or b restarted at its old incarnation) does
    // not bring b back; b is accused at the pruned incarnation so that, if alive, it outbids it.
    a.handle_packet(addr(3), &alive("b", 2, 1), t);
    let outs = drain(&mut a);
    assert!(a.member("b").is_none());
    assert!(events(&outs).is_empty());
    let accused = packets_to(&outs, addr(2)).concat();
    assert!(
        accused
            .iter()
            .any(|m| matches!(m, Message::Suspect { node, incarnation: 1, .. } if node == "b")),
        "{accused:?}"
    );

    // A peer whose push-pull still lists b (left, at the pruned incarnation) is sent the prune.
    let pp = PushPull {
        join: false,
        reply: false,
        push: true,
        event_ltime: 0,
        members: vec![
            MemberState {
                name: "d".into(),
                addr: addr(4),
                incarnation: 1,
                status: MemberStatus::Alive,
                tags: Tags::new(),
                brief: false,
            },
            MemberState {
                name: "b".into(),
                addr: addr(2),
                incarnation: 1,
                status: MemberStatus::Left,
                tags: Tags::new(),
                brief: false,
            },
        ],
        want: Vec::new(),
    };
    let _reply = a.handle_stream(addr(4), &codec::encode_push_pull(&pp), t);
    let outs = drain(&mut a);
    assert!(a.member("b").is_none());
    let corrected = packets_to(&outs, addr(4)).concat();
    assert!(
        corrected
            .iter()
            .any(|m| matches!(m, Message::Prune { node, incarnation: 1 } if node == "b")),
        "{corrected:?}"
    );

    // b's refutation, at a newer incarnation, is a join.
    a.handle_packet(addr(2), &alive("b", 2, 2), t);
    let joined = events(&drain(&mut a));
    assert!(
        matches!(joined[..], [Event::Joined(ref m)] if m.name == "b"),
        "{joined:?}"
    );
    assert!(!a.is_pruned("b"));
}

#[test]
fn a_prune_spreads_through_a_lossy_pool_and_a_restarted_member_rejoins() {
    let mut sim = Simulation::new(SimConfig {
        nodes: 20,
        pool: Config::local(),
        seed: 8,
        loss: 0.1,
        ..SimConfig::default()
    });
    assert!(
        sim.run_until(Duration::from_secs(60), Duration::from_millis(100), |s| s
            .converged())
    );
    let gone = sim.name(7).to_owned();
    sim.crash(7);
    let failed_everywhere = |s: &Simulation| {
        s.up_nodes().all(|i| {
            s.pool(i)
                .and_then(|p| p.member_status(&gone))
                .is_some_and(|(st, _)| st == MemberStatus::Failed)
        })
    };
    assert!(sim.run_until(
        Duration::from_secs(120),
        Duration::from_millis(100),
        failed_everywhere
    ));
    assert!(sim.force_leave_prune(0, &gone));
    let erased_everywhere = |s: &Simulation| {
        s.up_nodes()
            .all(|i| s.pool(i).is_some_and(|p| p.member_status(&gone).is_none()))
    };
    assert!(sim.run_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        erased_everywhere
    ));
    // Push-pull keeps exchanging full state: nobody brings the pruned member back.
    sim.run_for(Duration::from_secs(60));
    assert!(erased_everywhere(&sim), "a pruned member came back");

    // Restarted (at incarnation 1, below nothing it could know), it is accused, outbids the
    // prune and is alive everywhere again.
    sim.restart(7);
    assert!(
        sim.run_until(Duration::from_secs(60), Duration::from_millis(100), |s| s
            .converged()),
        "the restarted member rejoined"
    );
}
