//! What the other nodes of a cluster hold, as one node knows it: per peer,
//! each channel's subscriber count and presence members, and their sum over
//! every peer, which the node adds to its own state to answer for the cluster.
//!
//! Peers report absolute values (this channel has 3 subscribers here; this
//! user is or is not a member here), so a repeated or resent report changes
//! nothing. The view only says how the peers' sums moved; what that means
//! for the cluster (is the channel occupied anywhere, is the user present
//! anywhere) depends on the node's own state too, and is decided by the app's
//! registry, under the same lock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

/// A node of the cluster, by the random id it took when it started.
pub type NodeId = u64;

/// One channel as one peer holds it.
#[derive(Debug, Default, Clone, PartialEq)]
struct PeerChannel {
    subscribers: usize,
    /// Presence members with at least one connection on the peer.
    members: HashMap<Arc<str>, Option<Value>>,
}

impl PeerChannel {
    fn is_empty(&self) -> bool {
        self.subscribers == 0 && self.members.is_empty()
    }
}

/// A presence member as the peers hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteMember {
    /// The `user_info` of the first peer that reported the member.
    pub info: Option<Value>,
    /// How many peers have a connection of the member.
    nodes: usize,
}

/// One channel summed over every peer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RemoteChannel {
    /// Subscribers on all peers.
    pub subscribers: usize,
    /// Presence members present on at least one peer.
    pub members: HashMap<Arc<str>, RemoteMember>,
}

/// How a member's presence on the peers moved.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberChange {
    /// No peer had the member; one has now (with this `user_info`).
    Appeared(Option<Value>),
    /// The last peer that had the member has it no more.
    Vanished,
}

/// A channel as a peer reports it whole (in a snapshot).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChannelReport {
    /// The channel's name.
    #[serde(rename = "c")]
    pub channel: String,
    /// Its subscribers on the peer.
    #[serde(rename = "s")]
    pub subscribers: usize,
    /// Its presence members on the peer, with their `user_info`.
    #[serde(rename = "m", default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<(String, Option<Value>)>,
}

/// What a report changed, for the registry to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The peers' subscriber sum of a channel moved from `before` to `after`.
    Subscribers {
        /// The channel.
        channel: Arc<str>,
        /// The sum before.
        before: usize,
        /// The sum after.
        after: usize,
    },
    /// A member appeared on, or vanished from, every peer.
    Member {
        /// The channel.
        channel: Arc<str>,
        /// The user id.
        user_id: Arc<str>,
        /// How it moved.
        change: MemberChange,
    },
}

/// What the peers hold, per peer and summed.
#[derive(Debug, Default)]
pub struct RemoteView {
    peers: HashMap<NodeId, HashMap<Arc<str>, PeerChannel>>,
    channels: HashMap<Arc<str>, RemoteChannel>,
    /// Signed-in users per peer.
    peer_users: HashMap<NodeId, HashSet<Arc<str>>>,
    /// Signed-in users, with how many peers have a connection of theirs.
    users: HashMap<Arc<str>, usize>,
}

/// How a signed-in user's presence on the peers moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange {
    /// No peer had a connection of the user; one has now.
    Online,
    /// The last peer with a connection of the user has none now.
    Offline,
}

impl RemoteView {
    /// A channel summed over the peers, if any peer holds it.
    pub fn channel(&self, name: &str) -> Option<&RemoteChannel> {
        self.channels.get(name)
    }

    /// Every channel some peer holds.
    pub fn channels(&self) -> impl Iterator<Item = (&Arc<str>, &RemoteChannel)> {
        self.channels.iter()
    }

