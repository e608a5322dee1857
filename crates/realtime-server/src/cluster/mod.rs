//! Many realtime-server nodes as one service, linked by a message bus.

pub mod bus;
