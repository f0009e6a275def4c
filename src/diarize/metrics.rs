//! RTTM reading and writing, and the diarization error rate (frame-level, optional collar,
//! optimal one-to-one speaker mapping).

use std::collections::BTreeMap;

/// One speaker turn: seconds and a label.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub start: f64,
    pub end: f64,
    pub speaker: String,
}

/// RTTM `SPEAKER` lines for `file_id`, one per turn, in time order.
pub fn write_rttm(file_id: &str, turns: &[Turn]) -> String {
    let file_id: String = file_id
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    let mut sorted: Vec<&Turn> = turns.iter().collect();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start));
    sorted
        .iter()
        .map(|t| {
            format!(
                "SPEAKER {file_id} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>\n",
                t.start,
                (t.end - t.start).max(0.0),
                t.speaker
            )
        })
        .collect()
}

/// Parses the `SPEAKER` lines of an RTTM file (other line types are skipped).
pub fn parse_rttm(text: &str) -> Result<Vec<Turn>, String> {
    let mut turns = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() != Some(&"SPEAKER") {
            continue;
        }
        if fields.len() < 8 {
            return Err(format!("line {}: too few fields", index + 1));
        }
        let number = |s: &str| {
            s.parse::<f64>()
                .map_err(|_| format!("line {}: `{s}` is not a number", index + 1))
        };
        let start = number(fields[3])?;
        let duration = number(fields[4])?;
        turns.push(Turn {
            start,
            end: start + duration,
            speaker: fields[7].to_owned(),
        });
    }
    Ok(turns)
}

#[derive(Debug, Clone, PartialEq)]
pub struct DerReport {
    /// (missed + false alarm + confusion) / reference speech, all in seconds.
    pub der: f64,
    pub missed: f64,
    pub false_alarm: f64,
    pub confusion: f64,
    pub reference_speech: f64,
    /// Hypothesis label -> reference label, the mapping that maximises matched time.
    pub mapping: BTreeMap<String, String>,
}

const FRAME: f64 = 0.01;

fn labels(turns: &[Turn]) -> Vec<String> {
    let mut out: Vec<String> = turns.iter().map(|t| t.speaker.clone()).collect();
    out.sort();
    out.dedup();
    out
}

fn activity(turns: &[Turn], names: &[String], frames: usize) -> Vec<Vec<bool>> {
    let mut grid = vec![vec![false; frames]; names.len()];
    for t in turns {
        let s = names.iter().position(|n| *n == t.speaker).unwrap_or(0);
        let a = ((t.start / FRAME).round().max(0.0) as usize).min(frames);
        let b = ((t.end / FRAME).round().max(0.0) as usize).min(frames);
        grid[s][a..b.max(a)].iter_mut().for_each(|x| *x = true);
    }
    grid
}