    /// The peers' subscriber sum of a channel.
    pub fn subscribers(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, |c| c.subscribers)
    }

    /// Whether some peer has a connection of this member.
    pub fn has_member(&self, channel: &str, user_id: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|c| c.members.contains_key(user_id))
    }

    /// The peers this view holds anything of.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().chain(self.peer_users.keys()).copied()
    }

    /// Whether some peer has a signed-in connection of this user.
    pub fn has_user(&self, user_id: &str) -> bool {
        self.users.contains_key(user_id)
    }

    /// Whether a peer has a signed-in connection of a user now.
    pub fn set_user(&mut self, peer: NodeId, user_id: &str, online: bool) -> Option<UserChange> {
        let held = self.peer_users.entry(peer).or_default();
        let key: Arc<str> = match self.users.get_key_value(user_id) {
            Some((key, _)) => key.clone(),
            None => Arc::from(user_id),
        };
        let changed = if online {
            held.insert(key.clone())
        } else {
            held.remove(user_id)
        };
        if held.is_empty() {
            self.peer_users.remove(&peer);
        }
        if !changed {
            return None;
        }
        if online {
            let nodes = self.users.entry(key).or_insert(0);
            *nodes += 1;
            (*nodes == 1).then_some(UserChange::Online)
        } else {
            match self.users.get_mut(user_id) {
                Some(nodes) if *nodes > 1 => {
                    *nodes -= 1;
                    None
                }
                Some(_) => {
                    self.users.remove(user_id);
                    Some(UserChange::Offline)
                }
                None => None,
            }
        }
    }

    /// The signed-in users of a peer are now `users` (its snapshot; empty
    /// when it is gone). Answers each user whose presence moved.
    pub fn replace_peer_users(
        &mut self,
        peer: NodeId,
        users: &[String],
    ) -> Vec<(Arc<str>, UserChange)> {
        let mut changes = Vec::new();
        let old: Vec<Arc<str>> = self
            .peer_users
            .get(&peer)
            .map(|held| held.iter().cloned().collect())
            .unwrap_or_default();
        let new: HashSet<&str> = users.iter().map(String::as_str).collect();
        for user in old.iter().filter(|u| !new.contains(u.as_ref())) {
            if let Some(change) = self.set_user(peer, user, false) {
                changes.push((user.clone(), change));
            }
        }
        for user in users {
            if let Some(change) = self.set_user(peer, user, true) {
                changes.push((Arc::from(user.as_str()), change));
            }
        }
        changes
    }

    fn key(&self, name: &str) -> Arc<str> {
        match self.channels.get_key_value(name) {
            Some((key, _)) => key.clone(),
            None => Arc::from(name),
        }
    }

    /// A peer's subscriber count of a channel is now `count`.
    pub fn set_subscribers(
        &mut self,
        peer: NodeId,
        channel: &str,
        count: usize,
    ) -> Option<Transition> {
        let key = self.key(channel);
        let held = self.peers.entry(peer).or_default();
        let entry = held.entry(key.clone()).or_default();
        let previous = std::mem::replace(&mut entry.subscribers, count);
        if entry.is_empty() {
            held.remove(&key);
        }
        if held.is_empty() {
            self.peers.remove(&peer);
        }
        if previous == count {
            return None;
        }
        let sum = self.channels.entry(key.clone()).or_default();
        let before = sum.subscribers;
        // Each peer's count is part of the sum, so `previous <= before`.
        sum.subscribers = (before + count).saturating_sub(previous);
        let after = sum.subscribers;
        self.forget_if_empty(&key);
        Some(Transition::Subscribers {
            channel: key,
            before,
            after,
        })
    }

    /// Whether a peer has a connection of a presence member now (`Some`
    /// with its `user_info`) or not (`None`).
    pub fn set_member(
        &mut self,
        peer: NodeId,
        channel: &str,
        user_id: &str,
        present: Option<Option<Value>>,
    ) -> Option<Transition> {
        let key = self.key(channel);
        let held = self.peers.entry(peer).or_default();
        let entry = held.entry(key.clone()).or_default();
        let user: Arc<str> = match entry.members.get_key_value(user_id) {
            Some((user, _)) => user.clone(),
            None => Arc::from(user_id),
        };
        let was_present = match &present {
            Some(info) => entry.members.insert(user.clone(), info.clone()).is_some(),
            None => entry.members.remove(&user).is_some(),
        };
        if entry.is_empty() {
            held.remove(&key);
        }
        if held.is_empty() {
            self.peers.remove(&peer);
        }
        let change = match (was_present, present) {
            (false, Some(info)) => {
                let sum = self.channels.entry(key.clone()).or_default();
                let member = sum.members.entry(user.clone()).or_insert(RemoteMember {
                    info: info.clone(),
                    nodes: 0,
                });
                member.nodes += 1;
                (member.nodes == 1).then_some(MemberChange::Appeared(info))
            }
            (true, None) => {
                let sum = self.channels.entry(key.clone()).or_default();
                let gone = match sum.members.get_mut(&user) {
                    Some(member) if member.nodes > 1 => {
                        member.nodes -= 1;
                        false
                    }
                    Some(_) => {
                        sum.members.remove(&user);
                        true
                    }
                    None => false,
                };
                self.forget_if_empty(&key);
                gone.then_some(MemberChange::Vanished)
            }
            _ => None,
        }?;
        Some(Transition::Member {
            channel: key,
            user_id: user,
            change,
        })
    }

    /// Everything a peer holds is now `channels` (its snapshot; empty when
    /// the peer is gone). Answers every transition, in order.
    pub fn replace_peer(&mut self, peer: NodeId, channels: &[ChannelReport]) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let old = self.peers.get(&peer).cloned().unwrap_or_default();
        let reported: HashMap<&str, &ChannelReport> =
            channels.iter().map(|c| (c.channel.as_str(), c)).collect();
        // What the peer no longer holds goes first, so a member that moved
        // between channels is seen leaving one and joining the other.
        for (channel, held) in &old {
            let report = reported.get(channel.as_ref());
            for user in held.members.keys() {
                let still = report.is_some_and(|r| r.members.iter().any(|(u, _)| **u == **user));
                if !still {
                    transitions.extend(self.set_member(peer, channel, user, None));
                }
            }
            if report.is_none() {
                transitions.extend(self.set_subscribers(peer, channel, 0));
            }
        }
        for report in channels {
            transitions.extend(self.set_subscribers(peer, &report.channel, report.subscribers));
            for (user, info) in &report.members {
                let known = old
                    .get(report.channel.as_str())
                    .is_some_and(|held| held.members.contains_key(user.as_str()));
                if !known {
                    transitions.extend(self.set_member(
                        peer,
                        &report.channel,
                        user,
                        Some(info.clone()),
                    ));
                }
            }
        }
        transitions
    }

    fn forget_if_empty(&mut self, key: &str) {
        if self
            .channels
            .get(key)
            .is_some_and(|c| c.subscribers == 0 && c.members.is_empty())
        {
            self.channels.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(channel: &str, subscribers: usize, members: &[&str]) -> ChannelReport {
        ChannelReport {
            channel: channel.to_owned(),
            subscribers,
            members: members
                .iter()
                .map(|m| (m.to_string(), Some(json!({ "name": m }))))
                .collect(),
        }
    }

    #[test]
    fn subscriber_counts_add_up_over_peers() {
        let mut view = RemoteView::default();
        assert_eq!(
            view.set_subscribers(1, "c", 2),
            Some(Transition::Subscribers {
                channel: "c".into(),
                before: 0,
                after: 2
            })
        );
        view.set_subscribers(2, "c", 3);
        assert_eq!(view.subscribers("c"), 5);
        assert_eq!(
            view.set_subscribers(2, "c", 3),
            None,
            "a repeat changes nothing"
        );
        view.set_subscribers(1, "c", 0);
        view.set_subscribers(2, "c", 0);
        assert_eq!(view.subscribers("c"), 0);
        assert!(view.channel("c").is_none());
        assert_eq!(view.peers().count(), 0, "nothing is kept for empty peers");
    }

    #[test]
    fn a_member_appears_with_its_first_peer_and_vanishes_with_its_last() {
        let mut view = RemoteView::default();
        let info = Some(json!({ "name": "ann" }));
        let appeared = view.set_member(1, "presence-x", "ann", Some(info.clone()));
        assert!(matches!(
            appeared,
            Some(Transition::Member { change: MemberChange::Appeared(i), .. }) if i == info
        ));
        assert_eq!(
            view.set_member(2, "presence-x", "ann", Some(info.clone())),
            None
        );
        assert_eq!(view.set_member(2, "presence-x", "ann", Some(info)), None);
        assert_eq!(view.set_member(1, "presence-x", "ann", None), None);
        assert!(view.has_member("presence-x", "ann"));
        assert!(matches!(
            view.set_member(2, "presence-x", "ann", None),
            Some(Transition::Member {
                change: MemberChange::Vanished,
                ..
            })
        ));
        assert!(!view.has_member("presence-x", "ann"));
        assert_eq!(view.set_member(2, "presence-x", "ann", None), None);
    }

    #[test]
    fn a_snapshot_replaces_what_the_peer_held() {
        let mut view = RemoteView::default();
        view.replace_peer(
            1,
            &[
                report("presence-a", 2, &["ann", "bob"]),
                report("b", 1, &[]),
            ],
        );
        view.replace_peer(2, &[report("presence-a", 1, &["bob"])]);
        let transitions = view.replace_peer(1, &[report("presence-a", 1, &["ann"])]);
        // bob is still on peer 2, b was only on peer 1.
        assert_eq!(
            transitions,
            vec![
                Transition::Subscribers {
                    channel: "b".into(),
                    before: 1,
                    after: 0
                },
                Transition::Subscribers {
                    channel: "presence-a".into(),
                    before: 3,
                    after: 2
                },
            ]
        );
        assert!(view.has_member("presence-a", "bob"));
        let gone = view.replace_peer(2, &[]);
        assert!(gone.contains(&Transition::Member {
            channel: "presence-a".into(),
            user_id: "bob".into(),
            change: MemberChange::Vanished
        }));
        assert_eq!(view.subscribers("presence-a"), 1);
    }

    #[test]
    fn a_user_is_online_while_any_peer_has_them() {
        let mut view = RemoteView::default();
        assert_eq!(view.set_user(1, "ann", true), Some(UserChange::Online));
        assert_eq!(view.set_user(2, "ann", true), None);
        assert_eq!(
            view.set_user(2, "ann", true),
            None,
            "a repeat changes nothing"
        );
        assert_eq!(view.set_user(1, "ann", false), None);
        assert!(view.has_user("ann"));
        assert_eq!(
            view.replace_peer_users(2, &["bob".to_owned()]),
            vec![
                (Arc::from("ann"), UserChange::Offline),
                (Arc::from("bob"), UserChange::Online)
            ]
        );
        view.replace_peer_users(2, &[]);
        assert_eq!(view.peers().count(), 0);
    }

    #[test]
    fn forgetting_a_peer_reports_each_of_its_members_and_channels() {
        let mut view = RemoteView::default();
        view.replace_peer(7, &[report("presence-a", 2, &["ann", "bob"])]);
        let transitions = view.replace_peer(7, &[]);
        assert_eq!(transitions.len(), 3);
        assert!(view.channel("presence-a").is_none());
        assert_eq!(view.peers().count(), 0);
    }
}
