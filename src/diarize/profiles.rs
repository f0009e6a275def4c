//! Matching a file's speakers against stored voice profiles by cosine similarity (pure: the
//! caller loads the profiles and stores the decisions).

use super::embedding::cosine;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchThresholds {
    /// At or above: assigned to the profile without asking.
    pub auto_assign: f32,
    /// At or above (and below `auto_assign`): offered as a suggestion.
    pub suggest: f32,
}

impl Default for MatchThresholds {
    fn default() -> Self {
        Self {
            auto_assign: 0.75,
            suggest: 0.50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchDecision {
    Assigned,
    Suggested,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileMatch {
    /// Index of the speaker in the input.
    pub speaker: usize,
    /// The most similar profile, if there is any profile at all.
    pub profile_id: Option<String>,
    /// True cosine similarity to that profile's centroid (what users are shown).
    pub cosine: f32,
    pub decision: MatchDecision,
}

/// For each speaker centroid, the best profile, its cosine and the decision. Two speakers of one
/// file are different people: when both would be assigned the same profile, only the more
/// similar one is, and the other is downgraded to a suggestion.
pub fn match_profiles(
    speakers: &[Vec<f32>],
    profiles: &[(String, Vec<f32>)],
    thresholds: MatchThresholds,
) -> Vec<ProfileMatch> {
    let decide = |c: f32| {
        if c >= thresholds.auto_assign {
            MatchDecision::Assigned
        } else if c >= thresholds.suggest {
            MatchDecision::Suggested
        } else {
            MatchDecision::None
        }
    };
    let mut matches: Vec<ProfileMatch> = speakers
        .iter()
        .enumerate()
        .map(|(speaker, centroid)| {
            let best = profiles
                .iter()
                .map(|(id, p)| (id, cosine(centroid, p)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((id, c)) => ProfileMatch {
                    speaker,
                    profile_id: Some(id.clone()),
                    cosine: c,
                    decision: decide(c),
                },
                None => ProfileMatch {
                    speaker,
                    profile_id: None,
                    cosine: 0.0,
                    decision: MatchDecision::None,
                },
            }
        })
        .collect();
    for i in 0..matches.len() {
        for j in 0..matches.len() {
            if i != j
                && matches[i].decision == MatchDecision::Assigned
                && matches[j].decision == MatchDecision::Assigned
                && matches[i].profile_id == matches[j].profile_id
                && (matches[j].cosine > matches[i].cosine
                    || (matches[j].cosine == matches[i].cosine && j < i))
            {
                matches[i].decision = MatchDecision::Suggested;
            }
        }
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(angle_deg: f32) -> Vec<f32> {
        let a = angle_deg.to_radians();
        vec![a.cos(), a.sin(), 0.0]
    }

    #[test]
    fn thresholds_split_assigned_suggested_and_none() {
        // cos 30° = 0.866, cos 50° = 0.643, cos 70° = 0.342.
        let profiles = vec![("p".to_owned(), unit(0.0))];
        let speakers = vec![unit(30.0), unit(50.0), unit(70.0), unit(-41.4)];
        let m = match_profiles(&speakers, &profiles, MatchThresholds::default());
        assert_eq!(m[0].decision, MatchDecision::Assigned);
        assert!((m[0].cosine - 30f32.to_radians().cos()).abs() < 1e-5);
        // Only one speaker of a file may be assigned to a profile: the second is a suggestion.
        assert_eq!(m[1].decision, MatchDecision::Suggested);
        assert_eq!(m[2].decision, MatchDecision::None);
        assert_eq!(m[2].profile_id.as_deref(), Some("p"));
        // cos 41.4° = 0.7501: assigned on its own, but the 30° speaker is closer.
        assert_eq!(m[3].decision, MatchDecision::Suggested);
    }

    #[test]
    fn the_nearest_profile_wins_and_no_profiles_means_none() {
        let profiles = vec![("a".to_owned(), unit(0.0)), ("b".to_owned(), unit(90.0))];
        let m = match_profiles(
            &[unit(80.0), unit(10.0)],
            &profiles,
            MatchThresholds::default(),
        );
        assert_eq!(m[0].profile_id.as_deref(), Some("b"));
        assert_eq!(m[1].profile_id.as_deref(), Some("a"));
        assert!(m.iter().all(|x| x.decision == MatchDecision::Assigned));
        let none = match_profiles(&[unit(0.0)], &[], MatchThresholds::default());
        assert_eq!(none[0].decision, MatchDecision::None);
        assert_eq!(none[0].profile_id, None);
    }
}
