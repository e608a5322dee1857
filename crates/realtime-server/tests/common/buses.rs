//! Bus servers for the cluster tests: the shared Redis and NATS of this
//! machine, or one of our own on a free port, to kill and restart.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Generous: the build machine is small and shared.
pub const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Redis,
    Nats,
}

impl Kind {
    pub fn shared_url(self) -> String {
        let (var, default) = match self {
            Kind::Redis => ("REDIS_TEST_URL", "redis://127.0.0.1:6379"),
            Kind::Nats => ("NATS_TEST_URL", "nats://127.0.0.1:4222"),
        };
        std::env::var(var).unwrap_or_else(|_| default.to_owned())
    }

    pub fn url(self, port: u16) -> String {
        match self {
            Kind::Redis => format!("redis://127.0.0.1:{port}"),
            Kind::Nats => format!("nats://127.0.0.1:{port}"),
        }
    }
}

/// A bus server of our own, killed when dropped.
pub struct Server {
    child: Child,
}

impl Server {
    /// Starts the server on `port` and waits until it accepts connections.
    pub fn start(kind: Kind, port: u16) -> Server {
        let port_arg = port.to_string();
        let (program, args): (&str, Vec<&str>) = match kind {
            Kind::Redis => (
                "redis-server",
                vec![
                    "--port",
                    &port_arg,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            ),
            Kind::Nats => ("nats-server", vec!["-a", "127.0.0.1", "-p", &port_arg]),
        };
        let child = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{program}` ({e}): these tests need it on PATH (CI installs redis-server and nats-server)")
            });
        let server = Server { child };
        let deadline = std::time::Instant::now() + DEADLINE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{program} did not listen on port {port} within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Kills the server at once (SIGKILL): no goodbye to its clients.
    pub fn kill(mut self) {
        self.stop();
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: its sockets stay
    /// open but nothing answers, as with a hung process or a silent network.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    fn stop(&mut self) {
        // SIGKILL: it ends a frozen server too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on (for now).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
