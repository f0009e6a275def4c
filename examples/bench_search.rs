//! Search benchmark (run by `scripts/bench-search`): a synthetic corpus of transcripts indexed
//! through `SearchService`, then latency percentiles of each kind of query.
//!
//! Words are drawn Zipf-like from the English words of MiniLM's vocabulary (BERT's vocabulary
//! is roughly in frequency order), segments last 2–12 s at ~2.5 words/s, files 5 min–3 h with
//! 2–6 of a few hundred speakers. A sample of distinct chunks is embedded with the real model;
//! every other chunk gets a sampled real vector perturbed with noise and renormalised (embedding
//! ~500k chunks for real would take hours on two cores). Queries are embedded for real.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use opentranscribe::models::runtime::{Device, Runtime, RuntimeSettings};
use opentranscribe::search::vectors::chunk_segments;
use opentranscribe::search::{Embedder, FileDoc, Mode, SearchRequest, SearchService, SegmentDoc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Args {
    hours: f64,
    dir: PathBuf,
    models_dir: PathBuf,
    real_embeddings: usize,
    queries: usize,
    keep: bool,
    /// Reuse the index (and phrase list) a previous `--keep` run left in `dir`.
    reuse: bool,
    /// Only query kinds whose name contains one of these.
    only: Vec<String>,
    /// Threads per search (default: the service's default).
    search_threads: Option<usize>,
}

fn parse_args() -> Args {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut args = Args {
        hours: 10_000.0,
        dir: std::env::temp_dir().join("ot-bench-search"),
        models_dir: home.join(".cache/opentranscribe/models"),
        real_embeddings: 1000,
        queries: 200,
        keep: false,
        reuse: false,
        only: Vec::new(),
        search_threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--hours" => args.hours = value().parse().expect("--hours N"),
            "--dir" => args.dir = value().into(),
            "--models-dir" => args.models_dir = value().into(),
            "--real-embeddings" => args.real_embeddings = value().parse().expect("a number"),
            "--queries" => args.queries = value().parse().expect("a number"),
            "--keep" => args.keep = true,
            "--reuse" => {
                args.reuse = true;
                args.keep = true;
            }
            "--search-threads" => args.search_threads = Some(value().parse().expect("a number")),
            "--only" => args.only.extend(value().split(',').map(str::to_owned)),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// English words from the vocabulary, in (roughly) frequency order.
fn vocabulary(models_dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(models_dir.join("minilm-l6-v2/vocab.txt"))
        .expect("minilm-l6-v2/vocab.txt in the model cache");
    text.lines()
        .skip(1996)
        .filter(|w| w.len() > 1 && w.chars().all(|c| c.is_ascii_lowercase()))
        .map(str::to_owned)
        .take(25_000)
        .collect()
}

/// Zipf(1.0) sampler over ranks by inverse CDF on a precomputed table.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut cumulative = Vec::with_capacity(n);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += 1.0 / rank as f64;
            cumulative.push(sum);
        }
        Self { cumulative }
    }
    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = *self.cumulative.last().unwrap();
        let x = rng.random::<f64>() * total;
        self.cumulative.partition_point(|c| *c < x)
    }
}

struct Corpus {
    words: Vec<String>,
    zipf: Zipf,
    speakers: Vec<String>,
    users: usize,
    tags: Vec<String>,
}

