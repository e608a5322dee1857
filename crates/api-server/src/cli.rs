//! The command line: `serve` (the default), `migrate`, `team create`,
//! `user create`, `demo`, `doctor` and `sms receive`. A command that creates something
//! prints the new id alone on stdout; everything else goes to stderr.

use clap::{Args, Parser, Subcommand};
use diesel::connection::SimpleConnection;

use crate::auth::password;
use crate::config::{Config, RealtimeMode};
use crate::db::{self, write_transaction, DbConnection};
use crate::models::contact::{Contact, NewContact};
use crate::models::team::{NewTeam, Team};
use crate::models::user::{NewUser, User};
use crate::phone::PhoneNumber;
use crate::twilio::inbound::{self, InboundSms, Received};

/// The inbox API server.
#[derive(Parser, Debug)]
#[command(name = "api-server", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply pending migrations, then serve.
    Serve,
    /// Apply pending migrations.
    Migrate,
    /// Teams.
    Team {
        /// The team command.
        #[command(subcommand)]
        command: TeamCommand,
    },
    /// Users.
    User {
        /// The user command.
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Create a demo team with two users and a few contacts.
    Demo,
    /// Check the database, the realtime credentials and Twilio's.
    Doctor,
    /// Play Twilio locally.
    Sms {
        /// The SMS command.
        #[command(subcommand)]
        command: SmsCommand,
    },
}

/// `sms …`
#[derive(Subcommand, Debug)]
pub enum SmsCommand {
    /// Store an inbound SMS as if Twilio had delivered it (the webhook's
    /// code path, without its signature); a running server publishes it
    /// within a second. Prints the new message's id.
    Receive(SmsReceive),
}

/// `sms receive`
#[derive(Args, Debug)]
pub struct SmsReceive {
    /// The sender's number; an unknown one becomes a contact.
    #[arg(long)]
    pub from: String,
    /// The text.
    #[arg(long)]
    pub body: String,
    /// The team's number (default: the only team's).
    #[arg(long)]
    pub to: Option<String>,
}

/// `team …`
#[derive(Subcommand, Debug)]
pub enum TeamCommand {
    /// Create a team; prints its id.
    Create(TeamCreate),
}

/// `team create`
#[derive(Args, Debug)]
pub struct TeamCreate {
    /// The team's name.
    #[arg(long)]
    pub name: String,
    /// The team's Twilio number, E.164.
    #[arg(long)]
    pub phone_number: String,
}

/// `user …`
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; prints its id.
    Create(UserCreate),
}

/// `user create`
#[derive(Args, Debug)]
pub struct UserCreate {
    /// The team's id.
    #[arg(long)]
    pub team: String,
    /// The login email.
    #[arg(long)]
    pub email: String,
    /// The name others see.
    #[arg(long)]
    pub name: String,
    /// The password (at least 8 characters).
    #[arg(long)]
    pub password: String,
}

/// A command's failure, in words a user can act on.
pub type CliResult<T> = Result<T, String>;

fn open(config: &Config) -> CliResult<DbConnection> {
    db::migrate(&config.database_url).map_err(|e| e.to_string())?;
    db::connect(&config.database_url).map_err(|e| e.to_string())
}

/// `migrate`
pub fn migrate(config: &Config) -> CliResult<()> {
    let applied = db::migrate(&config.database_url).map_err(|e| e.to_string())?;
    eprintln!(
        "{applied} migration(s) applied to {}",
        db::describe(&config.database_url)
    );
    Ok(())
}

/// Creates a team; answers its id.
pub fn create_team(conn: &mut DbConnection, name: &str, phone_number: &str) -> CliResult<i64> {
    let phone = PhoneNumber::parse(phone_number).ok_or_else(|| {
        format!("{phone_number:?} is not a valid phone number (E.164, e.g. +14155550100)")
    })?;
    if name.trim().is_empty() {
        return Err("the team needs a name".into());
    }
    Team::create(
        conn,
        &NewTeam {
            name: name.trim(),
            phone_number: phone.as_str(),
            created_at: crate::models::now(),
        },
    )
    .map(|t| t.id)
    .map_err(|e| match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => {
            format!("a team already has the number {phone}")
        }
        other => other.to_string(),
    })
}

