//! What the realtime-server test files share: the app's credentials, and a
//! connection registered with an [`App`] and driven without a socket.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod buses;

use std::sync::Arc;

use realtime_core::Credentials;
use realtime_server::connection::{Connection, Control};
use realtime_server::outbox::{Outbound, OutboxReceiver};
use realtime_server::App;
use serde_json::Value;

pub const APP_ID: &str = "1";
pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";

pub fn credentials() -> Credentials {
    Credentials::new(APP_ID, KEY, SECRET)
}

/// One registered connection: its state machine and its outbox.
pub struct Client {
    pub connection: Connection,
    pub outbox: OutboxReceiver,
    pub socket_id: String,
}

impl Client {
    pub fn new(app: &Arc<App>) -> Self {
        let (socket_id, outbox) = app.connect().expect("the app accepts the connection");
        Client {
            connection: Connection::new(app.clone(), socket_id.clone()),
            outbox,
            socket_id: socket_id.to_string(),
        }
    }

    pub fn send(&mut self, frame: Value) -> Control {
        self.connection.handle_text(&frame.to_string())
    }

    /// Everything queued for this connection now.
    pub fn outbound(&mut self) -> Vec<Outbound> {
        let mut all = Vec::new();
        while let Ok(outbound) = self.outbox.try_recv() {
            all.push(outbound);
        }
        all
    }

    /// The text frames queued now, parsed; anything else fails the test.
    pub fn frames(&mut self) -> Vec<Value> {
        self.outbound()
            .into_iter()
            .map(|outbound| match outbound {
                Outbound::Frame(frame) => {
                    serde_json::from_str(frame.text()).expect("frames are JSON")
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }
}
