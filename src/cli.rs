//! The command line: clap definitions and dispatch.
//!
//! Flags hold only what was typed; [`resolve`] layers them over the config file and the
//! environment into one validated [`Config`]. Invariant: this module knows no file formats and no
//! HTTP details; it calls the library and reports.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Mode, Pipeline};

/// Exit code of `replay` when some input was rejected (the rest was written).
pub const EXIT_REJECTED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "hooklake",
    version,
    about = "iClosed webhooks -> date-partitioned Parquet for DuckDB"
)]
pub struct Args {
    /// TOML config file (see config/example.toml). Also HOOKLAKE_CONFIG.
    #[arg(long, global = true, env = "HOOKLAKE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory of the Parquet lake [default: ./data]. Also HOOKLAKE_DATA_DIR.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Where the tables live: a path or file:// URL [default: the data directory]. Also
    /// HOOKLAKE_LAKE_URL.
    #[arg(long = "lake", global = true)]
    pub lake_url: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server (POST /webhooks/iclosed) until SIGINT/SIGTERM, then flush.
    Serve {
        /// Listen address [default: 127.0.0.1:8080]. Also HOOKLAKE_LISTEN.
        #[arg(long)]
        listen: Option<String>,
        /// On a shared lake: `ingest` (a receiver, writes raw_events and rejected_events) or
        /// `derive` (the deriver, every other table; a second one stands by) [default: all,
        /// one process doing both]. Also HOOKLAKE_ROLE.
        #[arg(long, value_enum)]
        role: Option<crate::config::Role>,
    },
    /// The deriver of a shared lake, once: derives what raw_events holds (up to the receivers'
    /// watermarks), uploads its state and stops. Fails if another deriver holds the lease.
    Derive {
        /// Derive once and stop (the long-running deriver is `serve --role derive`).
        #[arg(long, required = true)]
        once: bool,
    },
    /// A shared lake's processes: the receivers that reported, the deriver holding the lease,
    /// and how far it is behind raw_events.
    Status,
    /// Ask a running server to flush now, and print what it wrote.
    Flush {
        /// URL of the running server [default: http://127.0.0.1:8080]. Also HOOKLAKE_SERVER_URL.
        #[arg(long)]
        url: Option<String>,
    },
    /// Write the tables from exported payloads: NDJSON, a JSON array, or - for stdin; or, with
    /// --rejected, from the dead letters in rejected_events (after a fix or a raised limit).
    Replay {
        /// Input files.
        #[arg(required_unless_present = "rejected", conflicts_with = "rejected")]
        files: Vec<PathBuf>,
        /// Replay the bodies kept in rejected_events that were not replayed yet; those that
        /// parse now are written and marked replayed, the rest are reported.
        #[arg(long)]
        rejected: bool,
        /// With --rejected: only dead letters received at or after this time (RFC 3339, or
        /// YYYY-MM-DD for midnight UTC).
        #[arg(long, requires = "rejected", value_parser = crate::replay_rejected::parse_since)]
        since: Option<i64>,
    },
    /// Recompute every table and the state store from raw_events (after a mapping change),
    /// into a new directory or in place (the old contents are kept beside it).
    Rebuild {
        /// Write the rebuilt lake here instead of replacing the data directory (for a remote
        /// lake: the rebuilt lake's data directory).
        #[arg(long)]
        into: Option<PathBuf>,
        /// For a remote lake: the new, empty lake (URL) to rebuild into; the source lake is
        /// left as it is.
        #[arg(long, value_name = "URL")]
        into_lake: Option<String>,
    },
    /// Print the reference of every table and column (docs/tables.md).
    Tables,
    /// Explain a contact's lead score: its score, band, and each rule that matched with its
    /// points (from the state store; stop the server first).
    Score {
        /// The iClosed contact id.
        #[arg(long, value_name = "CONTACT_ID")]
        explain: i64,
    },
    /// Merge the small files of closed partitions (the server also does this in the
    /// background). Stop the server first, or use POST /admin/compact.
    Compact {
        /// Only this table.
        #[arg(long)]
        table: Option<String>,
        /// Only this date (YYYY-MM-DD), closed or not.
        #[arg(long, conflicts_with = "before")]
        date: Option<chrono::NaiveDate>,
        /// Only dates before this one (YYYY-MM-DD), closed or not.
        #[arg(long)]
        before: Option<chrono::NaiveDate>,
    },
    /// Run one of the DuckDB queries shipped in queries/ against the lake (needs the duckdb CLI).
    Query {
        /// The query to run (see --list).
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// List the queries with what each answers.
        #[arg(long)]
        list: bool,
        /// Lake to read: a directory or an object-store URL [default: the data directory].
        #[arg(long)]
        data: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = crate::query::Format::Table)]
        format: crate::query::Format,
        /// A query parameter as NAME=VALUE (e.g. no_show_hours=48); repeatable.
        #[arg(long = "set", value_parser = parse_variable)]
        set: Vec<(String, String)>,
        /// The DuckDB CLI to run.
        #[arg(long, default_value = "duckdb")]
        duckdb: String,
    },
    /// Write the engagement report: one self-contained HTML page of charts (needs the duckdb CLI).
    Report {
        /// First day of the period, YYYY-MM-DD (leads first seen from this day) [default: 29 days before --to].
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day of the period, YYYY-MM-DD, inclusive [default: today, UTC].
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// Only leads whose first-touch utm_source is this.
        #[arg(long)]
        source: Option<String>,
        /// Only leads of this iClosed account id.
        #[arg(long)]
        account: Option<i64>,
        /// Lake to read: a directory or an object-store URL [default: the data directory].
        #[arg(long)]
        data: Option<String>,
        /// The HTML file to write.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
        /// The DuckDB CLI to run.
        #[arg(long, default_value = "duckdb")]
        duckdb: String,
    },
    /// Write deterministic, realistic iClosed payloads as NDJSON (for tests and benchmarks).
    Gen {
        /// Leads to generate (about 6.5 deliveries each).
        #[arg(long, default_value_t = 1000)]
        contacts: i64,
        /// Seed: the same seed gives the same output.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Days over which the leads first appear, from 2026-03-01.
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check or show the effective configuration (defaults < file < HOOKLAKE_* < flags).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Workflow triggers (`[[triggers]]`): send a sample to a target, or send given-up
    /// deliveries again.
    Triggers {
        #[command(subcommand)]
        action: TriggersAction,
    },
}

