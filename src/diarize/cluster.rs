//! Agglomerative clustering of speaker embeddings (average linkage on cosine distance), cut at a
//! threshold or at a requested number of speakers, small clusters folded into large ones, then a
//! final reassignment of every embedding to its nearest centroid.

use super::embedding::{cosine, normalise};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterOptions {
    /// Merging stops when the nearest two clusters are at least this cosine distance apart
    /// (average over their members' pairs).
    pub threshold: f32,
    pub num_speakers: Option<usize>,
    pub min_speakers: usize,
    pub max_speakers: usize,
    /// Without a fixed count, a cluster whose embeddings' weights (seconds of speech) add up to
    /// less than this is folded into its nearest large cluster (stray embeddings of noise or
    /// overlap do not make a speaker, while a quiet participant of a long meeting still does).
    pub min_cluster_weight: f32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            num_speakers: None,
            min_speakers: 1,
            max_speakers: 20,
            min_cluster_weight: 2.0,
        }
    }
}

/// One merge of the dendrogram: cluster `absorbed` joined `kept` at `distance`.
#[derive(Debug, Clone, Copy)]
struct Merge {
    kept: usize,
    absorbed: usize,
    distance: f32,
}

/// Average-linkage (UPGMA) dendrogram on cosine distance, by the nearest-neighbour chain
/// (O(n²) time and memory); merges sorted by distance.
fn dendrogram(embeddings: &[Vec<f32>]) -> Vec<Merge> {
    let n = embeddings.len();
    let mut dist = vec![0f32; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let d = 1.0 - cosine(&embeddings[i], &embeddings[j]);
            dist[i * n + j] = d;
            dist[j * n + i] = d;
        }
    }
    let mut size = vec![1f32; n];
    let mut active = vec![true; n];
    let mut chain: Vec<usize> = Vec::new();
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    for _ in 1..n {
        if chain.is_empty() {
            chain.extend((0..n).find(|&i| active[i]));
        }
        // Follow nearest neighbours until two clusters are each other's nearest.
        let (a, b) = loop {
            let a = chain[chain.len() - 1];
            let previous = chain.len().checked_sub(2).map(|i| chain[i]);
            let mut best = previous.map_or((usize::MAX, f32::INFINITY), |p| (p, dist[a * n + p]));
            for j in 0..n {
                if j != a && active[j] && dist[a * n + j] < best.1 {
                    best = (j, dist[a * n + j]);
                }
            }
            if Some(best.0) == previous {
                chain.truncate(chain.len() - 2);
                break (best.0, a);
            }
            chain.push(best.0);
        };
        let distance = dist[a * n + b];
        let (size_a, size_b) = (size[a], size[b]);
        for k in 0..n {
            if active[k] && k != a && k != b {
                let d = (size_a * dist[a * n + k] + size_b * dist[b * n + k]) / (size_a + size_b);
                dist[a * n + k] = d;
                dist[k * n + a] = d;
            }
        }
        active[b] = false;
        size[a] += size_b;
        merges.push(Merge {
            kept: a,
            absorbed: b,
            distance,
        });
    }
    merges.sort_by(|x, y| x.distance.total_cmp(&y.distance));
    merges
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Weighted mean direction of the members of each label, L2-normalised.
pub fn centroids(
    embeddings: &[Vec<f32>],
    weights: &[f32],
    labels: &[usize],
    k: usize,
) -> Vec<Vec<f32>> {
    let dim = embeddings.first().map_or(0, Vec::len);
    let mut sums = vec![vec![0f32; dim]; k];
    for ((e, w), &l) in embeddings.iter().zip(weights).zip(labels) {
        for (s, x) in sums[l].iter_mut().zip(e) {
            *s += x * w;
        }
    }
    sums.iter_mut().for_each(|s| normalise(s));
    sums
}

