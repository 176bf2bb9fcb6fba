//! The scoring configuration (`[scoring]`: rules, clamp range, bands, half-life) and the pure
//! evaluation of a contact against it: which rules match, the points, the clamped score, its
//! band, and the decay of points with the days since the contact's last activity.
//! Invariant: pure; the same attributes, counts and rules give the same evaluation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::flatten::changes::{Attribute, ContactState};

/// `[scoring]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Whether flushes score contacts and write `lead_scores` rows.
    pub enabled: bool,
    /// Lowest score: lower sums of points are raised to it.
    pub min_score: i64,
    /// Highest score: higher sums of points are lowered to it.
    pub max_score: i64,
    /// Days in which the points of a contact with no activity halve; 0 turns decay off.
    pub half_life_days: f64,
    /// Named bands, each from its `min_score` up to the next band's.
    pub bands: Vec<BandConfig>,
    /// The rules; every rule whose condition holds adds its points.
    pub rules: Vec<RuleConfig>,
}

/// Default clamp range of a score.
pub const DEFAULT_MIN_SCORE: i64 = 0;
/// Default clamp range of a score.
pub const DEFAULT_MAX_SCORE: i64 = 100;
/// Default bands: name and lowest score.
pub const DEFAULT_BANDS: [(&str, i64); 3] = [("cold", 0), ("warm", 30), ("hot", 60)];

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            enabled: true,
            min_score: DEFAULT_MIN_SCORE,
            max_score: DEFAULT_MAX_SCORE,
            half_life_days: 0.0,
            bands: DEFAULT_BANDS
                .iter()
                .map(|(name, min)| BandConfig {
                    name: name.to_string(),
                    min_score: *min,
                })
                .collect(),
            rules: default_rules(),
        }
    }
}

/// One band: its name and the lowest score in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandConfig {
    pub name: String,
    pub min_score: i64,
}

/// One rule as written: an id, points, and one condition: a test of one attribute
/// (`attribute` with one of `equals`, `in`, `matches`, `exists`, `greater_than`, `less_than`)
/// or of one count (`count` with `greater_than` and/or `less_than`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule in `lead_scores.reasons` and `hooklake score --explain`.
    pub id: String,
    /// Points added when the condition holds (negative to subtract).
    pub points: i64,
    /// A `contact_events` column, `param:<key>` or `answer:<question text>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// One of the contact's counts: `booked`, `cancelled`, `rescheduled`, `held`, `no_show`, `won`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<Counter>,
    /// The value equals this (ASCII case ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The value is one of these (ASCII case ignored).
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    /// The value matches this regular expression (`regex` crate syntax; `(?i)` ignores case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// The attribute has a value (`true`) or has none (`false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The value (a number) or the count is above this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greater_than: Option<f64>,
    /// The value (a number) or the count is below this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub less_than: Option<f64>,
}

/// A per-contact count kept by the state store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    /// `call_booked` events.
    Booked,
    /// `call_cancelled` events.
    Cancelled,
    /// `call_rescheduled` events.
    Rescheduled,
    /// Outcomes other than a no-show.
    Held,
    /// Outcomes whose `no_sale_reason` is `NO_SHOW`.
    NoShow,
    /// Outcomes whose `outcome` is `SALE` or `WON`.
    Won,
}

/// A contact's counts of calls and outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub booked: u32,
    pub cancelled: u32,
    pub rescheduled: u32,
    pub held: u32,
    pub no_show: u32,
    pub won: u32,
}

impl Counts {
    /// The six counts in their stored order (booked, cancelled, rescheduled, held, no-show,
    /// won).
    pub fn values(&self) -> [u32; 6] {
        [
            self.booked,
            self.cancelled,
            self.rescheduled,
            self.held,
            self.no_show,
            self.won,
        ]
    }

    pub fn get(&self, counter: Counter) -> u32 {
        match counter {
            Counter::Booked => self.booked,
            Counter::Cancelled => self.cancelled,
            Counter::Rescheduled => self.rescheduled,
            Counter::Held => self.held,
            Counter::NoShow => self.no_show,
            Counter::Won => self.won,
        }
    }

