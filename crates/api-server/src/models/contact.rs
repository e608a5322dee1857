//! Contacts: the people a team texts with, one per phone number per team.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime};
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::{contacts, messages};
use crate::db::DbConnection;
use crate::models::message::{Message, MessageView};

// The messages table a second time, for the correlated "newest message of
// this contact" subquery.
diesel::alias!(messages as newest_messages: NewestMessages);

/// A contact row.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = contacts)]
pub struct Contact {
    pub id: i64,
    pub team_id: i64,
    pub name: String,
    pub phone: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Unread inbound messages, kept by [`Message::create`] and
    /// [`Message::mark_read`] in the same transaction as the message.
    pub unread_count: i64,
}

/// A contact to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = contacts)]
pub struct NewContact<'a> {
    pub team_id: i64,
    pub name: &'a str,
    pub phone: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A contact as the API shows it, with its unread count and newest message.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactView {
    pub id: String,
    pub name: String,
    pub phone: String,
    pub unread_count: i64,
    pub last_message: Option<MessageView>,
}

/// One page of the contact list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactPage {
    /// Most recently active first.
    pub contacts: Vec<ContactView>,
    /// The cursor of the next page (`before`); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// Where a page of the contact list ends: the last contact's activity time
/// and id. Clients see it as an opaque string (base64url of
/// `MICROS|ID`, microseconds since the Unix epoch, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityCursor {
    /// The contact's `updated_at`.
    pub updated_at: NaiveDateTime,
    /// The contact's id.
    pub id: i64,
}

impl ActivityCursor {
    /// Longest cursor string accepted: an encoded cursor is at most 54
    /// characters (two 20-digit numbers and a separator).
    const MAX_ENCODED: usize = 64;

    /// The string clients pass back as `before`.
    pub fn encode(&self) -> String {
        let micros = self.updated_at.and_utc().timestamp_micros();
        BASE64URL.encode(format!("{micros}|{}", self.id))
    }

    /// Parses what [`ActivityCursor::encode`] made; anything else is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() > Self::MAX_ENCODED {
            return None;
        }
        let bytes = BASE64URL.decode(raw).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (micros, id) = text.split_once('|')?;
        // Plain digits only (`parse` would also take a `+`): one cursor, one
        // spelling.
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(micros.strip_prefix('-').unwrap_or(micros)) || !digits(id) {
            return None;
        }
        let updated_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?.naive_utc();
        let id = crate::models::parse_id(id)?;
        Some(ActivityCursor { updated_at, id })
    }
}

impl Contact {
    /// Inserts a contact.
    pub fn create(conn: &mut DbConnection, new: &NewContact<'_>) -> QueryResult<Contact> {
        crate::insert_returning!(conn, contacts::table, new, Contact)
    }

    /// A contact of `team_id` by id; another team's is `None`.
    pub fn find_in_team(
        conn: &mut DbConnection,
        team_id: i64,
        id: i64,
    ) -> QueryResult<Option<Contact>> {
        contacts::table
            .filter(contacts::team_id.eq(team_id))
            .find(id)
            .select(Contact::as_select())
            .first(conn)
            .optional()
    }

    /// A team's contact with this (E.164) phone number.
    pub fn by_phone(
        conn: &mut DbConnection,
        team_id: i64,
        phone: &str,
    ) -> QueryResult<Option<Contact>> {
        contacts::table
            .filter(contacts::team_id.eq(team_id))
            .filter(contacts::phone.eq(phone))
            .select(Contact::as_select())
            .first(conn)
            .optional()
    }

    /// Records activity, so the contact list shows the busiest first. The
    /// time only moves forward: a transaction that took its `at` earlier but
    /// commits later leaves the newer time, so a contact never moves back
    /// past a cursor a client holds (and a walk never shows it twice).
    pub fn touch(conn: &mut DbConnection, id: i64, at: NaiveDateTime) -> QueryResult<usize> {
        diesel::update(contacts::table.find(id).filter(contacts::updated_at.lt(at)))
            .set(contacts::updated_at.eq(at))
            .execute(conn)
    }