fn nearest_centroid(embedding: &[f32], centroids: &[Vec<f32>]) -> usize {
    centroids
        .iter()
        .enumerate()
        .max_by(|a, b| cosine(embedding, a.1).total_cmp(&cosine(embedding, b.1)))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Clusters L2-normalised embeddings (weights: seconds of speech behind each) and returns the
/// centroids of the speakers found, L2-normalised. Empty input gives no speakers.
pub fn cluster(
    embeddings: &[Vec<f32>],
    weights: &[f32],
    options: &ClusterOptions,
) -> Vec<Vec<f32>> {
    let n = embeddings.len();
    if n == 0 {
        return Vec::new();
    }
    let min = options.min_speakers.max(1);
    let max = options.max_speakers.max(min);
    let merges = dendrogram(embeddings);
    let k = match options.num_speakers {
        Some(k) => k.max(1),
        None => {
            let below = merges
                .iter()
                .take_while(|m| m.distance < options.threshold)
                .count();
            (n - below).clamp(min, max)
        }
    }
    .min(n);
    let mut parent: Vec<usize> = (0..n).collect();
    for merge in merges.iter().take(n - k) {
        let a = find(&mut parent, merge.kept);
        let b = find(&mut parent, merge.absorbed);
        parent[b] = a;
    }
    let mut roots: Vec<usize> = Vec::new();
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let r = find(&mut parent, i);
        let label = roots.iter().position(|&x| x == r).unwrap_or_else(|| {
            roots.push(r);
            roots.len() - 1
        });
        labels.push(label);
    }
    let mut k = roots.len();
    let mut centres = centroids(embeddings, weights, &labels, k);

    if options.num_speakers.is_none() && k > min {
        let mut mass = vec![0f32; k];
        for (&l, w) in labels.iter().zip(weights) {
            mass[l] += w;
        }
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|a, b| mass[*b].total_cmp(&mass[*a]));
        // The `min` largest clusters always stay; beyond them only clusters with enough speech.
        let keep: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(rank, c)| *rank < min || mass[**c] >= options.min_cluster_weight)
            .map(|(_, c)| *c)
            .collect();
        if keep.len() < k {
            centres = keep.iter().map(|&c| centres[c].clone()).collect();
            k = centres.len();
        }
    }
    // Final reassignment: a few rounds of nearest-centroid updates (k-means on the sphere),
    // stopped before a round that would leave a speaker without any embedding.
    for _ in 0..3 {
        let labels: Vec<usize> = embeddings
            .iter()
            .map(|e| nearest_centroid(e, &centres))
            .collect();
        if (0..k).any(|c| !labels.contains(&c)) {
            break;
        }
        centres = centroids(embeddings, weights, &labels, k);
    }
    centres
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points scattered around `k` well-separated directions in 16 dimensions.
    fn blobs(k: usize, per: usize, spread: f32) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 10_000) as f32 / 10_000.0 - 0.5
        };
        let mut points = Vec::new();
        let mut truth = Vec::new();
        for c in 0..k {
            for _ in 0..per {
                let mut v: Vec<f32> = (0..16).map(|_| spread * rnd()).collect();
                v[c] += 1.0;
                normalise(&mut v);
                points.push(v);
                truth.push(c);
            }
        }
        (points, truth)
    }

    fn labels_of(points: &[Vec<f32>], centres: &[Vec<f32>]) -> Vec<usize> {
        points
            .iter()
            .map(|p| nearest_centroid(p, centres))
            .collect()
    }

    fn pure(labels: &[usize], truth: &[usize]) -> bool {
        // Same partition up to renaming.
        (0..labels.len())
            .all(|i| (0..labels.len()).all(|j| (labels[i] == labels[j]) == (truth[i] == truth[j])))
    }

    #[test]
    fn threshold_finds_the_number_of_blobs() {
        for k in 1..=5 {
            let (points, truth) = blobs(k, 12, 0.3);
            let weights = vec![1.0; points.len()];
            let centres = cluster(&points, &weights, &ClusterOptions::default());
            assert_eq!(centres.len(), k);
            assert!(pure(&labels_of(&points, &centres), &truth));
        }
    }

    #[test]
    fn counts_are_honoured() {
        let (points, _) = blobs(4, 10, 0.3);
        let weights = vec![1.0; points.len()];
        for n in 1..=6 {
            let options = ClusterOptions {
                num_speakers: Some(n),
                ..ClusterOptions::default()
            };
            assert_eq!(cluster(&points, &weights, &options).len(), n);
        }
        let at_most = ClusterOptions {
            max_speakers: 2,
            ..ClusterOptions::default()
        };
        assert_eq!(cluster(&points, &weights, &at_most).len(), 2);
        let at_least = ClusterOptions {
            min_speakers: 6,
            ..ClusterOptions::default()
        };
        assert_eq!(cluster(&points, &weights, &at_least).len(), 6);
        let (one, _) = blobs(1, 30, 0.3);
        let weights = vec![1.0; one.len()];
        assert_eq!(cluster(&one, &weights, &ClusterOptions::default()).len(), 1);
        assert!(cluster(&[], &[], &ClusterOptions::default()).is_empty());
    }

    #[test]
    fn average_linkage_merges_by_the_mean_pairwise_distance() {
        // Points on a circle at angles 0, 0.1, 1.0 and 1.2 (radians): first the two closest
        // pairs, then the pairs together at the mean of the four cross distances.
        let points: Vec<Vec<f32>> = [0.0f32, 0.1, 1.0, 1.2]
            .iter()
            .map(|a| vec![a.cos(), a.sin()])
            .collect();
        let merges = dendrogram(&points);
        assert_eq!(merges.len(), 3);
        let d = |a: f32| 1.0 - a.cos();
        assert!((merges[0].distance - d(0.1)).abs() < 1e-5);
        assert!((merges[1].distance - d(0.2)).abs() < 1e-5);
        let cross = (d(1.0) + d(1.2) + d(0.9) + d(1.1)) / 4.0;
        assert!((merges[2].distance - cross).abs() < 1e-5, "{merges:?}");
    }

    #[test]
    fn a_stray_embedding_does_not_become_a_speaker() {
        let (mut points, _) = blobs(2, 20, 0.3);
        let mut stray = vec![0f32; 16];
        stray[9] = 1.0;
        points.push(stray);
        let mut weights = vec![1.0; points.len()];
        *weights.last_mut().unwrap() = 0.5;
        assert_eq!(
            cluster(&points, &weights, &ClusterOptions::default()).len(),
            2
        );
    }
}
