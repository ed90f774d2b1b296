//! Micro benches of the pure core: packet and push-pull codec, encryption, and a small simulated
//! cluster. Cluster-level figures (dissemination, detection, false positives, bandwidth) come from
//! `examples/sim_figures.rs`; see BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tribune_gossip::sim::{SimConfig, Simulation};
use tribune_gossip::{
    Config, Instant, Keyring, LocalNode, MemberState, MemberStatus, Message, Pool, PushPull, SystemNonces,
    Tags, decode_packet, decode_push_pull, encode_packet, encode_push_pull,
};

fn tags() -> Tags {
    [
        ("role", "node"),
        ("dc", "dc1"),
        ("port", "8300"),
        ("build", "0.1.0"),
        ("vsn", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn codec(c: &mut Criterion) {
    let addr = "10.0.0.1:8301".parse().unwrap();
    let msgs: Vec<Message> = (0..20)
        .map(|i| Message::Alive {
            incarnation: i,
            node: format!("node-{i}"),
            addr,
            tags: Tags::new(),
        })
        .collect();
    let packet = encode_packet(&msgs);
    c.bench_function("codec/encode_packet_20_alive", |b| {
        b.iter(|| encode_packet(black_box(&msgs)))
    });
    c.bench_function("codec/decode_packet_20_alive", |b| {
        b.iter(|| decode_packet(black_box(&packet)).unwrap())
    });

    let pp = PushPull {
        join: false,
        reply: false,
        push: false,
        event_ltime: 7,
        members: (0..1000)
            .map(|i| MemberState {
                name: format!("node-{i}"),
                addr,
                incarnation: 1,
                status: MemberStatus::Alive,
                tags: tags(),
                brief: false,
            })
            .collect(),
        want: Vec::new(),
    };
    let bytes = encode_push_pull(&pp);
    c.bench_function("codec/encode_push_pull_1000", |b| {
        b.iter(|| encode_push_pull(black_box(&pp)))
    });
    c.bench_function("codec/decode_push_pull_1000", |b| {
        b.iter(|| decode_push_pull(black_box(&bytes)).unwrap())
    });
}

fn encrypted_pool(c: &mut Criterion) {
    // An encrypted pool answering a ping: decrypt, decode, encode, encrypt.
    let ring = Keyring::new(&[7; 32]).unwrap();
    let local = LocalNode {
        name: "a".into(),
        addr: "10.0.0.1:8301".parse().unwrap(),
        tags: tags(),
    };
    let mut pool = Pool::new(
        Config::lan(),
        local,
        Some(ring.clone()),
        Box::new(SystemNonces::new()),
        1,
        Instant::ZERO,
    )
    .unwrap();
    let local_b = LocalNode {
        name: "b".into(),
        addr: "10.0.0.2:8301".parse().unwrap(),
        tags: tags(),
    };
    let mut sender = Pool::new(
        Config::lan(),
        local_b,
        Some(ring),
        Box::new(SystemNonces::new()),
        2,
        Instant::ZERO,
    )
    .unwrap();
    while sender.poll_output().is_some() {}
    sender.join(&["10.0.0.1:8301".parse().unwrap()], Instant::ZERO);
    let Some(tribune_gossip::Output::Stream { data, .. }) = sender.poll_output() else {
        panic!("no stream")
    };
    c.bench_function("pool/encrypted_push_pull_round", |b| {
        b.iter(|| {
            let reply = pool.handle_stream("10.0.0.2:8301".parse().unwrap(), black_box(&data), Instant::ZERO);
            while pool.poll_output().is_some() {}
            reply
        })
    });
}

fn simulation(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim");
    group.sample_size(10);
    group.bench_function("100_nodes_10s_virtual", |b| {
        b.iter(|| {
            let mut sim = Simulation::new(SimConfig {
                nodes: 100,
                ..SimConfig::default()
            });
            sim.run_for(Duration::from_secs(10));
            sim.totals()
        })
    });
    group.finish();
}

criterion_group!(benches, codec, encrypted_pool, simulation);
criterion_main!(benches);
