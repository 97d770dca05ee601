//! Command-line interface (contract §1): `run`, `check`, `demo`, `token`, `--version`, `--help`,
//! `--log-format`. Parsing only; `main.rs` carries the commands out.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::{path::PathBuf, time::Duration};

/// airgate: the identity-aware gateway for Apache Airflow's outbound API calls.
#[derive(Debug, Parser)]
#[command(name = "airgate", version, about, long_about = None)]
pub struct Cli {
    /// Application log format on stderr (default: json when stdout is not a terminal).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve with a configuration file. Exits 0 after a clean drain on SIGTERM/SIGINT.
    Run {
        /// Configuration file.
        #[arg(long, env = "AIRGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print a summary (exit 2 and every problem when invalid).
    Check {
        /// Configuration file.
        #[arg(long, env = "AIRGATE_CONFIG")]
        config: PathBuf,
    },
    /// Start a complete gateway on 127.0.0.1 with a demo upstream and issuer; print curl commands.
    Demo {
        /// Proxy port (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin port (default: 9090, or --port + 1010 when --port is given, 0 when it is 0).
        #[arg(long)]
        admin_port: Option<u16>,
    },
    /// Print a pipeline identity token signed with an issuer's signing_key or shared_secret
    /// (development and tests only).
    Token(TokenArgs),
}

/// Arguments of `airgate token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Configuration file.
    #[arg(long, env = "AIRGATE_CONFIG")]
    pub config: PathBuf,
    /// Issuer name (`[[issuers]] name`).
    #[arg(long)]
    pub issuer: String,
    /// DAG id.
    #[arg(long)]
    pub dag: String,
    /// Task id.
    #[arg(long)]
    pub task: String,
    /// Run id.
    #[arg(long)]
    pub run: Option<String>,
    /// Try number.
    #[arg(long = "try")]
    pub try_number: Option<u32>,
    /// Map index.
    #[arg(long)]
    pub map_index: Option<i64>,
    /// Team.
    #[arg(long)]
    pub team: Option<String>,
    /// Lifetime, e.g. `5m`.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// Carries out `airgate token`: loads the configuration and mints for the named issuer.
pub fn token(args: &TokenArgs) -> Result<String, String> {
    let config = crate::config::load(&args.config).map_err(|p| p.to_string())?;
    let issuer = config
        .issuers
        .iter()
        .find(|i| *i.name == *args.issuer)
        .ok_or_else(|| format!("no issuer named {:?} in {}", args.issuer, args.config.display()))?;
    let req = crate::identity::mint::MintRequest {
        dag: args.dag.clone(),
        task: args.task.clone(),
        run: args.run.clone(),
        try_number: args.try_number,
        map_index: args.map_index,
        team: args.team.clone(),
        ttl: args.ttl,
        audience: None,
        extra_scope: None,
    };
    crate::identity::mint::mint(issuer, &req)
}