    /// The counts of both, added.
    pub fn plus(self, o: Counts) -> Counts {
        Counts {
            booked: self.booked + o.booked,
            cancelled: self.cancelled + o.cancelled,
            rescheduled: self.rescheduled + o.rescheduled,
            held: self.held + o.held,
            no_show: self.no_show + o.no_show,
            won: self.won + o.won,
        }
    }
}

/// Why a `[scoring]` section cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RuleError {
    #[error("rule {0:?}: needs exactly one of `attribute` and `count`")]
    Subject(String),
    #[error(
        "rule {0:?}: an attribute rule needs exactly one of `equals`, `in`, `matches`, `exists`, or `greater_than` and/or `less_than`"
    )]
    AttributeTest(String),
    #[error("rule {0:?}: a count rule takes only `greater_than` and/or `less_than`, at least one")]
    CountTest(String),
    #[error("rule {0:?}: invalid regular expression: {1}")]
    Regex(String, String),
    #[error("rule id {0:?} is empty or used twice")]
    Id(String),
    #[error("min_score {0} is above max_score {1}")]
    Range(i64, i64),
    #[error("bands must be non-empty, with distinct names, in increasing min_score order")]
    Bands,
    #[error("half_life_days must be 0 (off) or positive, not {0}")]
    HalfLife(f64),
}

/// A rule's condition, checked and compiled.
#[derive(Debug, Clone)]
enum Condition {
    Equals(Attribute, String),
    In(Attribute, Vec<String>),
    Matches(Attribute, regex::Regex),
    Exists(Attribute, bool),
    Between(Attribute, Option<f64>, Option<f64>),
    Count(Counter, Option<f64>, Option<f64>),
}

/// A checked rule set, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<(String, i64, Condition)>,
    min: i64,
    max: i64,
    bands: Vec<BandConfig>,
    half_life_days: f64,
}

/// Which of a rule set's attribute rules hold for a contact, as bits: rule `i` is bit `i`
/// ([`Rules::attributes_held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributesHeld(u128);

/// A contact's score: the rules that matched (id, points), the sum of their points, and the
/// score (the sum, decayed if asked, clamped) with its band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub matched: Vec<(String, i64)>,
    pub points: i64,
    pub score: i64,
    pub band: String,
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.score, self.band)
    }
}

impl Rules {
    /// Checks every rule, the range and the bands, and compiles the regular expressions.
    pub fn new(config: &ScoringConfig) -> Result<Rules, RuleError> {
        if config.min_score > config.max_score {
            return Err(RuleError::Range(config.min_score, config.max_score));
        }
        let names: std::collections::BTreeSet<&str> =
            config.bands.iter().map(|b| b.name.as_str()).collect();
        if config.bands.is_empty()
            || names.len() != config.bands.len()
            || config
                .bands
                .windows(2)
                .any(|w| w[0].min_score >= w[1].min_score)
        {
            return Err(RuleError::Bands);
        }
        if !(config.half_life_days >= 0.0 && config.half_life_days.is_finite()) {
            return Err(RuleError::HalfLife(config.half_life_days));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut rules = Vec::new();
        for rule in &config.rules {
            if rule.id.trim().is_empty() || !ids.insert(rule.id.as_str()) {
                return Err(RuleError::Id(rule.id.clone()));
            }
            rules.push((rule.id.clone(), rule.points, condition(rule)?));
        }
        Ok(Rules {
            rules,
            min: config.min_score,
            max: config.max_score,
            bands: config.bands.clone(),
            half_life_days: config.half_life_days,
        })
    }

    /// Evaluates a contact: `value` gives an attribute's current value (None: no value).
    pub fn evaluate<'a>(
        &self,
        value: impl Fn(&str) -> Option<&'a str>,
        counts: &Counts,
    ) -> Evaluation {
        self.evaluate_with(|a: &Attribute| value(a.name()), counts)
    }

    /// Evaluates a contact from its state, afresh: what [`Rules::reevaluate_contact`] is
    /// checked against.
    #[cfg(test)]
    pub fn evaluate_contact(&self, state: &ContactState, counts: &Counts) -> Evaluation {
        self.evaluate_with(|a: &Attribute| state.get(a), counts)
    }