/// Maximum-weight one-to-one assignment of rows to columns (dynamic programming over the
/// subsets of the smaller side, exact up to 16 of them; greedy beyond).
pub fn best_assignment(weights: &[Vec<f64>]) -> Vec<Option<usize>> {
    let rows = weights.len();
    let cols = weights.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    if cols > rows {
        let transposed: Vec<Vec<f64>> = (0..cols)
            .map(|c| (0..rows).map(|r| weights[r][c]).collect())
            .collect();
        let by_col = best_assignment(&transposed);
        let mut out = vec![None; rows];
        for (c, r) in by_col.iter().enumerate() {
            if let Some(r) = r {
                out[*r] = Some(c);
            }
        }
        return out;
    }
    if cols > 16 {
        let mut out = vec![None; rows];
        let mut pairs: Vec<(usize, usize)> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .collect();
        pairs.sort_by(|a, b| weights[b.0][b.1].total_cmp(&weights[a.0][a.1]));
        let mut used = vec![false; cols];
        for (r, c) in pairs {
            if out[r].is_none() && !used[c] {
                out[r] = Some(c);
                used[c] = true;
            }
        }
        return out;
    }
    // cols <= rows: every column is taken by one row (or the rest left unmatched).
    let states = 1usize << cols;
    let mut best = vec![vec![f64::NEG_INFINITY; states]; rows + 1];
    let mut choice = vec![vec![usize::MAX; states]; rows + 1];
    best[0][0] = 0.0;
    for r in 0..rows {
        for mask in 0..states {
            let here = best[r][mask];
            if here == f64::NEG_INFINITY {
                continue;
            }
            if here > best[r + 1][mask] {
                best[r + 1][mask] = here;
                choice[r + 1][mask] = usize::MAX;
            }
            for (c, weight) in weights[r].iter().enumerate() {
                if mask & (1 << c) == 0 {
                    let next = mask | (1 << c);
                    let value = here + weight;
                    if value > best[r + 1][next] {
                        best[r + 1][next] = value;
                        choice[r + 1][next] = c;
                    }
                }
            }
        }
    }
    let (mut mask, _) = best[rows]
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(m, v)| (m, *v))
        .unwrap_or((0, 0.0));
    let mut out = vec![None; rows];
    for r in (1..=rows).rev() {
        let c = choice[r][mask];
        if c != usize::MAX {
            out[r - 1] = Some(c);
            mask &= !(1 << c);
        }
    }
    out
}

