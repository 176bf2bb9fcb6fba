//! `hooklake query`: runs the SQL shipped in `queries/` with the DuckDB CLI.
//!
//! The SQL files are compiled into the binary, so `hooklake query` works from any directory and
//! always runs the queries of its own version. A query file starts with a comment
//! `-- name: what it answers`, then `.read queries/views.sql` (for the stock DuckDB CLI run from
//! the repository root); here the views are inlined instead. A table without any file yet (a
//! new lake with no outcome so far) is read from an empty file of the right schema, so every
//! query answers on every lake. hooklake lists each table's live files from its Delta log
//! itself, so DuckDB reads exactly the committed rows and walks no directory while binding the
//! views. Invariant: reads the lake, never writes to it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The views every query reads.
pub const VIEWS: &str = include_str!("../queries/views.sql");

/// Every query: name and SQL, in the order `--list` shows them.
pub const QUERIES: [(&str, &str); 16] = [
    ("funnel", include_str!("../queries/funnel.sql")),
    ("attribution", include_str!("../queries/attribution.sql")),
    (
        "time_to_stage",
        include_str!("../queries/time_to_stage.sql"),
    ),
    (
        "status_durations",
        include_str!("../queries/status_durations.sql"),
    ),
    (
        "attribute_churn",
        include_str!("../queries/attribute_churn.sql"),
    ),
    (
        "daily_engagement",
        include_str!("../queries/daily_engagement.sql"),
    ),
    ("show_rate", include_str!("../queries/show_rate.sql")),
    (
        "tracking_params",
        include_str!("../queries/tracking_params.sql"),
    ),
    ("data_quality", include_str!("../queries/data_quality.sql")),
    (
        "latest_status",
        include_str!("../queries/latest_status.sql"),
    ),
    (
        "status_history",
        include_str!("../queries/status_history.sql"),
    ),
    ("daily_events", include_str!("../queries/daily_events.sql")),
    ("lead_scores", include_str!("../queries/lead_scores.sql")),
    (
        "score_distribution",
        include_str!("../queries/score_distribution.sql"),
    ),
    ("score_movers", include_str!("../queries/score_movers.sql")),
    (
        "score_movement",
        include_str!("../queries/score_movement.sql"),
    ),
];

/// How DuckDB prints the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// The one-line description of a query: the first line of its header, after `-- name: `.
pub fn description(sql: &str) -> String {
    let first = sql.lines().next().unwrap_or_default();
    let text = first.strip_prefix("--").unwrap_or_default().trim();
    let after_name = text.split_once(": ").map_or(text, |(_, rest)| rest);
    after_name.trim_end_matches('.').to_string()
}