    /// Evaluates a contact from its state, given its `last` evaluation. Returns the evaluation
    /// and `last`, unless the evaluation is `last` itself: returned, not rebuilt, when the
    /// same rules hold for the same score and band.
    pub fn reevaluate_contact(
        &self,
        state: &ContactState,
        counts: &Counts,
        last: Option<Evaluation>,
    ) -> (Evaluation, Option<Evaluation>) {
        match self.attributes_held(state) {
            Some(held) => self.reevaluate_held(held, counts, last),
            None => (
                self.evaluate_with(|a: &Attribute| state.get(a), counts),
                last,
            ),
        }
    }

    /// Which attribute rules hold for a contact, as bits (rule `i` is bit `i`): what a
    /// reevaluation needs of its state. `None` when there are too many rules for a mask.
    pub fn attributes_held(&self, state: &ContactState) -> Option<AttributesHeld> {
        if self.rules.len() > 128 {
            return None;
        }
        let value = |a: &Attribute| state.get(a);
        let mut held = 0u128;
        for (i, (_, _, c)) in self.rules.iter().enumerate() {
            if !matches!(c, Condition::Count(..)) && holds(c, &value, &Counts::default()) {
                held |= 1 << i;
            }
        }
        Some(AttributesHeld(held))
    }

    /// [`Rules::reevaluate_contact`] for a contact whose attribute rules `held`
    /// ([`Rules::attributes_held`] of its state).
    pub fn reevaluate_held(
        &self,
        held: AttributesHeld,
        counts: &Counts,
        last: Option<Evaluation>,
    ) -> (Evaluation, Option<Evaluation>) {
        let mut held = held.0;
        let mut points = 0i64;
        for (i, (_, p, c)) in self.rules.iter().enumerate() {
            if let Condition::Count(counter, above, below) = c
                && between(f64::from(counts.get(*counter)), above, below)
            {
                held |= 1 << i;
            }
            if held >> i & 1 == 1 {
                points += p;
            }
        }
        let matched = || {
            self.rules
                .iter()
                .enumerate()
                .filter(move |(i, _)| held >> i & 1 == 1)
                .map(|(_, (id, p, _))| (id, *p))
        };
        let (score, band) = self.score_and_band(points, 0.0);
        let unchanged = last.as_ref().is_some_and(|last| {
            last.points == points
                && last.score == score
                && last.band == band
                && last.matched.len() == held.count_ones() as usize
                && last
                    .matched
                    .iter()
                    .zip(matched())
                    .all(|((id, p), (rule, points))| id == rule && *p == points)
        });
        if unchanged {
            return (last.expect("an unchanged evaluation has a last one"), None);
        }
        let matched = matched().map(|(id, p)| (id.clone(), p)).collect();
        (self.scored(matched, points, 0.0), last)
    }

    fn evaluate_with<'a>(
        &self,
        value: impl Fn(&Attribute) -> Option<&'a str>,
        counts: &Counts,
    ) -> Evaluation {
        let matched: Vec<(String, i64)> = self
            .rules
            .iter()
            .filter(|(_, _, c)| holds(c, &value, counts))
            .map(|(id, points, _)| (id.clone(), *points))
            .collect();
        let points = matched.iter().map(|(_, p)| p).sum();
        self.scored(matched, points, 0.0)
    }

    /// The evaluation with its points decayed for `idle_days` without activity (no change when
    /// decay is off).
    pub fn decayed(&self, evaluation: &Evaluation, idle_days: f64) -> Evaluation {
        self.scored(evaluation.matched.clone(), evaluation.points, idle_days)
    }

    fn scored(&self, matched: Vec<(String, i64)>, points: i64, idle_days: f64) -> Evaluation {
        let (score, band) = self.score_and_band(points, idle_days);
        Evaluation {
            band: band.to_string(),
            matched,
            points,
            score,
        }
    }

    /// The score of `points` after `idle_days` (decayed, clamped), and its band.
    fn score_and_band(&self, points: i64, idle_days: f64) -> (i64, &str) {
        let score = decay(points, idle_days, self.half_life_days).clamp(self.min, self.max);
        (score, self.band(score))
    }

    /// The band of a score: the last band whose `min_score` it reaches (the first band below
    /// them all).
    pub fn band(&self, score: i64) -> &str {
        self.bands
            .iter()
            .rev()
            .find(|b| score >= b.min_score)
            .unwrap_or(&self.bands[0])
            .name
            .as_str()
    }

    /// Whether points decay.
    pub fn decays(&self) -> bool {
        self.half_life_days > 0.0
    }
}

