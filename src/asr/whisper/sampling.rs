//! Small numeric helpers over logits: top-k, argmax, temperature sampling, log-softmax.

use rand::Rng;
use rand::rngs::StdRng;
/// The `k` largest finite values of `row`, largest first.
pub(super) fn top_k(row: &[f32], k: usize, out: &mut Vec<(f32, usize)>) {
    out.clear();
    if k == 0 {
        return;
    }
    // Entry bar: the smallest kept value once `k` are kept; one compare per logit.
    let mut bar = f32::NEG_INFINITY;
    for (i, &x) in row.iter().enumerate() {
        if x <= bar {
            continue;
        }
        let at = out.iter().position(|&(y, _)| x > y).unwrap_or(out.len());
        if out.len() == k {
            out.pop();
        }
        out.insert(at, (x, i));
        if out.len() == k
            && let Some(&(smallest, _)) = out.last()
        {
            bar = smallest;
        }
    }
}

pub(super) fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |acc, (i, &v)| {
            if v > acc.1 { (i, v) } else { acc }
        })
        .0
}

/// A draw from softmax(row / temperature).
pub(super) fn sample(row: &[f32], temperature: f32, rng: &mut StdRng) -> usize {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return argmax(row);
    }
    let weight = |x: f32| f64::from((x - max) / temperature).exp();
    let total: f64 = row.iter().map(|&x| weight(x)).sum();
    let mut target = rng.random::<f64>() * total;
    for (i, &x) in row.iter().enumerate() {
        let w = weight(x);
        if w > 0.0 && target < w {
            return i;
        }
        target -= w;
    }
    argmax(row)
}

pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let log_sum = log_sum_exp(logits);
    logits.iter().map(|v| v - log_sum).collect()
}

pub(super) fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

pub(super) fn softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    logits
        .get(index)
        .map(|v| (v - max).exp() / sum)
        .unwrap_or(0.0)
}
