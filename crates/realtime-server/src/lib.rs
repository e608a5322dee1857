//! A Pusher protocol 7 server (WebSocket + HTTP API).
