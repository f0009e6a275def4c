//! Unit tests of the Whisper decoder helpers: repetition guard, top-k, sampling, alignment tree.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::decoding::AlignmentTree;
use super::sampling::{sample, top_k};
use super::*;

#[test]
fn repetition_guard_catches_loops_not_speech() {
    let mut tokens: Vec<i64> = vec![1, 2, 3];
    for _ in 0..3 {
        tokens.extend([7, 8, 9]);
    }
    assert!(!is_repetitive(&tokens[3..]), "three repeats are allowed");
    tokens.extend([7, 8, 9]);
    assert!(is_repetitive(&tokens));
    assert!(!is_repetitive(&[5; 19]));
    assert!(is_repetitive(&[5; 20]));
    // Two-token patterns ("no, no, no") aren't n-grams of 3 or more.
    assert!(!is_repetitive(&[4, 6, 4, 6, 4, 6, 4, 6, 4, 6]));
    assert!(!is_repetitive(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]));
}

#[test]
fn top_k_keeps_the_largest_finite_values_in_order() {
    let row = [0.5, f32::NEG_INFINITY, 3.0, -1.0, 2.0, 3.0];
    let mut out = Vec::new();
    top_k(&row, 3, &mut out);
    assert_eq!(out, vec![(3.0, 2), (3.0, 5), (2.0, 4)]);
    top_k(&row, 10, &mut out);
    assert_eq!(out.len(), 5);
}

#[test]
fn sampling_is_seeded_and_cold_sampling_is_greedy() {
    let row = [0.0, 1.0, 0.5, f32::NEG_INFINITY];
    let draws = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..50)
            .map(|_| sample(&row, 1.0, &mut rng))
            .collect::<Vec<_>>()
    };
    assert_eq!(draws(7), draws(7));
    assert!(draws(7).iter().all(|&i| i < 3));
    let mut rng = StdRng::seed_from_u64(1);
    assert!((0..20).all(|_| sample(&row, 1e-3, &mut rng) == 1));
}

#[test]
fn alignment_tree_paths_follow_parents() {
    let mut tree = AlignmentTree::default();
    tree.reset(2);
    let root = tree.push(None, &[0.0, 0.5]);
    let a = tree.push(Some(root), &[1.0, 1.5]);
    let b = tree.push(Some(root), &[2.0, 2.5]);
    let c = tree.push(Some(b), &[3.0, 3.5]);
    assert_eq!(
        tree.path(a, 2),
        vec![vec![vec![0.0], vec![0.5]], vec![vec![1.0], vec![1.5]]]
    );
    assert_eq!(tree.path(c, 1).len(), 3);
    assert_eq!(tree.path(c, 1)[1], vec![vec![2.0, 2.5]]);
}
