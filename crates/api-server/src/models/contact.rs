//! Contacts: the people a team texts with, one per phone number per team.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::contacts;
use crate::db::DbConnection;
use crate::models::message::{Message, MessageView};

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

    /// Records activity, so the contact list shows the busiest first.
    pub fn touch(conn: &mut DbConnection, id: i64, at: NaiveDateTime) -> QueryResult<usize> {
        diesel::update(contacts::table.find(id))
            .set(contacts::updated_at.eq(at))
            .execute(conn)
    }

    /// Every contact of a team as the API shows them, most recently active first.
    pub fn views_of_team(conn: &mut DbConnection, team_id: i64) -> QueryResult<Vec<ContactView>> {
        let list: Vec<Contact> = contacts::table
            .filter(contacts::team_id.eq(team_id))
            .order((contacts::updated_at.desc(), contacts::id.desc()))
            .select(Contact::as_select())
            .load(conn)?;
        let latest: HashMap<i64, Message> = Message::latest_per_contact(conn, team_id)?
            .into_iter()
            .map(|m| (m.contact_id, m))
            .collect();
        Ok(list
            .iter()
            .map(|c| ContactView {
                id: c.id.to_string(),
                name: c.name.clone(),
                phone: c.phone.clone(),
                unread_count: c.unread_count,
                last_message: latest.get(&c.id).map(MessageView::from),
            })
            .collect())
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