/// `points` after `idle_days` with the given half-life, rounded to the nearest integer (half
/// away from zero); a half-life of 0 (off) or no idle time leaves them as they are.
pub fn decay(points: i64, idle_days: f64, half_life_days: f64) -> i64 {
    if half_life_days <= 0.0 || idle_days <= 0.0 {
        return points;
    }
    (points as f64 * 0.5f64.powf(idle_days / half_life_days)).round() as i64
}

fn condition(rule: &RuleConfig) -> Result<Condition, RuleError> {
    let id = || rule.id.clone();
    let range = rule.greater_than.is_some() || rule.less_than.is_some();
    match (&rule.attribute, rule.count) {
        (Some(attribute), None) => {
            let a = Attribute::new(attribute);
            let tests = [
                rule.equals.is_some(),
                rule.one_of.is_some(),
                rule.matches.is_some(),
                rule.exists.is_some(),
                range,
            ];
            if tests.iter().filter(|t| **t).count() != 1 {
                return Err(RuleError::AttributeTest(id()));
            }
            Ok(if let Some(v) = &rule.equals {
                Condition::Equals(a, v.clone())
            } else if let Some(set) = &rule.one_of {
                Condition::In(a, set.clone())
            } else if let Some(pattern) = &rule.matches {
                let re = regex::Regex::new(pattern)
                    .map_err(|e| RuleError::Regex(id(), e.to_string()))?;
                Condition::Matches(a, re)
            } else if let Some(exists) = rule.exists {
                Condition::Exists(a, exists)
            } else {
                Condition::Between(a, rule.greater_than, rule.less_than)
            })
        }
        (None, Some(counter)) => {
            if rule.equals.is_some()
                || rule.one_of.is_some()
                || rule.matches.is_some()
                || rule.exists.is_some()
                || !range
            {
                return Err(RuleError::CountTest(id()));
            }
            Ok(Condition::Count(counter, rule.greater_than, rule.less_than))
        }
        _ => Err(RuleError::Subject(id())),
    }
}

/// Whether `x` is above `above` and below `below` (each bound optional).
fn between(x: f64, above: &Option<f64>, below: &Option<f64>) -> bool {
    above.is_none_or(|a| x > a) && below.is_none_or(|b| x < b)
}

fn holds<'a>(
    c: &Condition,
    value: &impl Fn(&Attribute) -> Option<&'a str>,
    counts: &Counts,
) -> bool {
    match c {
        Condition::Equals(a, v) => value(a).is_some_and(|x| x.eq_ignore_ascii_case(v)),
        Condition::In(a, set) => {
            value(a).is_some_and(|x| set.iter().any(|v| x.eq_ignore_ascii_case(v)))
        }
        Condition::Matches(a, re) => value(a).is_some_and(|x| re.is_match(x)),
        Condition::Exists(a, exists) => value(a).is_some_and(|x| !x.is_empty()) == *exists,
        Condition::Between(a, above, below) => value(a)
            .and_then(|x| x.trim().parse::<f64>().ok())
            .is_some_and(|x| between(x, above, below)),
        Condition::Count(counter, above, below) => {
            between(f64::from(counts.get(*counter)), above, below)
        }
    }
}

/// One attribute test on its own (a workflow trigger's filter): a rule's condition without
/// its points.
#[derive(Debug, Clone)]
pub struct Test(Condition);

impl Test {
    /// Checks and compiles the condition of `rule`, which must test an attribute.
    pub fn new(rule: &RuleConfig) -> Result<Test, RuleError> {
        if rule.count.is_some() {
            return Err(RuleError::Subject(rule.id.clone()));
        }
        condition(rule).map(Test)
    }