/// What `hooklake triggers` does.
#[derive(Debug, Subcommand)]
pub enum TriggersAction {
    /// Send a made-up fact of the trigger's kind to its target, signed like a real one, and
    /// print the answer (exit 1 unless it is a 2xx).
    Test {
        /// The trigger's name.
        name: String,
    },
    /// Send given-up deliveries again, with the retry schedule from its start (through the
    /// running server's POST /admin/triggers/retry).
    Retry {
        /// Only this trigger's deliveries.
        #[arg(long)]
        trigger: Option<String>,
        /// Only facts that entered the outbox at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// URL of the running server [default: http://127.0.0.1:8080]. Also HOOKLAKE_SERVER_URL.
        #[arg(long)]
        url: Option<String>,
    },
}

impl Command {
    /// A batch command (`replay`, `rebuild`, `derive --once`): it flushes in bounded batches on every core, and
    /// its allocator keeps freed pages and uses huge pages (see [`crate::memory`]).
    fn is_batch(&self) -> bool {
        matches!(
            self,
            Command::Replay { .. } | Command::Rebuild { .. } | Command::Derive { .. }
        )
    }
}

/// Whether `args` (the program's, with its name first) run a batch command; false when they do
/// not parse.
pub fn is_batch_command(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    Args::try_parse_from(args).is_ok_and(|a| a.command.is_batch())
}

/// Parses the command line and runs it.
pub fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    init_tracing(args.log_format);
    let config = resolve(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(args.command, config))
}

/// Layers defaults, config file, environment and flags into one validated config.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration; exit 0 when it is usable.
    Check,
    /// Print the effective configuration as TOML, secrets masked.
    Show,
}

