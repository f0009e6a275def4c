//! The attention side of word timing: choosing each token's attention rows, building
//! Whisper's alignment matrix (renormalise, standardise, median filter, mean over heads) and
//! the dynamic time warping that maps tokens to frames.

use super::FRAME_SECS;

/// Whisper's median filter width along frames.
const MEDIAN_WIDTH: usize = 7;

/// Number of encoder frames that hold real audio for a window of `window_secs`.
pub(super) fn window_frames(window_secs: f64) -> usize {
    if !window_secs.is_finite() || window_secs <= 0.0 {
        return 0;
    }
    // Saturating float→int conversion; the row length caps it anyway.
    (window_secs / FRAME_SECS).round() as usize
}

/// The attention rows for the text tokens at `positions` plus the closing row, for the longest
/// prefix of text tokens that has all of them. Empty when not even one token has its rows.
pub(super) fn select_rows<'a>(
    n_tokens: usize,
    alignment: &'a [Vec<Vec<f32>>],
    positions: &[usize],
) -> Vec<&'a [Vec<f32>]> {
    let predicted_by_index = alignment.len() > n_tokens;
    let predicting = |i: usize| -> Option<&'a [Vec<f32>]> {
        let row = if predicted_by_index {
            alignment.get(i)
        } else {
            i.checked_sub(1).and_then(|j| alignment.get(j))
        };
        row.map(Vec::as_slice)
    };
    let mut rows = Vec::with_capacity(positions.len() + 1);
    for (k, &position) in positions.iter().enumerate() {
        let row = predicting(position).or_else(|| {
            // Only the very first token may borrow its neighbour's row.
            if k == 0 {
                predicting(position + 1)
            } else {
                None
            }
        });
        match row {
            Some(row) => rows.push(row),
            None => break,
        }
    }
    // Close the last kept token with the row that predicted the token after it.
    while let Some(&last) = positions.get(rows.len().wrapping_sub(1)) {
        if let Some(closing) = predicting(last + 1) {
            rows.push(closing);
            return rows;
        }
        rows.pop();
    }
    Vec::new()
}

/// Row-major `rows × cols` matrix of token-to-frame alignment scores.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Matrix {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) data: Vec<f32>,
}

/// Whisper's alignment matrix: per head, each row renormalised over the window's frames,
/// standardised over tokens per frame, median-filtered along frames; then the heads' mean.
pub(super) fn attention_matrix(rows: &[&[Vec<f32>]], max_frames: usize) -> Option<Matrix> {
    let heads = rows.iter().map(|r| r.len()).min()?;
    let frames = rows
        .iter()
        .flat_map(|r| r.iter().take(heads).map(Vec::len))
        .min()?
        .min(max_frames);
    let n = rows.len();
    if heads == 0 || frames == 0 || n == 0 {
        return None;
    }
    let mut acc = vec![0.0f32; n * frames];
    let mut head_matrix = vec![0.0f32; n * frames];
    let mut sums = vec![0.0f64; frames];
    let mut squares = vec![0.0f64; frames];
    for head in 0..heads {
        for (dst, row) in head_matrix.chunks_exact_mut(frames).zip(rows) {
            let full = row.get(head).map(Vec::as_slice).unwrap_or(&[]);
            normalise_row(full, dst);
        }
        standardise_columns(&mut head_matrix, frames, &mut sums, &mut squares);
        for (src, dst) in head_matrix
            .chunks_exact(frames)
            .zip(acc.chunks_exact_mut(frames))
        {
            median_filter_add(src, dst);
        }
    }
    let scale = 1.0 / heads as f32;
    for v in &mut acc {
        *v *= scale;
    }
    Some(Matrix {
        rows: n,
        cols: frames,
        data: acc,
    })
}

/// Writes the attention over the first `dst.len()` frames of `full` as a distribution over
/// those frames: probabilities (non-negative, summing to about 1 over the whole row) are
/// renormalised, anything else is treated as scores and softmaxed. Non-finite values weigh 0.
pub(super) fn normalise_row(full: &[f32], dst: &mut [f32]) {
    let window = full.get(..dst.len()).unwrap_or(&[]);
    if window.len() != dst.len() {
        dst.fill(0.0);
        return;
    }
    let is_probability = full.iter().all(|v| v.is_finite() && *v >= 0.0) && {
        let total: f64 = full.iter().map(|v| f64::from(*v)).sum();
        (0.9..=1.1).contains(&total)
    };
    if is_probability {
        for (d, v) in dst.iter_mut().zip(window) {
            *d = *v;
        }
    } else {
        let max = window
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        for (d, v) in dst.iter_mut().zip(window) {
            *d = if v.is_finite() { (v - max).exp() } else { 0.0 };
        }
    }
    let total: f64 = dst.iter().map(|v| f64::from(*v)).sum();
    if total > 0.0 && total.is_finite() {
        let scale = (1.0 / total) as f32;
        for d in dst.iter_mut() {
            *d *= scale;
        }
    } else {
        dst.fill(1.0 / dst.len() as f32);
    }
}

