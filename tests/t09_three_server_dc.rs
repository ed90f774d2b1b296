//! The narrated examples run their whole narration and exit cleanly. The README's main command,
//! `examples/three_server_dc`: formation, a forwarded write, the leader stopped, a new leader, the
//! restarted server catching up from its disk. `examples/multi_dc`: two datacenters joined by one
//! WAN join, `?dc=` both ways, a datacenter down and back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples next to the test binaries: `target/<profile>/examples/`.
#[allow(clippy::unwrap_used)] // a test helper: no path means the test cannot run at all
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join(name)
}

/// Runs example `name` with `args` and returns its narration, failing the test on a bad exit.
fn narration(name: &str, args: &[&str]) -> String {
    let binary = example_binary(name);
    assert!(binary.exists(), "{} was not built", binary.display());
    let output = Command::new(&binary).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout.into_owned()
}

#[test]
fn three_server_dc_narrates_a_failover_and_exits() {
    let stdout = narration("three_server_dc", &["--http-port", "0", "--exit-after-narration"]);
    for expected in [
        "The datacenter formed in",
        "-> 200 true",
        "\"hello from dc1\"",
        "is the new leader",
        "nothing acknowledged was lost",
        "rejoined and caught up",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
}

#[test]
fn multi_dc_narrates_two_federated_datacenters_and_exits() {
    let stdout = narration("multi_dc", &["--exit-after-narration"]);
    for expected in [
        r#"["d1.dc2", "s1.dc1", "s2.dc1", "s3.dc1"]"#,
        r#"GET /v1/catalog/datacenters on s1 -> ["dc1","dc2"]"#,
        "GET /v1/kv/app/color on d1 -> 404",
        r#"GET /v1/kv/app/color?dc=dc1 on d1 -> 200 "blue""#,
        r#"d1 now reads "green""#,
        r#"GET ?dc=dc2 on s1 -> 500 "Remote DC has no server currently reachable""#,
        r#"GET ?dc=dc9 on s1 -> 500 "No path to datacenter""#,
        "reads dc2's app/color again",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
}