/// `NAME=VALUE`, NAME an identifier (it becomes a DuckDB variable name).
fn parse_variable(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    let identifier = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
        return Err(format!(
            "{name:?} is not a variable name (letters, digits, _)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

pub fn resolve(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(url) = &args.lake_url {
        config.lake_url = Some(url.clone());
    }
    match &args.command {
        Command::Serve { listen, role } => {
            if let Some(listen) = listen {
                config.listen = listen.clone();
            }
            if let Some(role) = role {
                config.role = *role;
            }
        }
        Command::Flush { url: Some(url) }
        | Command::Triggers {
            action: TriggersAction::Retry { url: Some(url), .. },
        } => config.server_url = url.clone(),
        _ => {}
    }
    config.validate()?;
    Ok(config)
}

async fn dispatch(command: Command, mut config: Config) -> anyhow::Result<ExitCode> {
    if command.is_batch() {
        config.flush_max_rows = config.flush_max_rows.min(config.replay_flush_max_rows);
        config.flush_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        crate::memory::keep_freed_pages();
        tracing::debug!(huge_pages = crate::memory::huge_pages(), "allocator");
    }
    match command {
        Command::Serve { .. } if config.role == crate::config::Role::Derive => {
            let shutdown = crate::server::shutdown_signal();
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            crate::server::serve_deriver(&config, listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Derive { .. } => {
            config.role = crate::config::Role::Derive;
            config.validate()?;
            let status = crate::derive::SharedStatus::default();
            let stop = tokio_util::sync::CancellationToken::new();
            let metrics = Arc::new(Metrics::default());
            crate::derive::run(&config, metrics, status.clone(), stop, true).await?;
            let s = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            println!(
                "derived through raw_events version {}; {} events wait for a receiver's watermark",
                s.raw_events_version
                    .map_or("(none)".to_string(), |v| v.to_string()),
                s.lag_events
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            print!("{}", crate::derive::status_report(&config).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { .. } => {
            config.check_exposure()?;
            // Signals first: from here on, SIGTERM means a graceful stop, never an abrupt one.
            let shutdown = crate::server::shutdown_signal();
            // Recover first: the listener opens once every acknowledged event is back in the buffer.
            let (pipeline, _) =
                Pipeline::open(&config, Arc::new(Metrics::default()), Mode::Logged)?;
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            crate::server::serve(&config, pipeline, listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Flush { .. } => admin_post(&config, "/admin/flush").await,
        Command::Replay {
            rejected: true,
            since,
            ..
        } => {
            let (pipeline, _) =
                Pipeline::open(&config, Arc::new(Metrics::default()), Mode::Unlogged)?;
            // A remote lake's dead letters are read from a local copy of rejected_events.
            let copy = match pipeline.lake_is_remote() {
                true => Some(
                    tempfile::tempdir_in(&config.data_dir)
                        .context("cannot create a temporary directory in the data directory")?,
                ),
                false => None,
            };
            let source = match &copy {
                Some(copy) => {
                    pipeline
                        .download_table("rejected_events", copy.path())
                        .await?;
                    copy.path().to_path_buf()
                }
                None => config.data_dir.clone(),
            };
            let report = crate::replay_rejected::replay_rejected(
                pipeline,
                &source,
                since,
                crate::event::BodyLimits::from_config(&config),
                config.max_body_bytes,
            )
            .await?;
            print!("{report}");
            Ok(if report.summary.rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_REJECTED)
            })
        }
        Command::Replay { files, .. } => {
            let (pipeline, _) =
                Pipeline::open(&config, Arc::new(Metrics::default()), Mode::Unlogged)?;
            let summary = crate::replay::replay(
                pipeline,
                &files,
                crate::event::BodyLimits::from_config(&config),
            )
            .await?;
            print!("{summary}");
            Ok(if summary.rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_REJECTED)
            })
        }
        Command::Rebuild { into, into_lake } => {
            let report =
                crate::rebuild::rebuild(&config, into.as_deref(), into_lake.as_deref()).await?;
            if report.from_log > 0 {
                println!(
                    "events left in the log, written to the source first: {}",
                    report.from_log
                );
            }
            print!("{}", report.summary);
            println!("rebuilt: {}", report.rebuilt.display());
            if let Some(lake) = &report.lake {
                println!(
                    "rebuilt lake: {lake} (set lake_url to it, with --data-dir {})",
                    report.rebuilt.display()
                );
            }
            if let Some(previous) = report.previous {
                println!("previous contents kept at: {}", previous.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compact {
            table,
            date,
            before,
        } => {
            if let Some(t) = &table {
                anyhow::ensure!(
                    crate::flatten::TABLE_NAMES.contains(&t.as_str()),
                    "unknown table {t:?}; tables: {}",
                    crate::flatten::TABLE_NAMES.join(", ")
                );
            }
            let (pipeline, _) =
                Pipeline::open(&config, Arc::new(Metrics::default()), Mode::Unlogged)?;
            // An explicit date is compacted even if its day is not over; otherwise closed ones only.
            let last_closed = if date.is_some() || before.is_some() {
                chrono::NaiveDate::MAX
            } else {
                let grace = chrono::Duration::hours(config.compaction_grace_hours as i64);
                crate::compact::last_closed_date(
                    chrono::Utc::now(),
                    config.partition_offset(),
                    grace,
                )
            };
            let selection = crate::compact::Selection {
                table,
                date,
                before,
                ..Default::default()
            };
            let pass = pipeline
                .compact(&selection, last_closed, config.compaction_target_file_bytes)
                .await?;
            for c in &pass.compacted {
                println!(
                    "{}: {} files -> {}, {} rows, {} rows written twice removed",
                    c.partition, c.files_before, c.files_after, c.rows, c.duplicates_removed
                );
            }
            println!("compacted {} partitions", pass.compacted.len());
            if pass.vacuumed > 0 {
                println!(
                    "deleted {} files removed by compactions over {} s ago",
                    pass.vacuumed, config.vacuum_retention_secs
                );
            }
            for f in &pass.failed {
                eprintln!("{}: not compacted: {}", f.partition, f.error);
            }
            if pass.failed.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("{} partitions could not be compacted", pass.failed.len())
            }
        }
        Command::Query {
            name,
            list,
            data,
            format,
            set,
            duckdb,
        } => {
            if list {
                print!("{}", crate::query::list());
                return Ok(ExitCode::SUCCESS);
            }
            let data = data.unwrap_or_else(|| config.lake().to_string());
            let access = crate::query::Access {
                store: config.store_options(),
                extensions: config.duckdb_extensions.clone(),
            };
            let ok = crate::query::run(&crate::query::Request {
                name: name.as_deref().unwrap_or_default(),
                data: &data,
                format,
                variables: set,
                duckdb: &duckdb,
                access: &access,
            })?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Report {
            from,
            to,
            source,
            account,
            data,
            out,
            duckdb,
        } => {
            let today = chrono::Utc::now().date_naive();
            let filters = crate::report::Filters::resolve(from, to, source, account, today)?;
            let data = data.unwrap_or_else(|| config.lake().to_string());
            let access = crate::query::Access {
                store: config.store_options(),
                extensions: config.duckdb_extensions.clone(),
            };
            let page = crate::report::render(&data, &duckdb, &filters, &access)?;
            std::fs::write(&out, page)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!(
                "wrote the report for {} to {} to {}",
                filters.from,
                filters.to,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen {
            contacts,
            seed,
            days,
            out,
        } => {
            let options = crate::generate::Options {
                contacts,
                seed,
                days,
            };
            let written = match out {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut writer = std::io::BufWriter::new(file);
                    let n = crate::generate::write_ndjson(options, &mut writer)?;
                    std::io::Write::flush(&mut writer)?;
                    n
                }
                None => {
                    let mut writer = std::io::BufWriter::new(std::io::stdout().lock());
                    let n = crate::generate::write_ndjson(options, &mut writer)?;
                    std::io::Write::flush(&mut writer)?;
                    n
                }
            };
            eprintln!(
                "generated {written} events for {contacts} leads over {days} days (seed {seed})"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            // What `serve` would refuse fails the check too.
            config.check_exposure()?;
            println!(
                "configuration ok (data_dir {}, listen {})",
                config.data_dir.display(),
                config.listen
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            action: ConfigAction::Show,
        } => {
            print!("{}", config.to_toml_masked());
            Ok(ExitCode::SUCCESS)
        }
        Command::Score { explain } => {
            let store = config.data_dir.join("_hooklake/state.redb");
            anyhow::ensure!(
                store.exists(),
                "no state store at {} (is data_dir right?)",
                store.display()
            );
            print!("{}", crate::score::explain(&store, explain)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Tables => {
            print!("{}", crate::flatten::docs::tables_markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Triggers {
            action: TriggersAction::Test { name },
        } => {
            let triggers = crate::trigger::Triggers::new(&config.triggers)?;
            let (fact, answer) =
                crate::trigger::deliver::test(&triggers, &config.trigger_delivery, &name)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
            println!(
                "trigger {name}: a made-up {} row, webhook-id {}",
                fact.table, fact.webhook_id
            );
            match answer.status {
                Some(status) => {
                    println!("answer: HTTP {status} in {} ms", answer.latency.as_millis())
                }
                None => println!(
                    "no answer: {}",
                    answer.error.as_deref().unwrap_or("unknown error")
                ),
            }
            if !answer.body.is_empty() {
                println!("{}", answer.body);
            }
            Ok(if answer.delivered() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Triggers {
            action: TriggersAction::Retry { trigger, since, .. },
        } => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if let Some(t) = &trigger {
                query.append_pair("trigger", t);
            }
            if let Some(s) = &since {
                query.append_pair("since", s);
            }
            let query = query.finish();
            let path = match query.is_empty() {
                true => "/admin/triggers/retry".to_string(),
                false => format!("/admin/triggers/retry?{query}"),
            };
            admin_post(&config, &path).await
        }
    }
}

/// POSTs to an admin endpoint of the running server (with the admin token when one is set),
/// prints the answer, and fails unless it is a 200.
async fn admin_post(config: &Config, path: &str) -> anyhow::Result<ExitCode> {
    let (status, body) =
        crate::client::post(&config.server_url, path, config.admin_token.as_deref()).await?;
    println!("{body}");
    if status == 200 {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("server answered {status}")
    }
}

/// Logs to stderr; `HOOKLAKE_LOG` takes a filter such as `info` or `hooklake=debug`.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKLAKE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
