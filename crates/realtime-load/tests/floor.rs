//! The load tool against its own floor server, as `scripts/bench-server`
//! runs them: every subscriber gets every event, and the report says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOAD: &str = env!("CARGO_BIN_EXE_realtime-load");

/// Kills the floor server when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the floor server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_subscriber_of_the_floor_server_gets_every_event() {
    for delivery in ["threads", "tasks"] {
        fan_out_through(delivery);
    }
}

fn fan_out_through(delivery: &str) {
    let port = free_port();
    let floor = Command::new(LOAD)
        .args(["floor", "--port", &port.to_string(), "--threads", "2"])
        .args(["--delivery", delivery])
        .stderr(Stdio::inherit())
        .spawn()
        .expect("realtime-load floor starts");
    let floor = Running(floor);
    wait_for(port);

    let output = Command::new(LOAD)
        .args(["fanout", "--port", &port.to_string()])
        .args(["--connections", "30", "--events", "4", "--interval-ms", "5"])
        .args([
            "--server-pid",
            &floor.0.id().to_string(),
            "--label",
            "floor",
        ])
        .output()
        .expect("realtime-load fanout runs");
    assert!(output.status.success(), "fanout failed: {output:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the report is one JSON object");

    assert_eq!(report["subscribed"], 30);
    assert_eq!(report["failed_clients"], 0, "{delivery}: {report}");
    assert_eq!(report["deliveries"], 120, "{delivery}: {report}");
    // Every event reached every subscriber once (a duplicate cannot stand
    // in for a loss).
    assert_eq!(
        report["deliveries_by_event"],
        serde_json::json!([30, 30, 30, 30]),
        "{delivery}: {report}"
    );
    assert!(
        report["delivery_p50_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "deliveries are timed from their trigger: {report}"
    );
}