impl Corpus {
    fn sentence(&self, rng: &mut StdRng, n: usize, out: &mut String) {
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&self.words[self.zipf.sample(rng)]);
        }
    }

    fn file(&self, rng: &mut StdRng, index: usize, seconds: f64) -> FileDoc {
        let owner = rng.random_range(0..self.users);
        let mut readers = vec![format!("user{owner}"), "auditor".to_owned()];
        let mut collections = Vec::new();
        if rng.random_bool(0.3) {
            collections.push(format!("col{}", rng.random_range(0..100)));
            for _ in 0..5 {
                readers.push(format!("user{}", rng.random_range(0..self.users)));
            }
        }
        let n_speakers = rng.random_range(2..=6);
        let speakers: Vec<&String> = (0..n_speakers)
            .map(|_| &self.speakers[rng.random_range(0..self.speakers.len())])
            .collect();
        let mut segments = Vec::new();
        let mut t = 0.0;
        let mut speaker = 0;
        while t < seconds {
            let length = rng.random_range(2.0..12.0);
            let n_words = ((length * rng.random_range(2.0..3.0)) as usize).max(1);
            let mut text = String::new();
            self.corpus_text(rng, n_words, &mut text);
            if rng.random_bool(0.3) {
                speaker = rng.random_range(0..speakers.len());
            }
            segments.push(SegmentDoc {
                segment_id: segments.len(),
                start: t,
                end: t + length,
                speaker: Some(speakers[speaker].clone()),
                text,
            });
            t += length + rng.random_range(0.0..0.8);
        }
        let languages = ["en", "en", "en", "en", "en", "en", "en", "fr", "de", "es"];
        FileDoc {
            file_id: format!("file{index:06}"),
            version: 1,
            owner_id: format!("user{owner}"),
            readers,
            collections,
            filename: format!("recording-{index}.mp3"),
            language: languages[rng.random_range(0..languages.len())].to_owned(),
            tags: vec![self.tags[rng.random_range(0..self.tags.len())].clone()],
            uploaded_at: 1_600_000_000 + rng.random_range(0..100_000_000),
            media_type: if rng.random_bool(0.2) {
                "video/mp4"
            } else {
                "audio/mpeg"
            }
            .to_owned(),
            duration: seconds,
            segments,
            summary: None,
        }
    }

    fn corpus_text(&self, rng: &mut StdRng, n: usize, out: &mut String) {
        self.sentence(rng, n, out);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn perturb(rng: &mut StdRng, base: &[f32], noise: f32) -> Vec<f32> {
    let mut v: Vec<f32> = base
        .iter()
        .map(|x| {
            // Box–Muller normal noise.
            let u1: f32 = rng.random_range(1e-7..1.0);
            let u2: f32 = rng.random();
            x + noise * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn main() {
    let args = parse_args();
    let words = vocabulary(&args.models_dir);
    let corpus = Corpus {
        zipf: Zipf::new(words.len()),
        words,
        speakers: (0..300).map(|i| format!("Speaker {i}")).collect(),
        users: 200,
        tags: (0..50).map(|i| format!("tag{i}")).collect(),
    };
    let runtime = Runtime::get_or_init(&RuntimeSettings {
        library: None,
        models_dir: args.models_dir.clone(),
        device: Device::Cpu,
        device_id: 0,
        threads: 0,
        spin: false,
    })
    .expect("ONNX Runtime");
    let embedder = Embedder::load(&runtime, &args.models_dir.join("minilm-l6-v2")).expect("MiniLM");

    // Real vectors for a sample of distinct synthetic chunks.
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    let mut sample_texts = Vec::new();
    'sample: for i in 0.. {
        let file = corpus.file(&mut rng, i, 1200.0);
        for chunk in chunk_segments(&file.segments) {
            sample_texts.push(chunk.text);
            if sample_texts.len() == args.real_embeddings {
                break 'sample;
            }
        }
    }
    let refs: Vec<&str> = sample_texts.iter().map(String::as_str).collect();
    let real_vectors = embedder.embed(&refs).expect("embedding");
    let embed_seconds = started.elapsed().as_secs_f64();
    println!(
        "embedded {} real chunks in {:.1} s ({:.1} ms/chunk, {} threads)",
        real_vectors.len(),
        embed_seconds,
        embed_seconds * 1000.0 / real_vectors.len() as f64,
        runtime.intra_threads
    );

    let phrases_path = args.dir.with_extension("phrases");
    if args.reuse && args.dir.join("meta.json").exists() && phrases_path.exists() {
        let started = Instant::now();
        let mut service = SearchService::open(&args.dir, Some(embedder)).expect("open index");
        if let Some(threads) = args.search_threads {
            service.set_search_threads(threads);
        }
        assert_eq!(
            *service.opened(),
            opentranscribe::search::Opened::Existing,
            "--reuse needs an index of the current schema (run once with --keep)"
        );
        let phrases: Vec<(String, String)> = std::fs::read_to_string(&phrases_path)
            .expect("phrases")
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(o, p)| (p.to_owned(), o.to_owned()))
            .collect();
        let stats = service.stats();
        println!(
            "reused the index in {} (opened with vector load in {:.1} s): {:.2} GiB on disk, {} documents, {} segments; int8 vectors in memory {:.0} MiB",
            args.dir.display(),
            started.elapsed().as_secs_f64(),
            stats.disk_bytes as f64 / (1u64 << 30) as f64,
            stats.documents,
            stats.segments,
            stats.vector_memory_bytes as f64 / (1u64 << 20) as f64
        );
        run_queries(&args, &corpus, &real_vectors, &phrases, service);
        return;
    }
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).expect("remove the old bench index");
    }
    let mut service = SearchService::open(&args.dir, Some(embedder)).expect("open index");
    if let Some(threads) = args.search_threads {
        service.set_search_threads(threads);
    }
    service.set_bulk(true).unwrap();
    let target = args.hours * 3600.0;
    let mut total_seconds = 0.0;
    let mut files = 0usize;
    let mut segments = 0usize;
    let mut chunks = 0usize;
    let mut words_total = 0usize;
    let mut phrases = Vec::new();
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(42);
    while total_seconds < target {
        // Log-uniform between 5 min and 3 h (mean ≈ 50 min).
        let seconds = (300f64.ln() + rng.random::<f64>() * (10_800f64.ln() - 300f64.ln())).exp();
        let seconds = seconds.min(target - total_seconds).max(60.0);
        let doc = corpus.file(&mut rng, files, seconds);
        segments += doc.segments.len();
        words_total += doc
            .segments
            .iter()
            .map(|s| s.text.split_whitespace().count())
            .sum::<usize>();
        if rng.random_bool(0.05)
            && let Some(s) = doc.segments.get(doc.segments.len() / 2)
        {
            let w: Vec<&str> = s.text.split_whitespace().take(3).collect();
            if w.len() >= 2 {
                phrases.push((w.join(" "), doc.owner_id.clone()));
            }
        }
        let n_chunks = chunk_segments(&doc.segments).len();
        chunks += n_chunks;
        let vectors: Vec<Vec<f32>> = (0..n_chunks)
            .map(|_| {
                let base = &real_vectors[rng.random_range(0..real_vectors.len())];
                perturb(&mut rng, base, 0.02)
            })
            .collect();
        service.upsert_with_vectors(doc, vectors).expect("index");
        total_seconds += seconds;
        files += 1;
        if files.is_multiple_of(1000) {
            eprintln!(
                "  {files} files, {:.0} h, {:.0} s",
                total_seconds / 3600.0,
                started.elapsed().as_secs_f64()
            );
        }
    }
    service.set_bulk(false).unwrap();
    service.flush().expect("flush");
    let build = started.elapsed();
    let stats = service.stats();
    println!(
        "corpus: {:.0} h, {files} files, {segments} segments, {words_total} words, {chunks} chunks (300 speakers, 200 users)",
        total_seconds / 3600.0
    );
    println!(
        "index build (generation + indexing + commit + vector load): {:.1} s; index size {:.2} GiB on disk, {} documents, {} segments; int8 vectors in memory {:.0} MiB",
        build.as_secs_f64(),
        stats.disk_bytes as f64 / (1u64 << 30) as f64,
        stats.documents,
        stats.segments,
        stats.vector_memory_bytes as f64 / (1u64 << 20) as f64
    );
    println!(
        "vectors: {} real MiniLM embeddings of distinct synthetic chunks; every chunk's vector is one of them + N(0, 0.02²) noise per dimension, renormalised",
        real_vectors.len()
    );
    if args.keep {
        let text: String = phrases.iter().map(|(p, o)| format!("{o}\t{p}\n")).collect();
        std::fs::write(&phrases_path, text).expect("write the phrases");
    }
    run_queries(&args, &corpus, &real_vectors, &phrases, service);
}

