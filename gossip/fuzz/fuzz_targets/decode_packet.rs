//! Arbitrary bytes through the packet and stream decoders, then into a live pool (plain and
//! encrypted): nothing may panic, and a round trip of anything that decodes must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tribune_gossip::{
    Config, Instant, Keyring, LocalNode, Pool, Tags, decode_packet, decode_stream, encode_packet,
    encode_stream,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = decode_packet(data) {
        let again = encode_packet(&msgs);
        assert_eq!(decode_packet(&again).ok(), Some(msgs));
    }
    if let Ok(msg) = decode_stream(data) {
        let again = encode_stream(&msg);
        assert_eq!(decode_stream(&again).ok(), Some(msg));
    }
    let from = "10.0.0.9:7946".parse().unwrap();
    for keyring in [None, Keyring::new(&[9; 16]).ok()] {
        let local = LocalNode { name: "fuzz".into(), addr: "10.0.0.1:7946".parse().unwrap(), tags: Tags::new() };
        let Ok(mut pool) = Pool::new(Config::lan(), local, keyring, 1, Instant::ZERO) else { return };
        pool.handle_packet(from, data, Instant::from_micros(10));
        let _ = pool.handle_stream(from, data, Instant::from_micros(20));
        while pool.poll_output().is_some() {}
    }
});
