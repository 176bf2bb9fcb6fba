//! The decay pass: with `half_life_days` set, a contact's points halve every half-life without
//! activity; once a day `serve` rescores every contact and writes a `lead_scores` row for
//! those whose band the decay moved (a score that moves within its band writes none, so the
//! table does not grow by one row per contact per day).
//! Invariant: pure; a contact's points and matched rules are those of its last evaluation, only
//! the days since its last activity change.

use std::collections::HashMap;

use super::rules::Rules;
use super::{ScoreState, reasons};
use crate::flatten::LeadScoreRow;
use crate::flatten::table::{Micros, Text};

/// Microseconds in a day.
const DAY_US: f64 = 86_400e6;

/// The rows and next states of the contacts in `scores` whose band decay moved at `now_us`.
pub fn decay_pass(
    scores: &HashMap<i64, ScoreState>,
    rules: &Rules,
    now_us: i64,
) -> (Vec<LeadScoreRow>, super::Map<i64, ScoreState>) {
    let mut rows = Vec::new();
    let mut next = super::Map::default();
    if !rules.decays() {
        return (rows, next);
    }
    let mut ids: Vec<&i64> = scores.keys().collect();
    ids.sort();
    for id in ids {
        let state = &scores[id];
        let idle_days = (now_us - state.last_activity_us).max(0) as f64 / DAY_US;
        let decayed = rules.decayed(&state.evaluation, idle_days);
        if decayed.band == state.evaluation.band {
            continue;
        }
        let revision = state.revision + 1;
        rows.push(LeadScoreRow {
            event_id: Text::from(state.last_event_id.as_str()),
            event_type: Text::from("score_decay"),
            received_at: Micros(now_us),
            event_time: Micros(now_us),
            contact_id: Some(*id),
            revision,
            score: decayed.score,
            previous_score: Some(state.evaluation.score),
            band: Text::from(decayed.band.as_str()),
            previous_band: Some(Text::from(state.evaluation.band.as_str())),
            points: decayed.points,
            reasons: Text::from(reasons(&decayed).as_str()),
            last_activity_at: Micros(state.last_activity_us),
        });
        next.insert(
            *id,
            ScoreState {
                revision,
                evaluation: decayed,
                ..state.clone()
            },
        );
    }
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::rules::{Evaluation, ScoringConfig};

    fn state(points: i64, rules: &Rules, last_activity_us: i64) -> ScoreState {
        ScoreState {
            revision: 3,
            evaluation: rules.decayed(
                &Evaluation {
                    matched: vec![("won".into(), points)],
                    points,
                    score: 0,
                    band: String::new(),
                },
                0.0,
            ),
            last_activity_us,
            last_event_id: "e1".into(),
            last_event_type: "call_outcome".into(),
        }
    }

    #[test]
    fn only_contacts_whose_band_moved_get_a_row() {
        let rules = Rules::new(&ScoringConfig {
            half_life_days: 10.0,
            ..ScoringConfig::default()
        })
        .unwrap();
        let day = DAY_US as i64;
        let now = 100 * day;
        // 80 points (hot) idle 10 days: 40 (warm). 62 idle 1 day: 58 (warm). 35 idle 1 day:
        // 33, still warm: no row.
        let scores: HashMap<i64, ScoreState> = [
            (1, state(80, &rules, now - 10 * day)),
            (2, state(62, &rules, now - day)),
            (3, state(35, &rules, now - day)),
        ]
        .into();
        let (rows, next) = decay_pass(&scores, &rules, now);
        let got: Vec<(i64, i64, i64, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.contact_id.unwrap(),
                    r.revision,
                    r.score,
                    r.band.as_str(),
                    r.previous_band.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, [(1, 4, 40, "warm", "hot"), (2, 4, 58, "warm", "hot")]);
        assert_eq!(next[&1].evaluation.points, 80, "points are kept undecayed");
        assert_eq!(next.len(), 2);
        // A second pass the same day moves nothing more.
        let mut after = scores.clone();
        after.extend(next);
        assert!(decay_pass(&after, &rules, now).0.is_empty());
        // Decay off: nothing, whatever the idle time.
        let off = Rules::new(&ScoringConfig::default()).unwrap();
        assert!(decay_pass(&scores, &off, now * 10).0.is_empty());
    }
}