fn run_queries(
    args: &Args,
    corpus: &Corpus,
    real_vectors: &[Vec<f32>],
    phrases: &[(String, String)],
    service: SearchService,
) {
    // Queries.
    let mut rng = StdRng::seed_from_u64(99);
    let mid_word = |rng: &mut StdRng| corpus.words[rng.random_range(200..5000)].clone();
    let viewer = |rng: &mut StdRng| format!("user{}", rng.random_range(0..200));
    let typo = |rng: &mut StdRng| {
        loop {
            let w = corpus.words[rng.random_range(200..5000)].clone();
            if w.len() >= 6 {
                let mut chars: Vec<char> = w.chars().collect();
                let i = rng.random_range(1..chars.len() - 1);
                chars.swap(i, i + 1);
                let t: String = chars.into_iter().collect();
                if t != w {
                    return t;
                }
            }
        }
    };
    type Make<'a> = Box<dyn Fn(&mut StdRng) -> (SearchRequest, String) + 'a>;
    let kinds: Vec<(&str, Make)> = vec![
        (
            "keyword (1 word, random user)",
            Box::new(|rng: &mut StdRng| {
                (
                    SearchRequest::new(mid_word(rng), Mode::Keyword),
                    viewer(rng),
                )
            }),
        ),
        (
            "keyword (2 words, sees all files)",
            Box::new(|rng: &mut StdRng| {
                (
                    SearchRequest::new(
                        format!("{} {}", mid_word(rng), mid_word(rng)),
                        Mode::Keyword,
                    ),
                    "auditor".to_owned(),
                )
            }),
        ),
        (
            "phrase (sees all files)",
            Box::new(|rng: &mut StdRng| {
                let (p, _) = &phrases[rng.random_range(0..phrases.len())];
                (
                    SearchRequest::new(format!("\"{p}\""), Mode::Keyword),
                    "auditor".to_owned(),
                )
            }),
        ),
        (
            "phrase (owner)",
            Box::new(|rng: &mut StdRng| {
                let (p, owner) = &phrases[rng.random_range(0..phrases.len())];
                (
                    SearchRequest::new(format!("\"{p}\""), Mode::Keyword),
                    owner.clone(),
                )
            }),
        ),
        (
            "fuzzy (typo, random user)",
            Box::new(|rng: &mut StdRng| {
                (SearchRequest::new(typo(rng), Mode::Keyword), viewer(rng))
            }),
        ),
        (
            "fuzzy (typo, sees all files)",
            Box::new(|rng: &mut StdRng| {
                (
                    SearchRequest::new(typo(rng), Mode::Keyword),
                    "auditor".to_owned(),
                )
            }),
        ),
        (
            "filtered (word + tag + dates, sees all)",
            Box::new(|rng: &mut StdRng| {
                let mut r = SearchRequest::new(mid_word(rng), Mode::Keyword);
                r.tag = Some(format!("tag{}", rng.random_range(0..50)));
                r.date_from = Some(1_650_000_000);
                r.date_to = Some(1_680_000_000);
                (r, "auditor".to_owned())
            }),
        ),
        (
            "filtered (word + speaker, sees all)",
            Box::new(|rng: &mut StdRng| {
                let mut r = SearchRequest::new(mid_word(rng), Mode::Keyword);
                r.speaker = Some(format!("speaker {}", rng.random_range(0..300)));
                (r, "auditor".to_owned())
            }),
        ),
        (
            "semantic (random user)",
            Box::new(|rng: &mut StdRng| {
                (
                    SearchRequest::new(
                        format!("{} {} {}", mid_word(rng), mid_word(rng), mid_word(rng)),
                        Mode::Semantic,
                    ),
                    viewer(rng),
                )
            }),
        ),
        (
            "semantic (sees all files)",
            Box::new(|rng: &mut StdRng| {
                (
                    SearchRequest::new(
                        format!("{} {} {}", mid_word(rng), mid_word(rng), mid_word(rng)),
                        Mode::Semantic,
                    ),
                    "auditor".to_owned(),
                )
            }),
        ),
        (
            "hybrid (random user)",
            Box::new(|rng: &mut StdRng| {
                (
                    SearchRequest::new(
                        format!("{} {}", mid_word(rng), mid_word(rng)),
                        Mode::Hybrid,
                    ),
                    viewer(rng),
                )
            }),
        ),
        (
            "hybrid (sees all files)",
            Box::new(|rng: &mut StdRng| {
                (
                    SearchRequest::new(
                        format!("{} {}", mid_word(rng), mid_word(rng)),
                        Mode::Hybrid,
                    ),
                    "auditor".to_owned(),
                )
            }),
        ),
    ];
    // The first queries of a user who sees everything pay for cold caches (per-viewer access
    // bitsets, first touch of postings). Their own random words, so that the measured queries
    // are the same with and without this step.
    let mut first_rng = StdRng::seed_from_u64(5);
    for mode in [Mode::Keyword, Mode::Semantic] {
        let request = SearchRequest::new(
            format!("{} {}", mid_word(&mut first_rng), mid_word(&mut first_rng)),
            mode,
        );
        let t = Instant::now();
        service.search(&request, "auditor").expect("search");
        println!(
            "first {mode:?} query of the user who sees all files: {:.1} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    println!(
        "latency over {} queries each (one at a time, after 10 warm-up queries); 'sees all files' is a user every file is shared with",
        args.queries
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>10}",
        "query", "p50 ms", "p99 ms", "max ms", "avg hits"
    );
    for (name, make) in &kinds {
        if !args.only.is_empty() && !args.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        for _ in 0..10 {
            let (request, viewer) = make(&mut rng);
            let _ = service.search(&request, &viewer);
        }
        let mut times = Vec::with_capacity(args.queries);
        let mut total_hits = 0usize;
        for _ in 0..args.queries {
            let (request, viewer) = make(&mut rng);
            let t = Instant::now();
            let response = service.search(&request, &viewer).expect("search");
            times.push(t.elapsed());
            total_hits += response.total;
        }
        times.sort();
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>9.2} {:>10.0}",
            name,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 1.0),
            total_hits as f64 / args.queries as f64
        );
    }
    // The scan alone, without embedding the query.
    if args.only.is_empty() || args.only.iter().any(|o| "vector scan".contains(o.as_str())) {
        let searcher_request = SearchRequest::new("x", Mode::Semantic);
        let mut times = Vec::new();
        let query_vectors: Vec<Vec<f32>> = (0..args.queries)
            .map(|i| perturb(&mut rng, &real_vectors[i % real_vectors.len()], 0.05))
            .collect();
        for v in &query_vectors {
            let t = Instant::now();
            let found = service
                .nearest_chunks(&searcher_request, "auditor", v)
                .expect("scan");
            times.push(t.elapsed());
            assert!(!found.is_empty());
        }
        times.sort();
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>9.2}",
            "vector scan only (sees all, no embedding)",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 1.0)
        );
    }
    drop(service);
    if !args.keep {
        let _ = std::fs::remove_dir_all(&args.dir);
    }
}