/// Creates a user; answers their id.
pub fn create_user(
    conn: &mut DbConnection,
    team: &str,
    email: &str,
    name: &str,
    secret: &str,
) -> CliResult<i64> {
    let team_id =
        crate::models::parse_id(team).ok_or_else(|| format!("{team:?} is not a team id"))?;
    Team::find(conn, team_id).map_err(|_| format!("there is no team {team_id}"))?;
    let email = email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 320 {
        return Err(format!("{email:?} is not an email address"));
    }
    if secret.chars().count() < 8 {
        return Err("the password needs at least 8 characters".into());
    }
    let hash = password::hash(secret)?;
    User::create(
        conn,
        &NewUser {
            team_id,
            email: &email,
            name: name.trim(),
            password_hash: &hash,
            created_at: crate::models::now(),
        },
    )
    .map(|u| u.id)
    .map_err(|e| match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => {
            format!("a user with the email {email} already exists")
        }
        other => other.to_string(),
    })
}

/// `team create`
pub fn team_create(config: &Config, args: &TeamCreate) -> CliResult<i64> {
    let mut conn = open(config)?;
    create_team(&mut conn, &args.name, &args.phone_number)
}

/// `user create`
pub fn user_create(config: &Config, args: &UserCreate) -> CliResult<i64> {
    let mut conn = open(config)?;
    create_user(
        &mut conn,
        &args.team,
        &args.email,
        &args.name,
        &args.password,
    )
}

/// The demo's logins.
pub const DEMO_USERS: [(&str, &str, &str); 2] = [
    ("alice@example.com", "Alice Agent", "password123"),
    ("bob@example.com", "Bob Agent", "password123"),
];

/// `demo`: a team, two users and a few contacts; prints how to log in.
pub fn demo(config: &Config) -> CliResult<i64> {
    let mut conn = open(config)?;
    if User::by_email(&mut conn, DEMO_USERS[0].0)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err("the demo is already loaded; log in as alice@example.com / password123".into());
    }
    let team_id = write_transaction(&mut conn, |conn| {
        let team = create_team(conn, "Demo Team", "+14155550100").map_err(TxError)?;
        for (email, name, secret) in DEMO_USERS {
            create_user(conn, &team.to_string(), email, name, secret).map_err(TxError)?;
        }
        let now = crate::models::now();
        for (name, phone) in [
            ("Carol Customer", "+14155550111"),
            ("Dan Driver", "+14155550122"),
            ("Erin Example", "+14155550133"),
        ] {
            Contact::create(
                conn,
                &NewContact {
                    team_id: team,
                    name,
                    phone,
                    created_at: now,
                    updated_at: now,
                },
            )?;
        }
        Ok::<_, TxError>(team)
    })
    .map_err(|e| e.0)?;
    eprintln!("Demo loaded. Log in at {} as:", config.public_url);
    for (email, name, secret) in DEMO_USERS {
        eprintln!("  {email} / {secret}   ({name})");
    }
    Ok(team_id)
}

/// `sms receive`: stores the SMS through the inbound webhook's code path and
/// answers the new message's id.
pub fn sms_receive(config: &Config, args: &SmsReceive) -> CliResult<i64> {
    let mut conn = open(config)?;
    if PhoneNumber::parse(&args.from).is_none() {
        return Err(format!(
            "{:?} is not a valid phone number (E.164, e.g. +14155550111)",
            args.from
        ));
    }
    let to = match &args.to {
        Some(to) => to.clone(),
        None => {
            let numbers = Team::phone_numbers(&mut conn, 2).map_err(|e| e.to_string())?;
            match numbers.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(
                        "there is no team yet: run `api-server demo` or `api-server team create`"
                            .into(),
                    )
                }
                _ => {
                    return Err(
                        "there are several teams: say which number receives it with --to".into(),
                    )
                }
            }
        }
    };
    let sms = InboundSms {
        sid: format!("SM{:032x}", rand::random::<u128>()),
        from: args.from.clone(),
        to: to.clone(),
        body: args.body.clone(),
        media: Vec::new(),
    };
    match inbound::receive(&mut conn, &sms).map_err(|e| e.to_string())? {
        Received::Stored(message) => {
            eprintln!(
                "Received from {} on {to}; a running api-server publishes it within a second.",
                args.from
            );
            Ok(message.id)
        }
        Received::UnknownNumber => Err(format!("no team has the number {to}")),
        Received::Duplicate => Err("this SMS was stored before".into()),
    }
}

/// A command's failure inside a transaction (diesel's errors convert).
struct TxError(String);

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError(e.to_string())
    }
}

