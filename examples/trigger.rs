//! Publishes one event, as a service that just wrote to its database would.
//!
//! Configure with the `PUSHER_*` variables (hosted Pusher) or point it at a
//! local server, e.g. `PUSHER_URL=http://key:secret@127.0.0.1:6001/apps/1`.
//!
//!     cargo run -p realtime-examples --example trigger -- private-contact-1 message:created '{"id":"m1"}'

use realtime_core::Pusher;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let channel = args.next().unwrap_or_else(|| "my-channel".into());
    let event = args.next().unwrap_or_else(|| "my-event".into());
    let data = args
        .next()
        .unwrap_or_else(|| r#"{"message":"hello world"}"#.into());

    let pusher = Pusher::from_env()?;
    let answer = pusher
        .trigger_json(channel.as_str(), event.as_str(), data)
        .info(["subscription_count"])
        .send()
        .await?;
    println!("published {event} on {channel}: {:?}", answer.channels);
    Ok(())
}
