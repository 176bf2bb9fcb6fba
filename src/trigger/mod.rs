//! Workflow triggers (`[[triggers]]`): what each one fires on, its filter, target and body,
//! checked once (`Triggers::new`). A flush turns its rows into facts (`matching.rs`), which its
//! commit puts in the state store's outbox; `deliver.rs` sends them, signed as the Standard
//! Webhooks specification says (`sign.rs`), and retries them on a schedule.
//!
//! Invariant: a trigger set that `Triggers::new` accepted renders and matches without error
//! (templates are parsed and regular expressions compiled there); a fact's `webhook-id` depends
//! only on the trigger's name and the fact's key in its table, so the same fact made again (a
//! flush rewritten after a crash) has the same id.

pub mod deliver;
pub mod matching;
pub mod sign;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::score::rules::{RuleConfig, Test};

/// One `[[triggers]]` entry as written. Its `Debug` form leaves out the secrets and the URL's
/// path (an incoming-webhook URL is itself a secret).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Names the trigger in `trigger_deliveries`, metrics and `hooklake triggers`.
    pub name: String,
    /// What it fires on: `status`, `attribute`, `call` or `score`.
    pub on: On,
    /// Where the requests go (`http://` or `https://`).
    pub url: String,
    /// `on = "status"`: statuses it leaves (unset: any, and a contact's first status too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<String>>,
    /// `on = "status"`: statuses it reaches (unset: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    /// `on = "attribute"`: attribute names (`attribute_changes.attribute`), `*` matching any
    /// run of characters (`utm_*`, `param:*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<String>>,
    /// `on = "attribute"`: only when the new value equals this (ASCII case ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `on = "call"`: `booked`, `cancelled`, `rescheduled` (call events), `outcome` (any
    /// outcome), `held`, `no_show`, `won` (outcomes of that kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<CallFact>>,
    /// `on = "score"`: fires when the score reaches this line from below (or, with
    /// `direction = "down"`, falls below it from at or above it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crosses: Option<i64>,
    /// `on = "score"` with `crosses`: `up` (default) or `down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// `on = "score"` without `crosses`: fires when the band changes to one of these (unset:
    /// any change of band; a contact's first band counts only when it is listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bands: Option<Vec<String>>,
    /// Tests of the contact's current attributes, all of which must hold (the lead score
    /// rules' attribute tests: `attribute` with `equals`, `in`, `matches`, `exists`,
    /// `greater_than`, `less_than`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<FilterConfig>,
    /// A minijinja template of the request body; unset: the fact as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `Content-Type` of the body (default `application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Signing secrets, `whsec_<base64>` as the Standard Webhooks specification writes them;
    /// each signs every request (several while a secret is rotated). None: unsigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Whether facts the change tracking flags as late fire too (default: they do not).
    #[serde(default)]
    pub late: bool,
}

impl std::fmt::Debug for TriggerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerConfig")
            .field("name", &self.name)
            .field("on", &self.on)
            .field("target", &deliver::target_of(&self.url))
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// What a trigger fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// A row of `status_transitions`.
    Status,
    /// A row of `attribute_changes` whose value differs from the state.
    Attribute,
    /// A row of `call_events` or `call_outcomes`.
    Call,
    /// A row of `lead_scores`.
    Score,
}

/// A kind of call fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallFact {
    Booked,
    Cancelled,
    Rescheduled,
    Outcome,
    Held,
    NoShow,
    Won,
}

/// Which way a score crosses its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
}

/// One test of a trigger's filter: the attribute tests of a lead score rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub attribute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(rename = "in", default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greater_than: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub less_than: Option<f64>,
}

/// `[trigger_delivery]`: how requests are sent and retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Seconds an attempt may take, connection included.
    pub timeout_secs: u64,
    /// Requests in flight at once to one target (scheme, host and port).
    pub concurrency_per_target: usize,
    /// Seconds to wait before each retry after a failed first attempt; once they are used up
    /// the delivery is given up (`hooklake triggers retry` sends it again).
    pub retry_schedule_secs: Vec<u64>,
    /// Days a given-up delivery is kept for `hooklake triggers retry`, counted from when its
    /// fact entered the outbox; then it is forgotten (its attempts stay in
    /// `trigger_deliveries`). 0 keeps them for ever.
    pub keep_given_up_days: u64,
}

