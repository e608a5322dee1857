//! Notes: a team's internal remarks on a contact, never sent as SMS.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::notes;
use crate::db::DbConnection;
use crate::models::rfc3339;

/// A note row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = notes)]
pub struct Note {
    pub id: i64,
    pub team_id: i64,
    pub contact_id: i64,
    pub author_id: Option<i64>,
    pub body: String,
    pub created_at: NaiveDateTime,
}

/// A note to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = notes)]
pub struct NewNote<'a> {
    pub team_id: i64,
    pub contact_id: i64,
    pub author_id: Option<i64>,
    pub body: &'a str,
    pub created_at: NaiveDateTime,
}

/// A note as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NoteView {
    pub id: String,
    pub contact_id: String,
    pub author_id: Option<String>,
    pub body: String,
    pub created_at: String,
}

impl From<&Note> for NoteView {
    fn from(n: &Note) -> Self {
        NoteView {
            id: n.id.to_string(),
            contact_id: n.contact_id.to_string(),
            author_id: n.author_id.map(|id| id.to_string()),
            body: n.body.clone(),
            created_at: rfc3339(n.created_at),
        }
    }
}

impl Note {
    /// Inserts a note.
    pub fn create(conn: &mut DbConnection, new: &NewNote<'_>) -> QueryResult<Note> {
        crate::insert_returning!(conn, notes::table, new, Note)
    }
}
