//! Teams: the unit of isolation, with their Twilio number.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::teams;
use crate::db::DbConnection;

/// A team row.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = teams)]
pub struct Team {
    pub id: i64,
    pub name: String,
    pub phone_number: String,
    pub created_at: NaiveDateTime,
}

/// A team to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = teams)]
pub struct NewTeam<'a> {
    pub name: &'a str,
    pub phone_number: &'a str,
    pub created_at: NaiveDateTime,
}

impl Team {
    /// Inserts a team.
    pub fn create(conn: &mut DbConnection, new: &NewTeam<'_>) -> QueryResult<Team> {
        crate::insert_returning!(conn, teams::table, new, Team)
    }

    /// A team by id.
    pub fn find(conn: &mut DbConnection, id: i64) -> QueryResult<Team> {
        teams::table.find(id).select(Team::as_select()).first(conn)
    }

    /// The team whose Twilio number this is.
    pub fn by_phone_number(conn: &mut DbConnection, phone: &str) -> QueryResult<Option<Team>> {
        teams::table
            .filter(teams::phone_number.eq(phone))
            .select(Team::as_select())
            .first(conn)
            .optional()
    }

    /// Every team's Twilio number, at most `limit` of them.
    pub fn phone_numbers(conn: &mut DbConnection, limit: i64) -> QueryResult<Vec<String>> {
        teams::table
            .select(teams::phone_number)
            .order(teams::id)
            .limit(limit)
            .load(conn)
    }
}
