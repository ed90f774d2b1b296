//! The README's main command, `examples/three_server_dc`, runs its whole narration and exits
//! cleanly: formation, a forwarded write, the leader stopped, a new leader, the restarted server
//! catching up from its disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples next to the test binaries: `target/<profile>/examples/`.
#[allow(clippy::unwrap_used)] // a test helper: no path means the test cannot run at all
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join("three_server_dc")
}

#[test]
fn three_server_dc_narrates_a_failover_and_exits() {
    let binary = example_binary();
    assert!(binary.exists(), "{} was not built", binary.display());
    let output = Command::new(&binary)
        .args(["--http-port", "0", "--exit-after-narration"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
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
