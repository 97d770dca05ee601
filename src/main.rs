//! The boot script: logging → configuration (exit 2 on error) → start → wait for signals →
//! drain with a deadline. Everything else lives in the library.

use airgate::{
    app, cli,
    cli::{Cli, Command, LogFormat},
    config,
};
use clap::Parser;
use std::{io::IsTerminal, process::ExitCode};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                print!("{} is valid\n{}", config.display(), config::summary(&c));
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprint!("{}: {problems}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Run { config } => match config::load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    tracing::warn!("{w}");
                }
                match runtime() {
                    Ok(rt) => rt.block_on(serve(c)),
                    Err(code) => code,
                }
            }
            Err(problems) => {
                eprint!("{}: {problems}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Demo { port, admin_port } => match runtime() {
            Ok(rt) => match rt.block_on(airgate::demo::run(
                port,
                admin_port.unwrap_or(match port {
                    8080 => 9090,
                    0 => 0,
                    p => p.checked_add(1010).unwrap_or(0),
                }),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("airgate demo: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
        Command::Token(args) => match cli::token(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("airgate token: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// The runtime sized to the cores this process may use (its CPU affinity, e.g. a container's
/// cpuset or `taskset`): with one core a single-threaded scheduler, which skips work-stealing
/// and cross-thread wake-ups entirely; otherwise one worker per core.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cores);
        b
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("airgate: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

async fn serve(config: config::Config) -> ExitCode {
    // Before the listeners are announced: a SIGHUP that arrives while (or right after) they start
    // must reload, not kill the process with the signal's default action.
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("airgate: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match app::start(config, app::Options::default()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("airgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    signals.wait_for_shutdown(&running).await;
    tracing::info!("shutting down: draining in-flight requests");
    if running.shutdown().await {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!("shutdown_grace elapsed with requests still in flight");
    }
    ExitCode::SUCCESS
}

/// SIGTERM, SIGINT and SIGHUP, caught from startup on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
            int: signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
            hup: signal(SignalKind::hangup()).map_err(|e| e.to_string())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; reloads on SIGHUP meanwhile.
    async fn wait_for_shutdown(&mut self, running: &app::Running) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => { let _ = running.reload(); }
            }
        }
    }
}

fn init_logging(format: Option<LogFormat>) {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() { LogFormat::Pretty } else { LogFormat::Json });
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}
