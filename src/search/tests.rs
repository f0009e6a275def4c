//! Unit tests of search against a real tantivy index in a temp dir and the real MiniLM model
//! from the model cache (`OT_TEST_MODELS_DIR`, default `~/.cache/opentranscribe/models`).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::embed::{Embedder, MODEL_NAME, WordPiece};
use super::query::edit_distance;
use super::vectors::{chunk_segments, dot_i8, dot_i8_portable, quantize};
use super::*;
use crate::models::runtime::{Device, Runtime, RuntimeSettings};

fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OT_TEST_MODELS_DIR") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").expect("HOME");
    PathBuf::from(home).join(".cache/opentranscribe/models")
}

fn model_dir() -> PathBuf {
    let dir = models_dir().join(MODEL_NAME);
    assert!(
        dir.join("model.onnx").is_file() && dir.join("vocab.txt").is_file(),
        "the {MODEL_NAME} model is missing from {} (run scripts/fetch-models or set OT_TEST_MODELS_DIR)",
        dir.display()
    );
    dir
}

fn runtime() -> Runtime {
    Runtime::get_or_init(&RuntimeSettings {
        library: None,
        models_dir: models_dir(),
        device: Device::Cpu,
        device_id: 0,
        threads: 1,
        spin: false,
    })
    .expect("ONNX Runtime from the model cache")
}

fn embedder() -> Embedder {
    Embedder::load(&runtime(), &model_dir()).expect("MiniLM loads")
}

fn segment(id: usize, speaker: &str, text: &str) -> SegmentDoc {
    SegmentDoc {
        segment_id: id,
        start: id as f64 * 5.0,
        end: id as f64 * 5.0 + 4.5,
        speaker: Some(speaker.to_owned()),
        text: text.to_owned(),
    }
}

fn file(id: &str, owner: &str, texts: &[&str]) -> FileDoc {
    FileDoc {
        file_id: id.to_owned(),
        version: 1,
        owner_id: owner.to_owned(),
        readers: vec![owner.to_owned()],
        collections: Vec::new(),
        filename: format!("{id}.mp3"),
        language: "en".to_owned(),
        tags: Vec::new(),
        uploaded_at: 1_700_000_000,
        media_type: "audio/mpeg".to_owned(),
        duration: 600.0,
        segments: texts
            .iter()
            .enumerate()
            .map(|(i, t)| segment(i, if i % 2 == 0 { "Alice Smith" } else { "Bob" }, t))
            .collect(),
        summary: None,
    }
}

fn keyword(service: &SearchService, q: &str, viewer: &str) -> SearchResponse {
    service
        .search(&SearchRequest::new(q, Mode::Keyword), viewer)
        .unwrap()
}

