//! `api-server`: the inbox API and its command line.

use std::process::ExitCode;

use api_server::cli::{self, Cli, Command, SmsCommand, TeamCommand, UserCommand};
use api_server::config::Config;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let printed = |result: cli::CliResult<i64>| match result {
        Ok(id) => {
            println!("{id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Migrate => match cli::migrate(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Team {
            command: TeamCommand::Create(args),
        } => printed(cli::team_create(&config, &args)),
        Command::User {
            command: UserCommand::Create(args),
        } => printed(cli::user_create(&config, &args)),
        Command::Demo => printed(cli::demo(&config)),
        Command::Sms {
            command: SmsCommand::Receive(args),
        } => printed(cli::sms_receive(&config, &args)),
        Command::Doctor => {
            let healthy = actix_web::rt::System::new().block_on(cli::doctor(&config));
            if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let result = actix_web::rt::System::new().block_on(async move {
        let running = api_server::app::build(config)?;
        let state = running.state.clone();
        tracing::info!(
            realtime = state.realtime.mode(),
            database = %api_server::db::describe(&state.config.database_url),
            url = %state.config.public_url,
            twilio = state.config.twilio.is_some(),
            "api-server listening on {}:{}",
            state.config.host,
            running.port
        );
        tracing::info!("the example inbox page: {}/", state.config.public_url);
        if let Some(addr) = &state.config.metrics_addr {
            tracing::info!(
                token = state.config.metrics_token.is_some(),
                "/metrics is served on {addr} only"
            );
        }
        for (_, warning) in api_server::cli::exposure_warnings(&state.config) {
            tracing::warn!("{warning}");
        }
        if state.config.twilio.is_none() {
            tracing::warn!("no TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN: outbound messages are stored with status not_sent");
        }
        let users = state.db(|conn| Ok(api_server::models::user::User::count(conn)?)).await.unwrap_or(1);
        if users == 0 {
            tracing::warn!("the database has no user yet: load the demo team with `scripts/dev demo` (`api-server demo`), or create one with `api-server team create` and `api-server user create`");
        }
        let handle = running.server.handle();
        let stopper = state.clone();
        actix_web::rt::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: draining the outbox");
            api_server::app::shutdown(handle, stopper).await;
        });
        running.server.await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