/// `name  description` for every query.
pub fn list() -> String {
    let width = QUERIES.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    QUERIES
        .iter()
        .map(|(name, sql)| format!("{name:width$}  {}\n", description(sql)))
        .collect()
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The files a view of a table reads, listed by hooklake from the table's Delta log (paths in a
/// local lake, URLs in a remote one).
pub type Files = Vec<PathBuf>;

/// The script DuckDB runs: settings, variables, file lists, `views` (see [`views_for`]), then
/// the query. `files` gives the files of each table the views read (`<table>_files`).
pub fn script(
    views: &str,
    sql: &str,
    data: &str,
    files: &[(String, Files)],
    variables: &[(String, String)],
) -> String {
    let path = |p: &PathBuf| literal(&p.display().to_string());
    let mut out = String::from("SET TimeZone = 'UTC';\n");
    out.push_str(&format!("SET VARIABLE data_dir = {};\n", literal(data)));
    for (table, paths) in files {
        let list: Vec<String> = paths.iter().map(path).collect();
        out.push_str(&format!(
            "SET VARIABLE {table}_files = [{}];\n",
            list.join(", ")
        ));
    }
    for (name, value) in variables {
        // Numbers stay numbers; anything else is text.
        let value = if value.parse::<f64>().is_ok() {
            value.clone()
        } else {
            literal(value)
        };
        out.push_str(&format!("SET VARIABLE {name} = {value};\n"));
    }
    out.push_str(views);
    out.push('\n');
    for line in sql.lines().filter(|l| !l.trim_start().starts_with(".read")) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The statements of `views.sql` that `sql` needs, directly or through another view, in file
/// order. DuckDB binds a view when it is created, opening a file of each table it reads, so
/// creating only these saves up to 0.07 s per query on a lake of a year of daily partitions.
pub fn views_for(sql: &str) -> String {
    const START: &str = "CREATE OR REPLACE TEMP ";
    let code = |text: &str| -> String {
        text.lines()
            .map(|l| l.split("--").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // (name, statement) for each statement, comments dropped.
    let starts: Vec<usize> = VIEWS.match_indices(START).map(|(at, _)| at).collect();
    let statements: Vec<(String, String)> = starts
        .iter()
        .enumerate()
        .map(|(i, &at)| {
            let end = starts.get(i + 1).copied().unwrap_or(VIEWS.len());
            let text = code(&VIEWS[at..end]);
            let rest = &text[START.len()..];
            let rest = rest
                .strip_prefix("VIEW ")
                .or_else(|| rest.strip_prefix("MACRO "))
                .unwrap_or(rest);
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (name, text)
        })
        .collect();
    let query = code(sql);
    let mut needed: Vec<bool> = statements
        .iter()
        .map(|(name, _)| mentions(&query, name))
        .collect();
    // Add what the needed statements read, until nothing changes.
    loop {
        let mut grew = false;
        for i in 0..statements.len() {
            if needed[i] {
                continue;
            }
            let name = &statements[i].0;
            if statements
                .iter()
                .zip(&needed)
                .any(|((other, text), n)| *n && other != name && mentions(text, name))
            {
                needed[i] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    statements
        .into_iter()
        .zip(needed)
        .filter(|(_, n)| *n)
        .map(|((_, text), _)| text.trim_end().to_string() + "\n")
        .collect()
}

/// Whether `text` reads `name`: as a table (right after FROM or JOIN) or as a macro (called).
fn mentions(text: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = &text[..at];
        let after = &text[at + name.len()..];
        if before.chars().next_back().is_some_and(ident) || after.chars().next().is_some_and(ident)
        {
            return false;
        }
        let word = before
            .trim_end()
            .rsplit(|c: char| !ident(c))
            .next()
            .unwrap_or_default();
        word.eq_ignore_ascii_case("from")
            || word.eq_ignore_ascii_case("join")
            || after.starts_with('(')
    })
}

/// The files of the tables `views` read (`<table>_files`): the live files of each table's Delta
/// log (`live`), else, in a local lake (`local`), its published files (a lake no hooklake of
/// this version opened yet). A table without any is given an empty file of its schema, written
/// under `scratch/<table>/date=1970-01-01/` (DuckDB refuses an empty list).
fn table_files(
    local: Option<&Path>,
    mut live: BTreeMap<&'static str, Option<Vec<String>>>,
    scratch: &Path,
    views: &str,
) -> anyhow::Result<Vec<(String, Files)>> {
    let mut out = Vec::new();
    for (name, schema) in crate::flatten::table_schemas() {
        if !views.contains(&format!("'{name}_files'")) {
            continue;
        }
        let listed = match (local, live.remove(name).flatten()) {
            (_, Some(files)) => files.into_iter().map(PathBuf::from).collect(),
            (Some(dir), None) => crate::sink::published_files(dir, name)?,
            (None, None) => Vec::new(),
        };
        if !listed.is_empty() {
            out.push((name.to_string(), listed));
            continue;
        }
        let partition = scratch.join(name).join("date=1970-01-01");
        std::fs::create_dir_all(&partition)?;
        let empty = partition.join("empty.parquet");
        let file = std::fs::File::create(&empty)?;
        parquet::arrow::ArrowWriter::try_new(file, schema, None)?.close()?;
        out.push((name.to_string(), vec![empty]));
    }
    Ok(out)
}

/// How DuckDB reaches a remote lake: its store's settings (`lake_*` keys over the standard
/// environment), and DuckDB extension files to install first (for a machine that cannot
/// download them).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub store: crate::lake::StoreOptions,
    pub extensions: Vec<String>,
}

/// The statements that let DuckDB read an S3 lake: the extension files installed, `httpfs`
/// loaded, and a secret from the store's settings, else the standard `AWS_*` environment.
/// Only in the script DuckDB reads on its standard input: never logged, never on a command line.
fn remote_prelude(access: &Access) -> String {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let store = &access.store;
    // CREATE SECRET answers with a row, which would come before the query's own output.
    let mut out = String::from(".output /dev/null\n");
    for file in &access.extensions {
        out.push_str(&format!("INSTALL {};\n", literal(file)));
    }
    out.push_str("LOAD httpfs;\n");
    let mut secret = vec!["TYPE s3".to_string()];
    let key = store
        .access_key_id
        .clone()
        .or_else(|| env("AWS_ACCESS_KEY_ID"));
    let value = store
        .secret_access_key
        .clone()
        .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    if let (Some(key), Some(value)) = (key, value) {
        secret.push(format!("KEY_ID {}", literal(&key)));
        secret.push(format!("SECRET {}", literal(&value)));
    }
    if let Some(token) = store
        .session_token
        .clone()
        .or_else(|| env("AWS_SESSION_TOKEN"))
    {
        secret.push(format!("SESSION_TOKEN {}", literal(&token)));
    }
    let region = store
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string());
    secret.push(format!("REGION {}", literal(&region)));
    if let Some(endpoint) = store.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL")) {
        let (ssl, host) = match endpoint.split_once("://") {
            Some((scheme, host)) => (scheme != "http", host.trim_end_matches('/').to_string()),
            None => (true, endpoint.trim_end_matches('/').to_string()),
        };
        secret.push(format!("ENDPOINT {}", literal(&host)));
        secret.push("URL_STYLE 'path'".to_string());
        secret.push(format!("USE_SSL {ssl}"));
    }
    out.push_str(&format!(
        "CREATE OR REPLACE SECRET hooklake_lake ({});\n",
        secret.join(", ")
    ));
    out.push_str(".output\n");
    out
}

/// What to run and how.
pub struct Request<'a> {
    pub name: &'a str,
    /// A local directory or an object-store URL DuckDB can read.
    pub data: &'a str,
    pub format: Format,
    /// `name=value` pairs set as DuckDB variables (e.g. `no_show_hours=48`).
    pub variables: Vec<(String, String)>,
    /// The DuckDB CLI to run.
    pub duckdb: &'a str,
    /// How DuckDB reaches a remote lake.
    pub access: &'a Access,
}

/// Runs a query, DuckDB writing its result to our stdout. Returns DuckDB's success.
pub fn run(request: &Request) -> anyhow::Result<bool> {
    let Some((_, sql)) = QUERIES.iter().find(|(n, _)| *n == request.name) else {
        bail!(
            "unknown query {:?}; `hooklake query --list` shows them",
            request.name
        );
    };
    let (_scratch, text) = prepare(request.data, sql, &request.variables, request.access)?;
    let mode = match request.format {
        Format::Table => "-box",
        Format::Csv => "-csv",
        Format::Json => "-json",
    };
    let mut child = Command::new(request.duckdb)
        .args([mode, "-bail"])
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run the DuckDB CLI ({}): install it with `pip install duckdb-cli` or pass --duckdb PATH",
                request.duckdb
            )
        })?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .context("cannot send the query to DuckDB")?;
    Ok(child.wait()?.success())
}