/// Default retry schedule: about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_RETRY_SCHEDULE_SECS: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout_secs: 10,
            concurrency_per_target: 4,
            retry_schedule_secs: DEFAULT_RETRY_SCHEDULE_SECS.to_vec(),
            keep_given_up_days: 30,
        }
    }
}

impl DeliveryConfig {
    /// The wait before the next attempt after `failed` attempts of this round failed; `None`
    /// once the schedule is used up.
    pub fn retry_after(&self, failed: u32) -> Option<Duration> {
        let i = usize::try_from(failed).ok()?.checked_sub(1)?;
        self.retry_schedule_secs
            .get(i)
            .map(|s| Duration::from_secs(*s))
    }
}

/// Why a `[[triggers]]` entry cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TriggerError {
    #[error("trigger name {0:?} is empty or used twice")]
    Name(String),
    #[error("trigger {0:?}: url must be http:// or https:// with a host: {1}")]
    Url(String, String),
    #[error("trigger {0:?}: `{1}` does not apply to on = \"{2}\"")]
    Option(String, &'static str, String),
    #[error("trigger {0:?}: {1} must not be empty")]
    Empty(String, &'static str),
    #[error("trigger {0:?}: filter: {1}")]
    Filter(String, String),
    #[error("trigger {0:?}: body template: {1}")]
    Template(String, String),
    #[error("trigger {0:?}: secret: {1}")]
    Secret(String, String),
}

/// A checked trigger (its `Debug` form is its configuration's, without secrets).
#[derive(Clone)]
pub struct Trigger {
    pub config: TriggerConfig,
    pub(crate) filter: Vec<Test>,
    pub(crate) secrets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.config.fmt(f)
    }
}

/// The checked `[[triggers]]`, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    pub triggers: Vec<Trigger>,
}

impl Triggers {
    /// Checks every trigger: unique names, a usable URL, only the options its kind takes,
    /// filters, body templates and secrets.
    pub fn new(configs: &[TriggerConfig]) -> Result<Triggers, TriggerError> {
        let mut names = BTreeSet::new();
        let mut triggers = Vec::new();
        for c in configs {
            if c.name.trim().is_empty() || !names.insert(c.name.as_str()) {
                return Err(TriggerError::Name(c.name.clone()));
            }
            check_url(&c.url).map_err(|e| TriggerError::Url(c.name.clone(), e))?;
            check_options(c)?;
            let filter = c
                .filter
                .iter()
                .enumerate()
                .map(|(i, f)| Test::new(&filter_rule(&c.name, i, f)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TriggerError::Filter(c.name.clone(), e.to_string()))?;
            if let Some(body) = &c.body {
                matching::check_template(body)
                    .map_err(|e| TriggerError::Template(c.name.clone(), e))?;
            }
            let secrets = c
                .secrets
                .iter()
                .map(|s| sign::decode_secret(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TriggerError::Secret(c.name.clone(), e))?;
            triggers.push(Trigger {
                config: c.clone(),
                filter,
                secrets,
            });
        }
        Ok(Triggers { triggers })
    }

    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Trigger> {
        self.triggers.iter().find(|t| t.config.name == name)
    }
}

fn filter_rule(trigger: &str, i: usize, f: &FilterConfig) -> RuleConfig {
    RuleConfig {
        id: format!("{trigger} filter {}", i + 1),
        points: 0,
        attribute: Some(f.attribute.clone()),
        count: None,
        equals: f.equals.clone(),
        one_of: f.one_of.clone(),
        matches: f.matches.clone(),
        exists: f.exists,
        greater_than: f.greater_than,
        less_than: f.less_than,
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "{} is not an http(s) URL with a host",
            parsed.scheme()
        ));
    }
    Ok(())
}

