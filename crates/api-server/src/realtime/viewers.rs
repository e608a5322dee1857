//! Who is viewing which contact, as Pusher's presence webhooks tell it
//! (`member_added` / `member_removed` on `presence-contact-{id}`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use realtime_core::WebhookEvent;

use crate::realtime::channels::InboxChannel;

/// Viewers per contact, kept from webhooks.
#[derive(Debug, Default)]
pub struct Viewers {
    by_contact: Mutex<HashMap<i64, BTreeSet<String>>>,
}

impl Viewers {
    /// Applies one webhook event.
    pub fn apply(&self, event: &WebhookEvent) {
        let mut map = self.by_contact.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            WebhookEvent::MemberAdded { channel, user_id } => {
                if let Some(InboxChannel::ContactViewers(contact)) = InboxChannel::parse(channel) {
                    map.entry(contact).or_default().insert(user_id.clone());
                }
            }
            WebhookEvent::MemberRemoved { channel, user_id } => {
                if let Some(InboxChannel::ContactViewers(contact)) = InboxChannel::parse(channel) {
                    if let Some(users) = map.get_mut(&contact) {
                        users.remove(user_id);
                        if users.is_empty() {
                            map.remove(&contact);
                        }
                    }
                }
            }
            WebhookEvent::ChannelVacated { channel } => {
                if let Some(InboxChannel::ContactViewers(contact)) = InboxChannel::parse(channel) {
                    map.remove(&contact);
                }
            }
            _ => {}
        }
    }

    /// The user ids viewing a contact.
    pub fn of(&self, contact_id: i64) -> Vec<String> {
        let map = self.by_contact.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&contact_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_and_go_per_contact() {
        let viewers = Viewers::default();
        let added = |user: &str, channel: &str| WebhookEvent::MemberAdded {
            channel: channel.into(),
            user_id: user.into(),
        };
        viewers.apply(&added("1", "presence-contact-5"));
        viewers.apply(&added("2", "presence-contact-5"));
        viewers.apply(&added("3", "presence-contact-6"));
        viewers.apply(&added("4", "private-contact-5"));
        assert_eq!(viewers.of(5), vec!["1", "2"]);
        viewers.apply(&WebhookEvent::MemberRemoved {
            channel: "presence-contact-5".into(),
            user_id: "1".into(),
        });
        assert_eq!(viewers.of(5), vec!["2"]);
        viewers.apply(&WebhookEvent::ChannelVacated {
            channel: "presence-contact-6".into(),
        });
        assert!(viewers.of(6).is_empty());
    }
}