/// `(x - mean) / std` over the token axis for every frame (population std; a constant column
/// becomes 0).
pub(super) fn standardise_columns(
    matrix: &mut [f32],
    frames: usize,
    sums: &mut [f64],
    squares: &mut [f64],
) {
    sums.fill(0.0);
    squares.fill(0.0);
    let mut n = 0usize;
    for row in matrix.chunks_exact(frames) {
        n += 1;
        for ((s, q), v) in sums.iter_mut().zip(squares.iter_mut()).zip(row) {
            let v = f64::from(*v);
            *s += v;
            *q += v * v;
        }
    }
    if n == 0 {
        return;
    }
    let n = n as f64;
    for (s, q) in sums.iter_mut().zip(squares.iter_mut()) {
        let mean = *s / n;
        let variance = (*q / n - mean * mean).max(0.0);
        let std = variance.sqrt();
        *s = mean;
        *q = if std > 1e-12 { 1.0 / std } else { 0.0 };
    }
    for row in matrix.chunks_exact_mut(frames) {
        for ((v, mean), inverse_std) in row.iter_mut().zip(sums.iter()).zip(squares.iter()) {
            *v = ((f64::from(*v) - mean) * inverse_std) as f32;
        }
    }
}

/// Adds the width-7 median of `src` (reflect-padded at the edges, as `F.pad(mode="reflect")`)
/// to `dst`. Rows too short to pad are added unfiltered, as Whisper does.
pub(super) fn median_filter_add(src: &[f32], dst: &mut [f32]) {
    let len = src.len();
    let half = MEDIAN_WIDTH / 2;
    if len <= half {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += *s;
        }
        return;
    }
    let last = len - 1;
    let mut window = [0.0f32; MEDIAN_WIDTH];
    for (j, d) in dst.iter_mut().enumerate().take(len) {
        for (k, slot) in window.iter_mut().enumerate() {
            // Position j + k - half, reflected into 0..len without repeating the edge.
            let offset = j + k;
            let index = if offset < half {
                half - offset
            } else if offset - half > last {
                2 * last + half - offset
            } else {
                offset - half
            };
            *slot = src.get(index).copied().unwrap_or(0.0);
        }
        window.sort_unstable_by(f32::total_cmp);
        *d += window[half];
    }
}

/// Dynamic time warping on `-matrix` (Whisper's `dtw_cpu` and `backtrace`), returning the
/// first frame of every row on the monotonic path from (0, 0) to (rows-1, cols-1).
pub(super) fn dtw_row_starts(matrix: &Matrix) -> Vec<usize> {
    let (n, m) = (matrix.rows, matrix.cols);
    let mut starts = vec![0usize; n];
    if n == 0 || m == 0 || matrix.data.len() != n * m {
        return starts;
    }
    let width = m + 1;
    let mut cost = vec![f64::INFINITY; (n + 1) * width];
    // 0: diagonal, 1: up (next token, same frame), 2: left (same token, next frame).
    let mut trace = vec![2u8; (n + 1) * width];
    cost[0] = 0.0;
    for i in 1..=n {
        let row = &matrix.data[(i - 1) * m..i * m];
        let (above, here) = cost.split_at_mut(i * width);
        let above = &above[(i - 1) * width..];
        let here = &mut here[..width];
        let trace_row = &mut trace[i * width..(i + 1) * width];
        for j in 1..=m {
            let c0 = above[j - 1];
            let c1 = above[j];
            let c2 = here[j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            let x = row[j - 1];
            let x = if x.is_finite() { f64::from(x) } else { 0.0 };
            here[j] = c - x;
            trace_row[j] = t;
        }
    }
    // Backtrace: row 0 of the table always moves left, column 0 always up.
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        if i > 0
            && let Some(s) = starts.get_mut(i - 1)
        {
            *s = j.saturating_sub(1);
        }
        let step = if i == 0 {
            2
        } else if j == 0 {
            1
        } else {
            trace[i * width + j]
        };
        match step {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    starts
}