/// Frame-level DER (10 ms frames) over the span of both annotations. `collar` seconds on each
/// side of every reference boundary are not scored (NIST md-eval's convention: 0.25 means ±0.25).
pub fn der(reference: &[Turn], hypothesis: &[Turn], collar: f64) -> DerReport {
    let end = reference
        .iter()
        .chain(hypothesis)
        .map(|t| t.end)
        .fold(0.0f64, f64::max);
    let frames = (end / FRAME).ceil() as usize + 1;
    let ref_names = labels(reference);
    let hyp_names = labels(hypothesis);
    let r = activity(reference, &ref_names, frames);
    let h = activity(hypothesis, &hyp_names, frames);
    let mut scored = vec![true; frames];
    if collar > 0.0 {
        for t in reference {
            for edge in [t.start, t.end] {
                let a = (((edge - collar) / FRAME).round().max(0.0) as usize).min(frames);
                let b = (((edge + collar) / FRAME).round().max(0.0) as usize).min(frames);
                scored[a..b].iter_mut().for_each(|s| *s = false);
            }
        }
    }
    let mut overlap = vec![vec![0f64; hyp_names.len()]; ref_names.len()];
    for (ri, rrow) in r.iter().enumerate() {
        for (hi, hrow) in h.iter().enumerate() {
            overlap[ri][hi] = (0..frames)
                .filter(|&f| scored[f] && rrow[f] && hrow[f])
                .count() as f64;
        }
    }
    let assignment = best_assignment(&overlap);
    let mut mapping = BTreeMap::new();
    for (ri, hi) in assignment.iter().enumerate() {
        if let Some(hi) = hi {
            mapping.insert(hyp_names[*hi].clone(), ref_names[ri].clone());
        }
    }
    let (mut missed, mut false_alarm, mut confusion, mut total) = (0usize, 0usize, 0usize, 0usize);
    for f in (0..frames).filter(|&f| scored[f]) {
        let n_ref = r.iter().filter(|row| row[f]).count();
        let n_hyp = h.iter().filter(|row| row[f]).count();
        let correct = assignment
            .iter()
            .enumerate()
            .filter(|(ri, hi)| r[*ri][f] && hi.is_some_and(|hi| h[hi][f]))
            .count();
        total += n_ref;
        missed += n_ref.saturating_sub(n_hyp);
        false_alarm += n_hyp.saturating_sub(n_ref);
        confusion += n_ref.min(n_hyp) - correct;
    }
    let secs = |n: usize| n as f64 * FRAME;
    DerReport {
        der: if total == 0 {
            if missed + false_alarm + confusion == 0 {
                0.0
            } else {
                1.0
            }
        } else {
            (missed + false_alarm + confusion) as f64 / total as f64
        },
        missed: secs(missed),
        false_alarm: secs(false_alarm),
        confusion: secs(confusion),
        reference_speech: secs(total),
        mapping,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(start: f64, end: f64, speaker: &str) -> Turn {
        Turn {
            start,
            end,
            speaker: speaker.to_owned(),
        }
    }

    #[test]
    fn rttm_round_trips() {
        let turns = vec![turn(0.5, 2.25, "SPEAKER_00"), turn(2.0, 4.0, "SPEAKER_01")];
        let text = write_rttm("my file", &turns);
        assert!(text.starts_with("SPEAKER my_file 1 0.500 1.750 <NA> <NA> SPEAKER_00"));
        let back = parse_rttm(&text).unwrap();
        assert_eq!(back.len(), 2);
        assert!((back[1].end - 4.0).abs() < 1e-9 && back[1].speaker == "SPEAKER_01");
        assert!(parse_rttm("SPEAKER f 1 x 1 <NA> <NA> a").is_err());
    }

    #[test]
    fn renamed_speakers_score_zero_and_swaps_are_found() {
        let reference = vec![turn(0.0, 5.0, "alice"), turn(5.0, 10.0, "bob")];
        let hypothesis = vec![turn(0.0, 5.0, "B"), turn(5.0, 10.0, "A")];
        let report = der(&reference, &hypothesis, 0.0);
        assert!(report.der.abs() < 1e-9);
        assert_eq!(report.mapping["B"], "alice");
    }

    #[test]
    fn miss_false_alarm_and_confusion_add_up() {
        // Reference: alice 0-4, bob 4-8. Hypothesis: X 0-3 (1 s missed), Y 3-8 (1 s confused),
        // X again 8-9 (1 s false alarm).
        let reference = vec![turn(0.0, 4.0, "alice"), turn(4.0, 8.0, "bob")];
        let hypothesis = vec![
            turn(0.0, 3.0, "X"),
            turn(3.0, 8.0, "Y"),
            turn(8.0, 9.0, "X"),
        ];
        let report = der(&reference, &hypothesis, 0.0);
        assert!((report.confusion - 1.0).abs() < 0.02, "{report:?}");
        assert!(report.missed.abs() < 0.02);
        assert!((report.false_alarm - 1.0).abs() < 0.02);
        assert!((report.der - 2.0 / 8.0).abs() < 0.01);
        // Everything wrong here lies within 0.25 s of a boundary only for the boundary at 4 s,
        // so a collar does not remove the 1 s errors; a 1 s collar removes most of them.
        let collared = der(&reference, &hypothesis, 0.25);
        assert!(collared.der > 0.2 && collared.der < report.der + 0.05);
        let wide = der(&reference, &hypothesis, 1.0);
        assert!(wide.der < 0.05, "{wide:?}");
    }

    #[test]
    fn overlap_counts_each_reference_speaker() {
        let reference = vec![turn(0.0, 4.0, "a"), turn(2.0, 4.0, "b")];
        let hypothesis = vec![turn(0.0, 4.0, "x")];
        let report = der(&reference, &hypothesis, 0.0);
        assert!((report.reference_speech - 6.0).abs() < 0.02);
        assert!((report.missed - 2.0).abs() < 0.02);
        assert!((report.der - 2.0 / 6.0).abs() < 0.01);
    }

    #[test]
    fn assignment_is_optimal_not_greedy() {
        // Greedy takes (0,0)=10 then (1,1)=1: 11. Optimal: (0,1)+(1,0) = 9+9 = 18.
        let w = vec![vec![10.0, 9.0], vec![9.0, 1.0]];
        assert_eq!(best_assignment(&w), vec![Some(1), Some(0)]);
        let wide = vec![vec![1.0, 5.0, 2.0]];
        assert_eq!(best_assignment(&wide), vec![Some(1)]);
    }
}
