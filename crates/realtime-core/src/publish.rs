//! The `Publisher` trait: "something that can trigger". Application code
//! (an outbox dispatcher, say) depends on it rather than on the HTTP client,
//! so an in-process server, or a test double, can stand in for Pusher.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::client::{BatchResponse, Pusher, TriggerResponse};
use crate::error::Result;
use crate::event::Event;

/// A boxed future, so that `dyn Publisher` works.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that publishes events to subscribers.
///
/// [`Pusher`] publishes through the HTTP API; an embedded server implements it
/// by delivering in-process. Implementations check events with
/// [`Event::prepare`] so that every publisher refuses the same inputs.
///
/// ```
/// use realtime_core::{Event, Publisher, Pusher};
/// async fn notify(publisher: &dyn Publisher) -> Result<(), realtime_core::Error> {
///     let event = Event::new("private-contact-1", "message:created", &serde_json::json!({"id": "m1"}))?;
///     publisher.publish(event).await?;
///     Ok(())
/// }
/// ```
pub trait Publisher: Send + Sync {
    /// Publishes one event on its channels.
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<TriggerResponse>>;

    /// Publishes up to 10 events, each on one channel, at once.
    fn publish_batch(&self, events: Vec<Event>) -> BoxFuture<'_, Result<BatchResponse>>;
}

impl Publisher for Pusher {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<TriggerResponse>> {
        Box::pin(async move { self.trigger_event(&event).await })
    }

    fn publish_batch(&self, events: Vec<Event>) -> BoxFuture<'_, Result<BatchResponse>> {
        Box::pin(async move { self.trigger_batch(&events).await })
    }
}

impl<P: Publisher + ?Sized> Publisher for Arc<P> {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<TriggerResponse>> {
        (**self).publish(event)
    }

    fn publish_batch(&self, events: Vec<Event>) -> BoxFuture<'_, Result<BatchResponse>> {
        (**self).publish_batch(events)
    }
}