    /// One page of a team's contacts as the API shows them, most recently
    /// active first (`updated_at`, then `id`, both descending): at most
    /// `limit` contacts after `before` (or from the newest), with the cursor
    /// of the next page when there is one.
    ///
    /// One statement per page, whatever the team's size: each contact is
    /// joined with its newest message through a correlated subquery (served
    /// by `messages_contact (contact_id, id)`), and the page is found by
    /// keyset on `contacts_team_activity (team_id, updated_at, id)`, so no
    /// list of ids is ever bound (SQLite allows 32,766 parameters).
    pub fn page_of_team(
        conn: &mut DbConnection,
        team_id: i64,
        before: Option<&ActivityCursor>,
        limit: i64,
    ) -> QueryResult<ContactPage> {
        let newest_id = newest_messages
            .filter(newest_messages.field(messages::contact_id).eq(contacts::id))
            .select(newest_messages.field(messages::id))
            .order(newest_messages.field(messages::id).desc())
            .limit(1)
            .single_value();
        let mut query = contacts::table
            .left_join(messages::table.on(messages::id.nullable().eq(newest_id)))
            .filter(contacts::team_id.eq(team_id))
            .order((contacts::updated_at.desc(), contacts::id.desc()))
            // One more than asked: whether a next page exists.
            .limit(limit.saturating_add(1))
            .select((Contact::as_select(), Option::<Message>::as_select()))
            .into_boxed();
        if let Some(cursor) = before {
            // `(updated_at, id) < (at, id)`, written so the first term is a
            // plain range on the index on every backend.
            query = query.filter(
                contacts::updated_at.le(cursor.updated_at).and(
                    contacts::updated_at
                        .lt(cursor.updated_at)
                        .or(contacts::id.lt(cursor.id)),
                ),
            );
        }
        let mut rows: Vec<(Contact, Option<Message>)> = query.load(conn)?;
        let more = usize::try_from(limit).is_ok_and(|limit| rows.len() > limit);
        if more {
            rows.pop();
        }
        let next_before = if more {
            rows.last().map(|(c, _)| {
                ActivityCursor {
                    updated_at: c.updated_at,
                    id: c.id,
                }
                .encode()
            })
        } else {
            None
        };
        let contacts = rows
            .iter()
            .map(|(c, last)| ContactView {
                id: c.id.to_string(),
                name: c.name.clone(),
                phone: c.phone.clone(),
                unread_count: c.unread_count,
                last_message: last.as_ref().map(MessageView::from),
            })
            .collect();
        Ok(ContactPage {
            contacts,
            next_before,
        })
    }

    /// One contact as the API shows it. Its unread count is read again: the
    /// row may have been loaded before the write that changed it.
    pub fn view(&self, conn: &mut DbConnection) -> QueryResult<ContactView> {
        let unread_count = contacts::table
            .find(self.id)
            .select(contacts::unread_count)
            .first(conn)?;
        Ok(ContactView {
            id: self.id.to_string(),
            name: self.name.clone(),
            phone: self.phone.clone(),
            unread_count,
            last_message: Message::latest_of_contact(conn, self.id)?
                .as_ref()
                .map(MessageView::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> NaiveDateTime {
        DateTime::from_timestamp_micros(micros).unwrap().naive_utc()
    }

    #[test]
    fn a_cursor_reads_back_what_it_wrote() {
        for (micros, id) in [(1_767_225_600_123_456, 42), (0, 1), (-1_000_001, i64::MAX)] {
            let cursor = ActivityCursor {
                updated_at: at(micros),
                id,
            };
            let encoded = cursor.encode();
            assert!(encoded.len() <= ActivityCursor::MAX_ENCODED, "{encoded}");
            assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(ActivityCursor::parse(&encoded), Some(cursor));
        }
    }

    #[test]
    fn anything_but_a_cursor_is_refused() {
        let encode = |raw: &str| BASE64URL.encode(raw);
        for raw in [
            String::new(),
            "42".into(),
            "!!!".into(),
            encode("1767225600000000"),
            encode("1767225600000000|"),
            encode("|5"),
            encode("1767225600000000|0"),
            encode("1767225600000000|-5"),
            encode("1767225600000000|+5"),
            encode("+1767225600000000|5"),
            encode("1767225600000000|5|6"),
            encode(" 1767225600000000|5"),
            encode("9223372036854775807|5"),
            encode("99999999999999999999|5"),
            BASE64URL.encode([0xff, b'|', b'5']),
            "A".repeat(65),
        ] {
            assert_eq!(ActivityCursor::parse(&raw), None, "{raw:?}");
        }
    }
}