/// Whether `host` keeps a listener on this machine: 127.0.0.0/8, ::1 or
/// `localhost`. Anything else (0.0.0.0, ::, a name, a public address)
/// counts as reachable from elsewhere.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What a configuration leaves open when api-server is reachable beyond
/// loopback, each as (what, a sentence naming the variable to set); none
/// on loopback. `serve` logs them as warnings, `doctor` prints them.
pub fn exposure_warnings(config: &Config) -> Vec<(&'static str, String)> {
    let mut warnings = Vec::new();
    let host = &config.host;
    if !is_loopback_host(host) && !config.secure_cookies() {
        warnings.push((
            "cookies",
            format!(
                "HOST={host} listens beyond loopback but PUBLIC_URL ({}) is not https, \
                 so the session cookie is sent without Secure and may travel in clear text: \
                 serve api-server behind TLS and set PUBLIC_URL=https://…",
                config.public_url
            ),
        ));
    }
    let metrics_host = match &config.metrics_addr {
        Some(addr) => addr
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| addr.clone()),
        None => host.clone(),
    };
    if config.metrics_token.is_none() && !is_loopback_host(&metrics_host) {
        let place = match &config.metrics_addr {
            Some(addr) => format!("METRICS_ADDR={addr}"),
            None => format!("HOST={host}"),
        };
        warnings.push((
            "metrics",
            format!(
                "/metrics is open to anyone who reaches {place}: set METRICS_TOKEN, \
                 or METRICS_ADDR to a loopback or private address"
            ),
        ));
    }
    warnings
}

/// `doctor`: checks each part and says what is wrong; answers whether all is well.
pub async fn doctor(config: &Config) -> bool {
    let mut healthy = true;
    let mut report = |ok: bool, what: &str, detail: String| {
        healthy &= ok;
        eprintln!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
    };
    // Warnings leave the verdict alone: the setup works, but is exposed.
    for (what, detail) in exposure_warnings(config) {
        eprintln!("warn {what}: {detail}");
    }
    match db::connect(&config.database_url) {
        Ok(mut conn) => match conn.batch_execute("SELECT 1") {
            Ok(()) => {
                let users = db::migrate(&config.database_url)
                    .map_err(|e| e.to_string())
                    .and_then(|_| User::count(&mut conn).map_err(|e| e.to_string()));
                match users {
                    Ok(0) => report(true, "database", format!("{} is reachable and migrated; it has no user yet: run `api-server demo` or `api-server team create` and `api-server user create`", db::describe(&config.database_url))),
                    Ok(n) => report(true, "database", format!("{} is reachable, migrated, {n} user(s)", db::describe(&config.database_url))),
                    Err(e) => report(false, "database", format!("migrations failed: {e}")),
                }
            }
            Err(e) => report(
                false,
                "database",
                format!(
                    "{} answers with an error: {e}",
                    db::describe(&config.database_url)
                ),
            ),
        },
        Err(e) => report(false, "database", format!("{e}; check DATABASE_URL")),
    }
    match &config.realtime {
        RealtimeMode::Embedded => report(true, "realtime", "embedded realtime server (no PUSHER_* credentials set); credentials are generated and kept in the database".into()),
        RealtimeMode::Pusher(pusher_config) => {
            let target = pusher_config.base_url();
            match realtime_core::Pusher::new((**pusher_config).clone()) {
                Ok(pusher) => match pusher.channels().send().await {
                    Ok(list) => report(true, "realtime", format!("{target} accepted a signed request ({} occupied channel(s))", list.channels.len())),
                    Err(realtime_core::Error::Http { status: 401, body }) => report(false, "realtime", format!("{target} refused our signature: check PUSHER_KEY and PUSHER_SECRET ({})", body.trim())),
                    Err(realtime_core::Error::Http { status: 404, .. }) => report(false, "realtime", format!("{target} does not know app {}: check PUSHER_APP_ID", pusher_config.credentials().app_id())),
                    Err(e) => report(false, "realtime", format!("{target} could not be reached: {e}; check PUSHER_CLUSTER / PUSHER_HOST")),
                },
                Err(e) => report(false, "realtime", e.to_string()),
            }
        }
    }
    match &config.twilio {
        None => report(true, "twilio", "no TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN: no SMS leaves this machine, and outbound messages say so".into()),
        Some(twilio) => {
            let url = format!("{}/2010-04-01/Accounts/{}.json", config.twilio_api_base, twilio.account_sid);
            let answer = reqwest::Client::new()
                .get(&url)
                .basic_auth(&twilio.account_sid, Some(twilio.auth_token.expose()))
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => report(true, "twilio", format!("account {} accepted our credentials", twilio.account_sid)),
                Ok(r) if r.status().as_u16() == 401 => report(false, "twilio", "Twilio refused the credentials: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN".into()),
                Ok(r) => report(false, "twilio", format!("Twilio answered {}", r.status())),
                Err(e) => report(false, "twilio", format!("{} could not be reached: {e}", config.twilio_api_base)),
            }
        }
    }
    healthy
}