/// The script for `sql` on the lake `data`, and the directory holding the empty files it may
/// read (removed when dropped).
fn prepare(
    data: &str,
    sql: &str,
    variables: &[(String, String)],
    access: &Access,
) -> anyhow::Result<(tempfile::TempDir, String)> {
    // A lake by URL: `file://` is a local lake; an object store is read over the network.
    let url = match data.contains("://") {
        true => crate::lake::LakeUrl::parse(data)?,
        false => crate::lake::LakeUrl::Local(PathBuf::from(data)),
    };
    let local = url.local_path().map(Path::to_path_buf);
    if let Some(dir) = &local
        && !dir.is_dir()
    {
        bail!("no data directory at {}", dir.display());
    }
    let views = views_for(sql);
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    // The live files of each table, from its Delta log: listing them here spares DuckDB a
    // directory walk each time it binds a view, and never reads a file a log does not name.
    let prelude = match &local {
        Some(_) => String::new(),
        None if data.starts_with("s3://") => remote_prelude(access),
        None => bail!(
            "hooklake query reads local and s3:// lakes; read a {} lake with DuckDB's delta_scan (README, \"The lake on S3, GCS, Azure\")",
            data.split("://").next().unwrap_or_default()
        ),
    };
    let live = crate::pipeline::live_files_at(&url, &access.store)
        .with_context(|| format!("cannot read the Delta logs of {data}"))?;
    let files = table_files(local.as_deref(), live, scratch.path(), &views)?;
    let text = prelude + &script(&views, sql, data, &files, variables);
    Ok((scratch, text))
}