    /// The attribute it reads.
    pub fn attribute(&self) -> &str {
        match &self.0 {
            Condition::Equals(a, _)
            | Condition::In(a, _)
            | Condition::Matches(a, _)
            | Condition::Exists(a, _)
            | Condition::Between(a, _, _) => a.name(),
            Condition::Count(..) => "",
        }
    }

    /// Whether the test holds: `value` gives an attribute's current value.
    pub fn holds<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> bool {
        holds(
            &self.0,
            &|a: &Attribute| value(a.name()),
            &Counts::default(),
        )
    }
}

/// The shipped rule set, for a booked-call funnel (the same as `config/example.toml`).
pub fn default_rules() -> Vec<RuleConfig> {
    let attr = |id: &str, points: i64, attribute: &str| RuleConfig {
        id: id.to_string(),
        points,
        attribute: Some(attribute.to_string()),
        ..RuleConfig::default()
    };
    let count = |id: &str, points: i64, counter: Counter| RuleConfig {
        id: id.to_string(),
        points,
        count: Some(counter),
        greater_than: Some(0.0),
        ..RuleConfig::default()
    };
    let list = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
    vec![
        RuleConfig {
            one_of: list(&["QUALIFIED"]),
            ..attr("qualified", 30, "status")
        },
        RuleConfig {
            one_of: list(&["DISQUALIFIED"]),
            ..attr("disqualified", -100, "status")
        },
        RuleConfig {
            one_of: list(&["google", "linkedin"]),
            ..attr("paid_source", 10, "utm_source")
        },
        RuleConfig {
            matches: Some(FREE_MAIL.to_string()),
            ..attr("free_mail", -5, "email")
        },
        RuleConfig {
            exists: Some(true),
            ..attr("gave_phone", 5, "phone_number")
        },
        RuleConfig {
            matches: Some("(?i)^(yes|asap|now|this (week|month))".to_string()),
            ..attr("ready_to_buy", 10, "answer:When do you want to start?")
        },
        count("booked", 20, Counter::Booked),
        count("held", 25, Counter::Held),
        count("no_show", -15, Counter::NoShow),
        count("cancelled", -10, Counter::Cancelled),
        count("won", 50, Counter::Won),
    ]
}

