//! Process-wide counters for Prometheus: HTTP requests by route and status, stage durations,
//! model load time and inference speed. Jobs by state and queue depth are read from redb when
//! `/metrics` is scraped. Rendering follows the Prometheus text exposition format 0.0.4.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

#[derive(Debug, Default)]
struct Counters {
    /// (method, route, status) → requests.
    http: BTreeMap<(String, String, u16), u64>,
    /// stage → (seconds, count).
    stages: BTreeMap<String, (f64, u64)>,
    /// model → seconds of the last load.
    model_load: BTreeMap<String, f64>,
    /// Seconds of audio transcribed and seconds it took, over all finished jobs.
    audio_secs: f64,
    processing_secs: f64,
    jobs_finished: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        let mut guard = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        self.with(|c| {
            *c.http
                .entry((method.to_owned(), route.to_owned(), status))
                .or_insert(0) += 1
        });
    }

    pub fn stage(&self, stage: &str, secs: f64) {
        self.with(|c| {
            let entry = c.stages.entry(stage.to_owned()).or_insert((0.0, 0));
            entry.0 += secs;
            entry.1 += 1;
        });
    }

    pub fn model_load(&self, model: &str, secs: f64) {
        self.with(|c| {
            c.model_load.insert(model.to_owned(), secs);
        });
    }

    /// A job ended with `status`; for completed jobs, how much audio took how long.
    pub fn job_finished(&self, status: &str, audio_secs: Option<f64>, processing_secs: f64) {
        self.with(|c| {
            *c.jobs_finished.entry(status.to_owned()).or_insert(0) += 1;
            if let (Some(audio), "completed") = (audio_secs, status)
                && audio > 0.0
            {
                c.audio_secs += audio;
                c.processing_secs += processing_secs;
            }
        });
    }

    /// The exposition text; `jobs` holds the current jobs by state (from redb).
    pub fn render(&self, jobs: &BTreeMap<String, u64>, queue_depth: u64) -> String {
        let mut out = String::new();
        self.with(|c| {
            let _ = writeln!(out, "# HELP opentranscribe_http_requests_total HTTP requests by method, route and status.");
            let _ = writeln!(out, "# TYPE opentranscribe_http_requests_total counter");
            for ((method, route, status), n) in &c.http {
                let _ = writeln!(
                    out,
                    "opentranscribe_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(method),
                    escape(route)
                );
            }
            let _ = writeln!(out, "# HELP opentranscribe_jobs Jobs by state.");
            let _ = writeln!(out, "# TYPE opentranscribe_jobs gauge");
            for (state, n) in jobs {
                let _ = writeln!(out, "opentranscribe_jobs{{state=\"{}\"}} {n}", escape(state));
            }
            let _ = writeln!(out, "# HELP opentranscribe_queue_depth Jobs waiting to run.");
            let _ = writeln!(out, "# TYPE opentranscribe_queue_depth gauge");
            let _ = writeln!(out, "opentranscribe_queue_depth {queue_depth}");
            let _ = writeln!(out, "# HELP opentranscribe_jobs_finished_total Jobs ended since start, by outcome.");
            let _ = writeln!(out, "# TYPE opentranscribe_jobs_finished_total counter");
            for (status, n) in &c.jobs_finished {
                let _ = writeln!(out, "opentranscribe_jobs_finished_total{{status=\"{}\"}} {n}", escape(status));
            }
            let _ = writeln!(out, "# HELP opentranscribe_stage_duration_seconds Time spent in each pipeline stage.");
            let _ = writeln!(out, "# TYPE opentranscribe_stage_duration_seconds summary");
            for (stage, (sum, count)) in &c.stages {
                let stage = escape(stage);
                let _ = writeln!(out, "opentranscribe_stage_duration_seconds_sum{{stage=\"{stage}\"}} {sum}");
                let _ = writeln!(out, "opentranscribe_stage_duration_seconds_count{{stage=\"{stage}\"}} {count}");
            }
            let _ = writeln!(out, "# HELP opentranscribe_model_load_seconds Duration of the last load of each model.");
            let _ = writeln!(out, "# TYPE opentranscribe_model_load_seconds gauge");
            for (model, secs) in &c.model_load {
                let _ = writeln!(out, "opentranscribe_model_load_seconds{{model=\"{}\"}} {secs}", escape(model));
            }
            let _ = writeln!(out, "# HELP opentranscribe_audio_seconds_total Seconds of audio in completed jobs.");
            let _ = writeln!(out, "# TYPE opentranscribe_audio_seconds_total counter");
            let _ = writeln!(out, "opentranscribe_audio_seconds_total {}", c.audio_secs);
            let _ = writeln!(out, "# HELP opentranscribe_processing_seconds_total Wall time those jobs took.");
            let _ = writeln!(out, "# TYPE opentranscribe_processing_seconds_total counter");
            let _ = writeln!(out, "opentranscribe_processing_seconds_total {}", c.processing_secs);
            let rtf = if c.audio_secs > 0.0 { c.processing_secs / c.audio_secs } else { 0.0 };
            let _ = writeln!(out, "# HELP opentranscribe_inference_real_time_factor Processing seconds per audio second over completed jobs (lower is faster).");
            let _ = writeln!(out, "# TYPE opentranscribe_inference_real_time_factor gauge");
            let _ = writeln!(out, "opentranscribe_inference_real_time_factor {rtf}");
        });
        out
    }
}

/// Label values escape backslash, quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_escapes_labels() {
        let metrics = Metrics::default();
        metrics.http_request("GET", "/api/files/{id}", 200);
        metrics.http_request("GET", "/api/files/{id}", 200);
        metrics.http_request("POST", "/a\"b", 404);
        metrics.stage("transcribe", 2.5);
        metrics.stage("transcribe", 1.5);
        metrics.job_finished("completed", Some(10.0), 4.0);
        metrics.job_finished("error", None, 1.0);
        let jobs = BTreeMap::from([("queued".to_owned(), 2u64)]);
        let text = metrics.render(&jobs, 2);
        assert!(text.contains("opentranscribe_http_requests_total{method=\"GET\",route=\"/api/files/{id}\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("route=\"/a\\\"b\""), "{text}");
        assert!(text.contains("opentranscribe_stage_duration_seconds_sum{stage=\"transcribe\"} 4"));
        assert!(
            text.contains("opentranscribe_stage_duration_seconds_count{stage=\"transcribe\"} 2")
        );
        assert!(text.contains("opentranscribe_jobs{state=\"queued\"} 2"));
        assert!(text.contains("opentranscribe_queue_depth 2"));
        assert!(text.contains("opentranscribe_inference_real_time_factor 0.4"));
        assert!(text.contains("opentranscribe_jobs_finished_total{status=\"error\"} 1"));
        // Every sample line belongs to a declared metric.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {base} ")), "{line}");
        }
    }
}