/// Runs `sql` (statements reading the views; several queries may follow one another) in one
/// DuckDB session in JSON mode and returns what DuckDB printed: one JSON array per statement
/// that returns rows. DuckDB's error message becomes the error.
pub fn capture_json(
    data: &str,
    duckdb: &str,
    sql: &str,
    access: &Access,
) -> anyhow::Result<String> {
    let (_scratch, text) = prepare(data, sql, &[], access)?;
    let mut child = Command::new(duckdb)
        .args(["-json", "-bail"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the DuckDB CLI ({duckdb})"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // DuckDB may print before it has read everything: write from another thread.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let output = child.wait_with_output()?;
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    if !output.status.success() {
        bail!(
            "DuckDB failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    written.context("cannot send the queries to DuckDB")?;
    String::from_utf8(output.stdout).context("DuckDB printed invalid UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_has_a_description_and_reads_the_views() {
        for (name, sql) in QUERIES {
            assert!(sql.starts_with(&format!("-- {name}: ")), "{name}");
            let d = description(sql);
            assert!(d.len() > 20 && d.len() < 110, "{name}: {d}");
            assert!(
                sql.lines().any(|l| l == ".read queries/views.sql"),
                "{name}"
            );
        }
        let listed = list();
        assert_eq!(listed.lines().count(), QUERIES.len());
        assert!(listed.contains("funnel "), "{listed}");
    }

    #[test]
    fn only_the_views_a_query_needs_are_created() {
        let views = views_for("SELECT * FROM status_history");
        assert!(views.contains("VIEW status_history AS"), "{views}");
        assert!(views.contains("VIEW stored_contact_events AS"), "{views}");
        assert!(!views.contains("VIEW contacts AS"), "{views}");
        assert!(!views.contains("VIEW raw_events AS"), "{views}");
        assert!(!views.contains("--"), "comments are dropped");
        // Through other views: contact_funnel reads contacts, call_summaries, outcomes.
        let views = views_for("SELECT * FROM contact_funnel");
        for name in [
            "contacts",
            "call_summaries",
            "outcomes",
            "stored_call_outcomes",
        ] {
            assert!(views.contains(&format!("VIEW {name} AS")), "{name}");
        }
        assert!(!views.contains("VIEW calls AS"));
        assert!(views_for("SELECT utc_week(now())").contains("MACRO utc_week"));
        assert!(mentions("SELECT 1 FROM contacts c", "contacts"));
        assert!(mentions("a LEFT JOIN\n  contacts USING (id)", "contacts"));
        assert!(!mentions("count(*) AS contacts", "contacts"));
        assert!(!mentions("FROM stored_contacts_x", "contacts"));
        assert!(mentions("SELECT utc_week(t)", "utc_week"));
    }

    #[test]
    fn descriptions_are_the_first_header_line() {
        let sql = "-- q: counts things per day.\n-- More text.\n.read x\nSELECT 1;";
        assert_eq!(description(sql), "counts things per day");
    }

    #[test]
    fn the_script_sets_variables_and_inlines_the_views() {
        let s = script(
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1;\n",
            "-- q: x\n.read queries/views.sql\nSELECT 1;",
            "/it's",
            &[(
                "call_outcomes".into(),
                vec![PathBuf::from("/l/a.parquet"), PathBuf::from("/l/b.parquet")],
            )],
            &[
                ("no_show_hours".into(), "48".into()),
                ("who".into(), "a'b".into()),
            ],
        );
        assert!(s.contains("SET VARIABLE data_dir = '/it''s';"), "{s}");
        assert!(s.contains("SET VARIABLE call_outcomes_files = ['/l/a.parquet', '/l/b.parquet'];"));
        assert!(s.contains("SET VARIABLE no_show_hours = 48;"));
        assert!(s.contains("SET VARIABLE who = 'a''b';"));
        assert!(!s.lines().any(|l| l.starts_with(".read")));
        assert!(s.contains("CREATE OR REPLACE TEMP VIEW v AS SELECT 1;"));
        assert!(s.trim_end().ends_with("SELECT 1;"));
    }

    #[test]
    fn a_remote_lake_gets_httpfs_and_a_secret_from_the_store_settings() {
        let access = Access {
            store: crate::lake::StoreOptions {
                endpoint: Some("http://127.0.0.1:8333".into()),
                region: Some("eu-west-1".into()),
                access_key_id: Some("AKID".into()),
                secret_access_key: Some("it's-secret".into()),
                ..Default::default()
            },
            extensions: vec!["/x/httpfs.duckdb_extension".into()],
        };
        let p = remote_prelude(&access);
        assert!(
            p.starts_with(
                ".output /dev/null\nINSTALL '/x/httpfs.duckdb_extension';\nLOAD httpfs;\n"
            ),
            "{p}"
        );
        assert!(p.ends_with(");\n.output\n"), "{p}");
        for part in [
            "TYPE s3",
            "KEY_ID 'AKID'",
            "SECRET 'it''s-secret'",
            "REGION 'eu-west-1'",
            "ENDPOINT '127.0.0.1:8333'",
            "URL_STYLE 'path'",
            "USE_SSL false",
        ] {
            assert!(p.contains(part), "{part} in {p}");
        }
    }
}