fn ids(response: &SearchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response.hits.iter().map(|h| h.file_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn wordpiece_matches_the_reference_tokenizer() {
    // Ids from PyPI `tokenizers` 0.23 with the cache's tokenizer.json on the same sentences.
    let tokenizer = WordPiece::from_vocab_file(&model_dir().join("vocab.txt")).unwrap();
    let cases: &[(&str, &[i64])] = &[
        (
            "The quarterly budget review is scheduled for Tuesday.",
            &[
                101, 1996, 12174, 5166, 3319, 2003, 5115, 2005, 9857, 1012, 102,
            ],
        ),
        (
            "Café déjà-vu: naïve résumé, Zürich & São Paulo!",
            &[
                101, 7668, 2139, 3900, 1011, 24728, 1024, 15743, 13746, 1010, 10204, 1004, 7509,
                9094, 999, 102,
            ],
        ),
        (
            "He said \"don't\" -- well, I'm not sure... (maybe) 3.14 $50 #tag",
            &[
                101, 2002, 2056, 1000, 2123, 1005, 1056, 1000, 1011, 1011, 2092, 1010, 1045, 1005,
                1049, 2025, 2469, 1012, 1012, 1012, 1006, 2672, 1007, 1017, 1012, 2403, 1002, 2753,
                1001, 6415, 102,
            ],
        ),
        (
            "unbelievably antidisestablishmentarianism xyzzyq",
            &[
                101, 4895, 8671, 2666, 3567, 6321, 3424, 10521, 4355, 7875, 13602, 3672, 12199,
                2964, 1060, 2100, 28753, 4160, 102,
            ],
        ),
        (
            "日本語 テキスト and 中文",
            &[
                101, 1864, 1876, 1950, 1713, 30227, 30233, 30240, 1998, 1746, 1861, 102,
            ],
        ),
        (
            "  tabs\tand\nnewlines\u{a0}nbsp \u{200b} zero-width",
            &[
                101, 21628, 2015, 1998, 2047, 12735, 1050, 5910, 2361, 5717, 1011, 9381, 102,
            ],
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&tokenizer.encode(text), expected, "{text:?}");
    }
    let long = "word ".repeat(1000);
    let encoded = tokenizer.encode(&long);
    assert_eq!(encoded.len(), embed::MAX_TOKENS);
    assert_eq!(encoded.last(), Some(&102));
}

#[test]
fn int8_dot_and_edit_distance() {
    let a: Vec<f32> = (0..384)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let b: Vec<f32> = (0..384)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
        .collect();
    let (mut qa, mut qb) = (Vec::new(), Vec::new());
    let (sa, sb) = (quantize(&a, &mut qa), quantize(&b, &mut qb));
    let naive: i32 = qa.iter().zip(&qb).map(|(x, y)| *x as i32 * *y as i32).sum();
    assert_eq!(dot_i8(&qa, &qb), naive);
    let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let approx = naive as f32 * sa * sb;
    assert!(
        (exact - approx).abs() < 0.01 * exact.abs().max(1.0),
        "{exact} vs {approx}"
    );
    assert_eq!(edit_distance("budget", "budget"), 0);
    assert_eq!(edit_distance("budgte", "budget"), 1);
    assert_eq!(edit_distance("bugdet", "budget"), 1);
    assert_eq!(edit_distance("bdgt", "budget"), 2);
}

#[test]
fn chunks_follow_speaker_turns_and_overlap() {
    let sentence = "one two three four five six seven eight nine ten eleven twelve";
    let mut segments = Vec::new();
    // 30 segments of 12 words by Alice, then 5 by Bob, then 30 by Alice.
    for i in 0..65 {
        let speaker = if (30..35).contains(&i) {
            "Bob"
        } else {
            "Alice"
        };
        segments.push(segment(i, speaker, sentence));
    }
    let chunks = chunk_segments(&segments);
    assert!(chunks.len() >= 4, "{}", chunks.len());
    for chunk in &chunks {
        let words = chunk.text.split_whitespace().count();
        assert!(words <= vectors::CHUNK_WORDS + 12, "{words}");
    }
    // Every segment is in some chunk.
    for i in 0..65 {
        assert!(
            chunks
                .iter()
                .any(|c| (c.first_segment..=c.last_segment).contains(&i))
        );
    }
    // The first cut inside Alice's turn overlaps; a chunk starts at Bob's turn.
    assert!(chunks[1].first_segment <= chunks[0].last_segment);
    assert!(chunks.iter().any(|c| c.first_segment == 30));
    assert!(
        chunks
            .iter()
            .any(|c| c.speakers.contains(&"Bob".to_owned()))
    );
}

#[test]
fn keyword_syntax_phrases_prefix_fuzzy_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let service = SearchService::open(dir.path(), None).unwrap();
    assert_eq!(service.opened(), &Opened::Created);
    service
        .upsert(file(
            "f1",
            "alice",
            &[
                "The quarterly budget review is on Tuesday.",
                "Budget cuts were discussed at length, and the review followed.",
                "We talked about the marketing meetings in Paris.",
                "Unrelated chatter about the weather <script>alert(1)</script> & budget",
            ],
        ))
        .unwrap();
    service.flush().unwrap();

    let r = keyword(&service, "budget", "alice");
    assert_eq!(r.total, 3);
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].count, 3);
    assert_eq!(r.files[0].filename, "f1.mp3");
    assert!(r.hits.iter().all(|h| h.highlight.contains("<mark>")));

    let r = keyword(&service, "\"quarterly budget\"", "alice");
    assert_eq!(r.total, 1);
    assert_eq!(r.hits[0].segment_id, 0);
    assert_eq!(r.hits[0].start, 0.0);
    assert_eq!(
        r.hits[0].highlight,
        "The <mark>quarterly</mark> <mark>budget</mark> review is on Tuesday."
    );
    assert_eq!(keyword(&service, "\"budget quarterly\"", "alice").total, 0);

    // Stemming: "meeting" finds "meetings"; prefix; boolean operators.
    assert_eq!(keyword(&service, "meeting", "alice").total, 1);
    assert_eq!(keyword(&service, "marke*", "alice").total, 1);
    assert_eq!(keyword(&service, "mark*", "alice").total, 1);
    assert_eq!(keyword(&service, "\"marketing meet\"*", "alice").total, 1);
    assert_eq!(keyword(&service, "budget AND review", "alice").total, 2);
    assert_eq!(keyword(&service, "budget -review", "alice").total, 1);
    assert_eq!(keyword(&service, "budget AND NOT cuts", "alice").total, 2);
    assert_eq!(keyword(&service, "+paris +marketing", "alice").total, 1);
    assert_eq!(keyword(&service, "NOT budget", "alice").total, 1);

    // A typo finds the word by fuzzy matching, and the highlight marks the real word.
    let r = keyword(&service, "budgte", "alice");
    assert_eq!(r.total, 3, "{r:?}");
    assert!(r.hits.iter().all(|h| h.highlight.contains("<mark>")));
    let r = keyword(&service, "quartrly", "alice");
    assert_eq!(r.total, 1);
    assert!(r.hits[0].highlight.contains("<mark>quarterly</mark>"));
    assert_eq!(keyword(&service, "tusday~1", "alice").total, 1);
    assert_eq!(keyword(&service, "tusday~", "alice").total, 1);
    assert_eq!(keyword(&service, "tusday~0", "alice").total, 0);
    // An exact match elsewhere disables automatic fuzziness for that word.
    assert_eq!(keyword(&service, "review", "alice").total, 2);

    // Markup in a transcript comes back escaped.
    let r = keyword(&service, "weather", "alice");
    assert_eq!(
        r.hits[0].highlight,
        "Unrelated chatter about the <mark>weather</mark> &lt;script&gt;alert(1)&lt;/script&gt; &amp; budget"
    );
    assert!(r.hits[0].text.contains("<script>"));

    // Syntax errors are errors, not panics or empty results.
    for bad in [
        "\"unclosed phrase",
        "(budget",
        "speaker:alice",
        "[a TO b]",
        "budget)",
    ] {
        match service.search(&SearchRequest::new(bad, Mode::Keyword), "alice") {
            Err(e @ SearchError::Query(_)) => assert_eq!(e.code(), "search-query"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // Odd but valid input does not panic.
    for odd in [
        "-",
        "+",
        "AND",
        "OR OR",
        "\"\"",
        "*",
        "!!!",
        "a^",
        "~",
        "NOT NOT x",
    ] {
        let _ = service.search(&SearchRequest::new(odd, Mode::Keyword), "alice");
    }
    // Pagination.
    let mut request = SearchRequest::new("budget", Mode::Keyword);
    request.per_page = 2;
    request.page = 2;
    let r = service.search(&request, "alice").unwrap();
    assert_eq!((r.hits.len(), r.total), (1, 3));
    request.page = 0;
    assert!(matches!(
        service.search(&request, "alice"),
        Err(SearchError::Request(_))
    ));
}

#[test]
fn filters_each_narrow_results() {
    let dir = tempfile::tempdir().unwrap();
    let service = SearchService::open(dir.path(), None).unwrap();
    let mut a = file("fa", "alice", &["the launch plan", "the launch budget"]);
    a.tags = vec!["Finance".to_owned()];
    a.collections = vec!["c1".to_owned()];
    a.uploaded_at = 1_000;
    a.duration = 100.0;
    a.media_type = "video/mp4".to_owned();
    let mut b = file("fb", "alice", &["the launch party", "launch again"]);
    b.language = "fr".to_owned();
    b.uploaded_at = 2_000;
    b.duration = 4000.0;
    b.segments[0].speaker = Some("Carol".to_owned());
    b.segments[1].speaker = Some("Carol".to_owned());
    service.upsert(a).unwrap();
    service.upsert(b).unwrap();
    service.flush().unwrap();
    let run = |edit: &dyn Fn(&mut SearchRequest)| {
        let mut request = SearchRequest::new("launch", Mode::Keyword);
        edit(&mut request);
        let r = service.search(&request, "alice").unwrap();
        (ids(&r), r.total)
    };
    assert_eq!(run(&|_| {}).1, 4);
    let fa = vec!["fa".to_owned()];
    let fb = vec!["fb".to_owned()];
    assert_eq!(run(&|r| r.speaker = Some("carol".into())).0, fb);
    assert_eq!(
        run(&|r| r.speaker = Some("Alice Smith".into())),
        (fa.clone(), 1)
    );
    assert_eq!(run(&|r| r.tag = Some("finance".into())).0, fa);
    assert_eq!(run(&|r| r.collection = Some("c1".into())).0, fa);
    assert_eq!(run(&|r| r.language = Some("fr".into())).0, fb);
    assert_eq!(run(&|r| r.media_type = Some("video".into())).0, fa);
    assert_eq!(run(&|r| r.media_type = Some("audio".into())).0, fb);
    assert_eq!(run(&|r| r.media_type = Some("video/mp4".into())).0, fa);
    assert_eq!(run(&|r| r.date_from = Some(1_500)).0, fb);
    assert_eq!(run(&|r| r.date_to = Some(1_000)).0, fa);
    assert_eq!(run(&|r| r.min_duration = Some(3600.0)).0, fb);
    assert_eq!(run(&|r| r.max_duration = Some(3600.0)).0, fa);
    assert_eq!(run(&|r| r.file_id = Some("fb".into())).0, fb);
    assert_eq!(run(&|r| r.tag = Some("nope".into())).1, 0);
    // An empty query lists every segment that passes the filters.
    let mut request = SearchRequest::new("", Mode::Keyword);
    request.file_id = Some("fa".into());
    assert_eq!(service.search(&request, "alice").unwrap().total, 2);
}

#[test]
fn per_language_stemming() {
    let dir = tempfile::tempdir().unwrap();
    let service = SearchService::open(dir.path(), None).unwrap();
    let mut fr = file("fr", "alice", &["Les chanteuses chantaient des chansons."]);
    fr.language = "fr".to_owned();
    let mut de = file("de", "alice", &["Die Häuser wurden gebaut."]);
    de.language = "de-DE".to_owned();
    service.upsert(fr).unwrap();
    service.upsert(de).unwrap();
    service.flush().unwrap();
    assert_eq!(ids(&keyword(&service, "chanteuse", "alice")), vec!["fr"]);
    // ASCII folding: "hauser" finds "Häuser"; German stemming: "Haus" finds it too.
    assert_eq!(ids(&keyword(&service, "hauser", "alice")), vec!["de"]);
    assert_eq!(ids(&keyword(&service, "Hauses", "alice")), vec!["de"]);
}

#[test]
fn access_control_edits_deletes_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let service = SearchService::open(dir.path(), None).unwrap();
    service
        .upsert(file("alice1", "alice", &["secret merger talks with Acme"]))
        .unwrap();
    let mut shared = file("bob1", "bob", &["the merger is confidential"]);
    shared.readers = vec!["bob".to_owned(), "alice".to_owned()];
    shared.version = 7;
    service.upsert(shared.clone()).unwrap();
    service
        .upsert(file("carol1", "carol", &["merger merger merger"]))
        .unwrap();
    service.flush().unwrap();

    let r = keyword(&service, "merger", "alice");
    assert_eq!(ids(&r), vec!["alice1", "bob1"]);
    assert_eq!(r.total, 2);
    assert_eq!(r.files.len(), 2);
    let r = keyword(&service, "merger", "bob");
    assert_eq!(ids(&r), vec!["bob1"]);
    assert_eq!(keyword(&service, "acme", "bob").total, 0);
    assert_eq!(keyword(&service, "", "bob").total, 1);
    // A typo of a word only someone else has stays a typo (no fuzzy probe leaks).
    assert_eq!(keyword(&service, "acme", "mallory").total, 0);
    assert_eq!(keyword(&service, "merger", "mallory").total, 0);

    // The collection is unshared: alice loses bob's file.
    shared.readers = vec!["bob".to_owned()];
    shared.version = 8;
    service.upsert(shared.clone()).unwrap();
    service.flush().unwrap();
    assert_eq!(ids(&keyword(&service, "merger", "alice")), vec!["alice1"]);
    assert_eq!(ids(&keyword(&service, "confidential", "alice")).len(), 0);

    // An edit is searchable within a second without a flush.
    let mut edited = shared.clone();
    edited.segments[0].text = "the acquisition is confidential".to_owned();
    edited.version = 9;
    service.upsert(edited).unwrap();
    let started = Instant::now();
    loop {
        let r = keyword(&service, "acquisition", "bob");
        if r.total == 1 {
            assert_eq!(keyword(&service, "merger", "bob").total, 0);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "edit not visible after 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let versions = service.indexed_files().unwrap();
    assert_eq!(versions.get("bob1"), Some(&9));
    assert_eq!(versions.len(), 3);

    service.delete("alice1").unwrap();
    service.flush().unwrap();
    assert_eq!(keyword(&service, "merger", "alice").total, 0);
    assert!(!service.indexed_files().unwrap().contains_key("alice1"));

    // Rebuild replaces everything and reports progress.
    let mut seen = Vec::new();
    service
        .rebuild(
            vec![
                file("n1", "alice", &["fresh start"]),
                file("n2", "bob", &["fresh"]),
            ]
            .into_iter(),
            |done, total| seen.push((done, total)),
        )
        .unwrap();
    assert_eq!(seen, vec![(1, 2), (2, 2)]);
    assert_eq!(keyword(&service, "confidential", "bob").total, 0);
    assert_eq!(keyword(&service, "fresh", "alice").total, 1);
    assert_eq!(service.indexed_files().unwrap().len(), 2);
}

#[test]
fn missing_or_corrupt_index_is_recreated() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("index");
    {
        let service = SearchService::open(&dir, None).unwrap();
        assert_eq!(service.opened(), &Opened::Created);
        service
            .upsert(file("f1", "alice", &["persistent words"]))
            .unwrap();
        service.flush().unwrap();
    }
    {
        let service = SearchService::open(&dir, None).unwrap();
        assert_eq!(service.opened(), &Opened::Existing);
        assert_eq!(keyword(&service, "persistent", "alice").total, 1);
    }
    // A second service on the same directory is refused, not wiped.
    {
        let _first = SearchService::open(&dir, None).unwrap();
        assert!(matches!(
            SearchService::open(&dir, None),
            Err(SearchError::Locked(_))
        ));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    {
        let service = SearchService::open(&dir, None).unwrap();
        assert_eq!(service.opened(), &Opened::Created);
        service
            .upsert(file("f1", "alice", &["persistent words"]))
            .unwrap();
        service.flush().unwrap();
    }
    // Corrupt a segment file: the checksum catches it.
    let victim = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "idx"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    {
        let service = SearchService::open(&dir, None).unwrap();
        assert!(
            matches!(service.opened(), Opened::RecreatedAfterCorruption { .. }),
            "{:?}",
            service.opened()
        );
        assert_eq!(keyword(&service, "persistent", "alice").total, 0);
        service
            .upsert(file("f1", "alice", &["persistent words"]))
            .unwrap();
        service.flush().unwrap();
    }
    std::fs::write(dir.join("meta.json"), b"{ not json").unwrap();
    {
        let service = SearchService::open(&dir, None).unwrap();
        assert!(matches!(
            service.opened(),
            Opened::RecreatedAfterCorruption { .. }
        ));
    }
    // A directory with foreign files is never wiped.
    let foreign = parent.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.docx"), b"precious").unwrap();
    assert!(matches!(
        SearchService::open(&foreign, None),
        Err(SearchError::Index(_))
    ));
    assert!(foreign.join("thesis.docx").exists());
}

fn semantic_fixture(dir: &std::path::Path) -> SearchService {
    let service = SearchService::open(dir, Some(shared_embedder())).unwrap();
    let mut car = file(
        "car",
        "alice",
        &[
            "The car would not start this morning because the battery was dead.",
            "I had to call a tow truck and wait for an hour in the cold.",
        ],
    );
    car.tags = vec!["personal".to_owned()];
    service.upsert(car).unwrap();
    service
        .upsert(file(
            "cooking",
            "alice",
            &[
                "Add the onions to the pan and fry them until golden brown.",
                "Then stir in the tomatoes and let the sauce simmer.",
            ],
        ))
        .unwrap();
    service
        .upsert(file(
            "bobcar",
            "bob",
            &["My vehicle broke down, its ignition failed and the engine would not turn over."],
        ))
        .unwrap();
    service.flush().unwrap();
    service
}

/// One embedder per test process would be ideal, but `Embedder` is moved into a service; the
/// session is cheap enough to create per test once the runtime is loaded.
fn shared_embedder() -> Embedder {
    static LOADED: OnceLock<()> = OnceLock::new();
    LOADED.get_or_init(|| {
        runtime();
    });
    embedder()
}

#[test]
fn semantic_finds_paraphrases_keyword_misses_with_true_cosines() {
    let dir = tempfile::tempdir().unwrap();
    let service = semantic_fixture(dir.path());
    let q = "automobile stalled";
    assert_eq!(
        keyword(&service, q, "alice").total,
        0,
        "keyword must miss it"
    );
    let r = service
        .search(&SearchRequest::new(q, Mode::Semantic), "alice")
        .unwrap();
    assert!(!r.hits.is_empty(), "semantic found nothing");
    let top = &r.hits[0];
    assert_eq!(top.file_id, "car");
    // Bob's near-identical file is never shown to alice.
    assert!(r.hits.iter().all(|h| h.file_id != "bobcar"));
    assert!(r.files.iter().all(|f| f.file_id != "bobcar"));
    // The score is the true cosine of the model's vectors.
    let embedder = service.embedder().unwrap();
    let vectors = embedder.embed(&[q, &top.text]).unwrap();
    let cosine: f32 = vectors[0].iter().zip(&vectors[1]).map(|(a, b)| a * b).sum();
    assert!(
        (top.score - cosine).abs() < 1e-4,
        "{} vs {cosine}",
        top.score
    );
    assert_eq!(top.cosine, Some(top.score));
    assert!(top.score > 0.3, "{}", top.score);
    if let Some(cooking) = r.hits.iter().find(|h| h.file_id == "cooking") {
        assert!(cooking.score < top.score);
    }
    assert_eq!(top.start, 0.0);
    assert!(top.text.contains("battery"));

    // Bob sees his own file, not alice's.
    let r = service
        .search(&SearchRequest::new(q, Mode::Semantic), "bob")
        .unwrap();
    assert_eq!(ids(&r), vec!["bobcar"]);

    // Filters apply to the scan.
    let mut request = SearchRequest::new(q, Mode::Semantic);
    request.tag = Some("personal".to_owned());
    assert_eq!(
        ids(&service.search(&request, "alice").unwrap()),
        vec!["car"]
    );
    request.tag = Some("work".to_owned());
    assert_eq!(service.search(&request, "alice").unwrap().total, 0);

    // Hybrid: the keyword hit and the semantic chunk fuse; semantic-only hits follow.
    let r = service
        .search(
            &SearchRequest::new("tow truck breakdown", Mode::Hybrid),
            "alice",
        )
        .unwrap();
    assert_eq!(r.hits[0].file_id, "car");
    assert!(
        r.hits[0].highlight.contains("<mark>tow</mark>"),
        "{:?}",
        r.hits[0]
    );
    assert!(r.hits[0].cosine.is_some());
    assert!(r.hits.iter().all(|h| h.file_id != "bobcar"));
    let json = serde_json::to_value(&r).unwrap();
    for key in ["file_id", "start", "end", "speaker", "text", "highlight"] {
        assert!(json["hits"][0].get(key).is_some(), "{key}");
    }
    assert_eq!(json["mode"], "hybrid");

    // Sharing changes reach the semantic side too.
    let mut unshared = file(
        "bobcar",
        "bob",
        &["My vehicle broke down, its ignition failed and the engine would not turn over."],
    );
    unshared.readers = vec!["bob".to_owned(), "alice".to_owned()];
    service.upsert(unshared.clone()).unwrap();
    service.flush().unwrap();
    let r = service
        .search(&SearchRequest::new(q, Mode::Semantic), "alice")
        .unwrap();
    assert!(r.hits.iter().any(|h| h.file_id == "bobcar"));
    unshared.readers = vec!["bob".to_owned()];
    service.upsert(unshared).unwrap();
    service.flush().unwrap();
    let r = service
        .search(&SearchRequest::new(q, Mode::Semantic), "alice")
        .unwrap();
    assert!(r.hits.iter().all(|h| h.file_id != "bobcar"));

    // Delete removes the vectors with the documents.
    service.delete("car").unwrap();
    service.flush().unwrap();
    let r = service
        .search(&SearchRequest::new(q, Mode::Semantic), "alice")
        .unwrap();
    assert!(r.hits.iter().all(|h| h.file_id != "car"));
}

#[test]
fn vectors_survive_a_restart_and_renames_reuse_them() {
    let dir = tempfile::tempdir().unwrap();
    drop(semantic_fixture(dir.path()));
    let service = SearchService::open(dir.path(), Some(shared_embedder())).unwrap();
    assert_eq!(service.opened(), &Opened::Existing);
    assert_eq!(service.indexed_files().unwrap().len(), 3);
    let q = "frying vegetables for a sauce";
    let r = service
        .search(&SearchRequest::new(q, Mode::Semantic), "alice")
        .unwrap();
    assert_eq!(r.hits[0].file_id, "cooking");
    let before = r.hits[0].score;
    // A speaker rename keeps the text: the stored vector is reused and the name changes.
    let mut renamed = file(
        "cooking",
        "alice",
        &[
            "Add the onions to the pan and fry them until golden brown.",
            "Then stir in the tomatoes and let the sauce simmer.",
        ],
    );
    for s in &mut renamed.segments {
        s.speaker = Some("Chef Dana".to_owned());
    }
    service.upsert(renamed).unwrap();
    service.flush().unwrap();
    let r = service
        .search(&SearchRequest::new(q, Mode::Semantic), "alice")
        .unwrap();
    assert_eq!(r.hits[0].speaker.as_deref(), Some("Chef Dana"));
    assert!((r.hits[0].score - before).abs() < 1e-6);
    let mut request = SearchRequest::new("onions", Mode::Keyword);
    request.speaker = Some("chef dana".to_owned());
    assert_eq!(service.search(&request, "alice").unwrap().total, 1);

    // Without an embedder, semantic requests fail loudly and the files count as unembedded.
    drop(service);
    let plain = SearchService::open(dir.path(), None).unwrap();
    assert!(matches!(
        plain.search(&SearchRequest::new(q, Mode::Semantic), "alice"),
        Err(SearchError::SemanticUnavailable)
    ));
    assert!(matches!(
        plain.search(&SearchRequest::new(q, Mode::Hybrid), "alice"),
        Err(SearchError::SemanticUnavailable)
    ));
}

#[test]
fn int8_dot_is_exact_at_the_extremes_and_any_length() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 47, 384, 385, 1000] {
        let a: Vec<i8> = (0..len).map(|_| next() as i8).collect();
        let b: Vec<i8> = (0..len).map(|_| next() as i8).collect();
        let naive: i32 = a.iter().zip(&b).map(|(x, y)| *x as i32 * *y as i32).sum();
        assert_eq!(dot_i8(&a, &b), naive, "len {len}");
        assert_eq!(dot_i8_portable(&a, &b), naive, "len {len}");
        let low = vec![i8::MIN; len];
        let high = vec![i8::MAX; len];
        assert_eq!(dot_i8(&low, &low), 16384 * len as i32, "len {len}");
        assert_eq!(dot_i8(&low, &high), -16256 * len as i32, "len {len}");
        assert_eq!(dot_i8_portable(&low, &low), 16384 * len as i32);
    }
    // A longer slice is cut to the shorter one.
    assert_eq!(dot_i8(&[1, 2, 3], &[4, 5]), 14);
}

/// 60 files of one owner in two commits; `guest` reads 6 of them (a large share: the cached
/// per-segment bitsets), `visitor` one (the `readers` term clause).
fn many_files(service: &SearchService) {
    for i in 0..60 {
        let mut doc = file(
            &format!("f{i:02}"),
            "owner",
            &["common alpha words", "common beta words", "other gamma"],
        );
        if i % 10 == 0 {
            doc.readers.push("guest".to_owned());
        }
        if i == 7 {
            doc.readers.push("visitor".to_owned());
        }
        service.upsert(doc).unwrap();
        if i == 29 {
            service.flush().unwrap();
        }
    }
    service.flush().unwrap();
}

#[test]
fn dense_and_sparse_viewers_see_exactly_their_files_with_counts() {
    let dir = tempfile::tempdir().unwrap();
    let service = SearchService::open(dir.path(), None).unwrap();
    many_files(&service);
    assert!(service.reader.searcher().segment_readers().len() >= 2);

    let r = keyword(&service, "common", "visitor");
    assert_eq!(
        service.access.memory_bytes(),
        0,
        "visitor is a sparse viewer"
    );
    assert_eq!(r.total, 2);
    assert_eq!(ids(&r), vec!["f07"]);

    let r = keyword(&service, "common", "owner");
    assert!(service.access.memory_bytes() > 0, "owner is a dense viewer");
    assert_eq!(r.total, 120);
    assert_eq!(r.files.len(), 60);
    for group in &r.files {
        assert_eq!(group.count, 2);
        assert_eq!(group.filename, format!("{}.mp3", group.file_id));
    }
    // Ties are ordered by filename.
    let names: Vec<&str> = r.files.iter().map(|g| g.filename.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    let guest_files = |r: &SearchResponse| {
        let mut files: Vec<String> = r.files.iter().map(|g| g.file_id.clone()).collect();
        files.sort();
        files
    };
    let r = keyword(&service, "common", "guest");
    assert_eq!(r.total, 12);
    assert_eq!(
        guest_files(&r),
        vec!["f00", "f10", "f20", "f30", "f40", "f50"]
    );
    assert!(
        r.hits
            .iter()
            .all(|h| h.highlight.contains("<mark>common</mark>"))
    );
    // The same ranking rule for both kinds of viewer: access control adds no score (every
    // matching segment here has the same text statistics, so the same BM25).
    let owner_score = keyword(&service, "common", "owner").hits[0].score;
    let visitor = keyword(&service, "common", "visitor");
    assert!(
        visitor
            .hits
            .iter()
            .all(|h| (h.score - owner_score).abs() < 1e-4)
    );
    // An unknown word is not fuzzily matched against files the guest cannot read.
    assert_eq!(keyword(&service, "gama", "guest").total, 6);
    assert_eq!(keyword(&service, "gamma", "nobody").total, 0);

    // A deletion and an unshare take effect with the cached bitsets in place.
    service.delete("f10").unwrap();
    let mut unshared = file(
        "f20",
        "owner",
        &["common alpha words", "common beta words", "other gamma"],
    );
    unshared.version = 2;
    service.upsert(unshared).unwrap();
    service.flush().unwrap();
    let r = keyword(&service, "common", "guest");
    assert_eq!(r.total, 8);
    assert_eq!(guest_files(&r), vec!["f00", "f30", "f40", "f50"]);
    assert_eq!(keyword(&service, "common", "owner").total, 118);
}

#[test]
fn the_threaded_scan_finds_what_the_single_scan_finds_within_access() {
    let dir = tempfile::tempdir().unwrap();
    let service = SearchService::open(dir.path(), Some(shared_embedder())).unwrap();
    let dimension = service.embedder().unwrap().dimension();
    // Deterministic unit vectors, one chunk per file.
    let vector = |i: usize| {
        let v: Vec<f32> = (0..dimension)
            .map(|d| (((i * 131 + d * 29) % 97) as f32 - 48.0) / 48.0)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    for i in 0..40 {
        let mut doc = file(&format!("v{i:02}"), "owner", &["one short segment"]);
        if i % 4 == 0 {
            doc.readers.push("guest".to_owned());
        }
        service.upsert_with_vectors(doc, vec![vector(i)]).unwrap();
        if i == 19 {
            service.flush().unwrap();
        }
    }
    service.flush().unwrap();
    let searcher = service.reader.searcher();
    let request = SearchRequest::new("x", Mode::Semantic);
    for viewer in ["owner", "guest", "nobody"] {
        for probe in [0, 5, 8, 33] {
            let query = vector(probe);
            let single = service
                .scan_parts(&searcher, &request, viewer, &query, Some(1))
                .unwrap();
            for parts in [2, 3, 7] {
                let threaded = service
                    .scan_parts(&searcher, &request, viewer, &query, Some(parts))
                    .unwrap();
                assert_eq!(single, threaded, "{viewer}, {parts} parts");
            }
            let visible = match viewer {
                "owner" => true,
                "guest" => probe % 4 == 0,
                _ => false,
            };
            // The probe's own chunk is found with cosine 1 exactly when it is visible.
            let top = single.first().map(|(cosine, _)| *cosine);
            if visible {
                assert!(top.is_some_and(|c| c > 0.999), "{viewer} {probe}: {top:?}");
            } else {
                assert!(top.is_none_or(|c| c < 0.999), "{viewer} {probe}: {top:?}");
            }
            if viewer == "nobody" {
                assert!(single.is_empty());
            }
        }
    }
}

/// A natural 30 s phone call (turns as a recogniser writes them, the answer in the middle of
/// small talk), among unrelated files. The question scores about 0.24 against the call's one
/// chunk with MiniLM: under the old fixed 0.2 cut, a noisier real call scored below it and
/// semantic search answered `total: 0`. Now semantic mode returns the best matches ranked (the
/// call first) and hybrid shows them with their cosines even without a keyword hit.
#[test]
fn a_question_finds_its_answer_in_natural_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let service = semantic_fixture(dir.path());
    let call = [
        "hello this is maria speaking",
        "hi maria it's tom from the library thanks for calling back",
        "oh sure no problem what did you need",
        "uh we're putting together the local history project and someone said your family has been here a long time",
        "well not exactly i actually grew up in a little village outside lyon in france and we only moved here when i was twelve",
        "oh really i had no idea",
        "yeah my parents had a small farm there goats mostly",
        "that's wonderful would you be willing to do a short interview next week",
        "yes i think so tuesday afternoon works for me",
        "great i'll send you an email thanks so much",
    ];
    service.upsert(file("call", "alice", &call)).unwrap();
    service.flush().unwrap();
    let q = "where did she grow up";
    let r = service
        .search(&SearchRequest::new(q, Mode::Semantic), "alice")
        .unwrap();
    assert!(r.total >= 1, "semantic found nothing");
    assert_eq!(r.hits[0].file_id, "call", "{:?}", r.hits);
    assert!(r.hits[0].text.contains("grew up"));
    assert!(
        r.hits.windows(2).all(|w| w[0].score >= w[1].score),
        "ranked"
    );
    // Ranked best first, unrelated files after it (if at all).
    assert!(r.hits.iter().skip(1).all(|h| h.score < r.hits[0].score));

    // Hybrid: no keyword in the question matches ("grew" is not "grow" unstemmed… the
    // stemmer may match it), but the semantic side brings the call with its cosine.
    let r = service
        .search(&SearchRequest::new(q, Mode::Hybrid), "alice")
        .unwrap();
    let hit = r
        .hits
        .iter()
        .find(|h| h.file_id == "call")
        .expect("hybrid brings the call");
    assert!(hit.cosine.is_some_and(|c| c > 0.15), "{hit:?}");
}

/// Calls where the answer is one remark in other talk (the noise complaint scored 0.009 against
/// the question as one 200-word chunk, below unrelated text's 0.025): with short chunks the
/// call that answers ranks first.
#[test]
fn short_chunks_rank_the_call_that_answers_first() {
    let dir = tempfile::tempdir().unwrap();
    let service = semantic_fixture(dir.path());
    let calls = [
        (
            "desk",
            "hello hi is this the front desk yes it is how can i help well i'm calling about the noise upstairs again it's been going on all week okay i'm sorry to hear that can i get your unit number it's four b my husband and i moved in last month you know i grew up on a farm so i'm used to quiet nights not this ha i understand we'll send someone up to talk to them tonight thank you so much you're welcome have a good evening",
        ),
        (
            "sister",
            "yeah so um the meeting got moved to thursday right and i told them we can't do the budget until the numbers come in oh and by the way my sister called she's back in town you know she was raised over in portland but she's been living in denver for years anyway she wants to have dinner saturday does that work for you i think so let me check the calendar",
        ),
    ];
    for (id, text) in calls {
        // As a recogniser writes it: one segment per ~12 words, one speaker.
        let words: Vec<&str> = text.split_whitespace().collect();
        let segments: Vec<String> = words.chunks(12).map(|w| w.join(" ")).collect();
        let texts: Vec<&str> = segments.iter().map(String::as_str).collect();
        service.upsert(file(id, "alice", &texts)).unwrap();
    }
    service.flush().unwrap();
    let r = service
        .search(
            &SearchRequest::new("where did she grow up", Mode::Semantic),
            "alice",
        )
        .unwrap();
    let files: Vec<&str> = r.files.iter().map(|f| f.file_id.as_str()).collect();
    assert!(
        ["desk", "sister"].contains(&r.hits[0].file_id.as_str()),
        "top hit {:?} (files {files:?})",
        r.hits[0]
    );
    let car = r.hits.iter().position(|h| h.file_id == "car");
    let sister = r.hits.iter().position(|h| h.file_id == "sister").unwrap();
    assert!(car.is_none_or(|car| sister < car), "{files:?}");
}