/// Refuses an option the trigger's kind does not read, and an empty list (which would match
/// nothing, surely not what was meant).
fn check_options(c: &TriggerConfig) -> Result<(), TriggerError> {
    let kind = format!("{:?}", c.on).to_lowercase();
    let set: [(&'static str, bool, On); 8] = [
        ("from", c.from.is_some(), On::Status),
        ("to", c.to.is_some(), On::Status),
        ("attributes", c.attributes.is_some(), On::Attribute),
        ("value", c.value.is_some(), On::Attribute),
        ("calls", c.calls.is_some(), On::Call),
        ("crosses", c.crosses.is_some(), On::Score),
        ("direction", c.direction.is_some(), On::Score),
        ("bands", c.bands.is_some(), On::Score),
    ];
    for (name, present, on) in set {
        if present && on != c.on {
            return Err(TriggerError::Option(c.name.clone(), name, kind));
        }
    }
    let lists: [(&'static str, Option<usize>); 5] = [
        ("from", c.from.as_ref().map(Vec::len)),
        ("to", c.to.as_ref().map(Vec::len)),
        ("attributes", c.attributes.as_ref().map(Vec::len)),
        ("calls", c.calls.as_ref().map(Vec::len)),
        ("bands", c.bands.as_ref().map(Vec::len)),
    ];
    if let Some((name, _)) = lists.iter().find(|(_, n)| *n == Some(0)) {
        return Err(TriggerError::Empty(c.name.clone(), name));
    }
    if c.on == On::Call && c.calls.is_none() {
        return Err(TriggerError::Empty(c.name.clone(), "calls"));
    }
    if c.on == On::Attribute && c.attributes.is_none() {
        return Err(TriggerError::Empty(c.name.clone(), "attributes"));
    }
    if c.direction.is_some() && c.crosses.is_none() {
        return Err(TriggerError::Option(
            c.name.clone(),
            "direction",
            "score without crosses".into(),
        ));
    }
    if c.crosses.is_some() && c.bands.is_some() {
        return Err(TriggerError::Option(
            c.name.clone(),
            "bands",
            "score with crosses".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn parse(toml_text: &str) -> Vec<TriggerConfig> {
        #[derive(Deserialize)]
        struct File {
            triggers: Vec<TriggerConfig>,
        }
        toml::from_str::<File>(toml_text).unwrap().triggers
    }

    #[test]
    fn good_triggers_are_accepted_and_bad_ones_named() {
        let ok = parse(
            r#"
            [[triggers]]
            name = "qualified"
            on = "status"
            to = ["QUALIFIED"]
            url = "https://hooks.example.com/x"
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            body = '{"text": "{{ contact.email }} is qualified"}'
            [[triggers.filter]]
            attribute = "utm_source"
            in = ["google"]

            [[triggers]]
            name = "no-show"
            on = "call"
            calls = ["no_show"]
            url = "http://127.0.0.1:9/hook"
            "#,
        );
        let t = Triggers::new(&ok).unwrap();
        assert_eq!(t.triggers.len(), 2);
        assert_eq!(t.triggers[0].secrets[0].len(), 24);
        let refused = |text: &str| Triggers::new(&parse(text)).unwrap_err().to_string();
        let base = "[[triggers]]\nname = \"t\"\nurl = \"https://x.example/\"\n";
        for (extra, says) in [
            (
                "on = \"status\"\ncalls = [\"won\"]\n",
                "`calls` does not apply",
            ),
            ("on = \"call\"\n", "calls must not be empty"),
            ("on = \"status\"\nto = []\n", "to must not be empty"),
            ("on = \"score\"\ndirection = \"down\"\n", "direction"),
            ("on = \"status\"\nbody = \"{{ unclosed\"\n", "body template"),
            ("on = \"status\"\nsecrets = [\"whsec_***\"]\n", "secret"),
            (
                "on = \"status\"\n[[triggers.filter]]\nattribute = \"email\"\nmatches = \"(\"\n",
                "filter",
            ),
        ] {
            let err = refused(&format!("{base}{extra}"));
            assert!(
                err.contains(says) && err.contains("\"t\""),
                "{extra}: {err}"
            );
        }
        let err = refused("[[triggers]]\nname = \"t\"\non = \"status\"\nurl = \"ftp://x/\"\n");
        assert!(err.contains("url"), "{err}");
        let err = refused(&format!("{base}on = \"status\"\n{base}on = \"status\"\n"));
        assert!(err.contains("used twice"), "{err}");
    }

    #[test]
    fn the_schedule_gives_up_after_its_last_wait() {
        let d = DeliveryConfig::default();
        assert_eq!(d.retry_after(1), Some(Duration::from_secs(5)));
        assert_eq!(d.retry_after(7), Some(Duration::from_secs(36000)));
        assert_eq!(d.retry_after(8), None);
        assert_eq!(d.retry_after(0), None);
    }
}