/// The free-mail pattern of the shipped rule set.
const FREE_MAIL: &str =
    r"(?i)@(gmail|googlemail|yahoo|hotmail|outlook|live|icloud|aol|proton|protonmail|gmx)\.";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn rule(toml_text: &str) -> Result<Rules, RuleError> {
        let rule: RuleConfig = toml::from_str(toml_text).unwrap();
        Rules::new(&ScoringConfig {
            rules: vec![rule],
            ..ScoringConfig::default()
        })
    }

    /// Whether the one rule of `rules` matches a contact with `attrs` and `counts`.
    fn check(rule_toml: &str, attrs: &[(&str, &str)], counts: Counts, expected: bool) {
        let rules = rule(rule_toml).unwrap();
        let map: BTreeMap<&str, &str> = attrs.iter().copied().collect();
        let e = rules.evaluate(|k| map.get(k).copied(), &counts);
        assert_eq!(!e.matched.is_empty(), expected, "{rule_toml} {attrs:?}");
    }

    #[test]
    fn every_condition_kind() {
        let none = Counts::default();
        let r = r#"id = "r"
points = 1
"#;
        let eq = format!("{r}attribute = \"status\"\nequals = \"qualified\"");
        check(&eq, &[("status", "QUALIFIED")], none, true);
        check(&eq, &[("status", "POTENTIAL")], none, false);
        check(&eq, &[], none, false);
        let one_of = format!("{r}attribute = \"utm_source\"\nin = [\"google\", \"linkedin\"]");
        check(&one_of, &[("utm_source", "LinkedIn")], none, true);
        check(&one_of, &[("utm_source", "facebook")], none, false);
        let re = format!("{r}attribute = \"email\"\nmatches = '@gmail\\.com$'");
        check(&re, &[("email", "a@gmail.com")], none, true);
        check(&re, &[("email", "a@gmail.company")], none, false);
        let param = format!("{r}attribute = \"param:gclid\"\nexists = true");
        check(&param, &[("param:gclid", "x1")], none, true);
        check(&param, &[("param:gclid", "")], none, false);
        check(&param, &[], none, false);
        let absent = format!("{r}attribute = \"phone_number\"\nexists = false");
        check(&absent, &[], none, true);
        check(&absent, &[("phone_number", "+1")], none, false);
        let range =
            format!("{r}attribute = \"answer:Team size\"\ngreater_than = 10\nless_than = 50");
        check(&range, &[("answer:Team size", "12")], none, true);
        check(&range, &[("answer:Team size", "50")], none, false);
        check(&range, &[("answer:Team size", "10")], none, false);
        check(&range, &[("answer:Team size", "a dozen")], none, false);
        let booked = format!("{r}count = \"booked\"\ngreater_than = 1");
        let two = Counts {
            booked: 2,
            ..Counts::default()
        };
        check(&booked, &[], two, true);
        check(&booked, &[], Counts { booked: 1, ..two }, false);
        let few_no_shows = format!("{r}count = \"no_show\"\nless_than = 2");
        check(&few_no_shows, &[], none, true);
        check(&few_no_shows, &[], Counts { no_show: 2, ..none }, false);
    }

    #[test]
    fn a_reevaluation_is_the_evaluation_and_keeps_an_unchanged_one() {
        let rules = Rules::new(&ScoringConfig::default()).unwrap();
        let state = |values: serde_json::Value| -> ContactState {
            serde_json::from_value(serde_json::json!({
                "event_time_us": 1, "event_id": "e", "status_since_us": null,
                "values": values, "set_at": {},
            }))
            .unwrap()
        };
        let contacts = [
            (state(serde_json::json!({})), Counts::default()),
            (
                state(serde_json::json!({"status": "QUALIFIED", "utm_source": "google"})),
                Counts::default(),
            ),
            (
                state(serde_json::json!({"email": "a@gmail.com", "phone_number": "+1"})),
                Counts {
                    booked: 1,
                    held: 1,
                    ..Counts::default()
                },
            ),
        ];
        let all: Vec<Evaluation> = contacts
            .iter()
            .map(|(s, c)| rules.evaluate_contact(s, c))
            .collect();
        assert!(all[0] != all[1] && all[1] != all[2] && all[0] != all[2]);
        // Past 128 rules there is no mask: the evaluation is made afresh, `last` handed back.
        let many = Rules::new(&ScoringConfig {
            rules: (0..130)
                .flat_map(|i| {
                    default_rules().into_iter().map(move |mut r| {
                        r.id = format!("{}-{i}", r.id);
                        r
                    })
                })
                .collect(),
            ..ScoringConfig::default()
        })
        .unwrap();
        for (s, c) in &contacts {
            let fresh = many.evaluate_contact(s, c);
            assert_eq!(
                many.reevaluate_contact(s, c, Some(fresh.clone())),
                (fresh.clone(), Some(fresh))
            );
        }
        for ((s, c), want) in contacts.iter().zip(&all) {
            assert_eq!(rules.reevaluate_contact(s, c, None), (want.clone(), None));
            assert_eq!(
                rules.reevaluate_contact(s, c, Some(want.clone())),
                (want.clone(), None)
            );
            for other in all.iter().filter(|e| *e != want) {
                assert_eq!(
                    rules.reevaluate_contact(s, c, Some(other.clone())),
                    (want.clone(), Some(other.clone()))
                );
            }
            // The same score and band for other reasons is a new evaluation.
            let mut reasons = want.clone();
            reasons.matched.push(("retired rule".into(), 0));
            assert_eq!(
                rules.reevaluate_contact(s, c, Some(reasons.clone())),
                (want.clone(), Some(reasons))
            );
        }
    }

    #[test]
    fn malformed_rules_are_refused_with_their_id() {
        let r = "id = \"x\"\npoints = 1\n";
        let cases = [
            (format!("{r}equals = \"a\""), RuleError::Subject("x".into())),
            (
                format!("{r}attribute = \"a\"\ncount = \"won\"\ngreater_than = 0"),
                RuleError::Subject("x".into()),
            ),
            (
                format!("{r}attribute = \"a\""),
                RuleError::AttributeTest("x".into()),
            ),
            (
                format!("{r}attribute = \"a\"\nequals = \"a\"\nexists = true"),
                RuleError::AttributeTest("x".into()),
            ),
            (
                format!("{r}count = \"won\""),
                RuleError::CountTest("x".into()),
            ),
            (
                format!("{r}count = \"won\"\nequals = \"1\""),
                RuleError::CountTest("x".into()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(rule(&text).unwrap_err(), expected, "{text}");
        }
        let bad = rule(&format!("{r}attribute = \"a\"\nmatches = \"(\"")).unwrap_err();
        assert!(matches!(bad, RuleError::Regex(id, _) if id == "x"));
        let twice = ScoringConfig {
            rules: vec![default_rules()[0].clone(), default_rules()[0].clone()],
            ..ScoringConfig::default()
        };
        assert_eq!(
            Rules::new(&twice).unwrap_err(),
            RuleError::Id("qualified".into())
        );
    }

    #[test]
    fn scores_are_clamped_and_banded() {
        let rules = Rules::new(&ScoringConfig::default()).unwrap();
        let of = |points| rules.scored(Vec::new(), points, 0.0);
        assert_eq!((of(-100).score, of(-100).band.as_str()), (0, "cold"));
        assert_eq!((of(29).score, of(29).band.as_str()), (29, "cold"));
        assert_eq!((of(30).score, of(30).band.as_str()), (30, "warm"));
        assert_eq!((of(60).score, of(60).band.as_str()), (60, "hot"));
        assert_eq!((of(250).score, of(250).band.as_str()), (100, "hot"));
        // The points are kept unclamped.
        assert_eq!(of(250).points, 250);
        let bad = |c: ScoringConfig| Rules::new(&c).unwrap_err();
        let base = ScoringConfig::default;
        assert_eq!(
            bad(ScoringConfig {
                min_score: 5,
                max_score: 1,
                ..base()
            }),
            RuleError::Range(5, 1)
        );
        assert_eq!(
            bad(ScoringConfig {
                bands: vec![],
                ..base()
            }),
            RuleError::Bands
        );
        let mut unordered = base();
        unordered.bands.swap(0, 1);
        assert_eq!(bad(unordered), RuleError::Bands);
        assert_eq!(
            bad(ScoringConfig {
                half_life_days: -1.0,
                ..base()
            }),
            RuleError::HalfLife(-1.0)
        );
    }

    #[test]
    fn the_default_rules_score_a_funnel() {
        let rules = Rules::new(&ScoringConfig::default()).unwrap();
        let attrs: BTreeMap<&str, &str> = [
            ("status", "QUALIFIED"),
            ("utm_source", "google"),
            ("email", "lead@gmail.com"),
        ]
        .into();
        let counts = Counts {
            booked: 1,
            held: 1,
            ..Counts::default()
        };
        let e = rules.evaluate(|k| attrs.get(k).copied(), &counts);
        let ids: Vec<&str> = e.matched.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            ["qualified", "paid_source", "free_mail", "booked", "held"]
        );
        assert_eq!((e.points, e.score, e.band.as_str()), (80, 80, "hot"));
    }

    #[test]
    fn decay_halves_points_every_half_life() {
        assert_eq!(decay(80, 0.0, 7.0), 80);
        assert_eq!(decay(80, 7.0, 7.0), 40);
        assert_eq!(decay(80, 14.0, 7.0), 20);
        assert_eq!(decay(80, 3.5, 7.0), 57); // 80 / sqrt(2) = 56.57
        assert_eq!(decay(-30, 7.0, 7.0), -15);
        assert_eq!(decay(80, 100.0, 0.0), 80, "a half-life of 0 is off");
        let rules = Rules::new(&ScoringConfig {
            half_life_days: 7.0,
            ..ScoringConfig::default()
        })
        .unwrap();
        let fresh = rules.scored(vec![("won".into(), 80)], 80, 0.0);
        assert_eq!(fresh.band, "hot");
        let idle = rules.decayed(&fresh, 7.0);
        assert_eq!((idle.score, idle.band.as_str()), (40, "warm"));
        assert_eq!(idle.matched, fresh.matched);
    }
}
