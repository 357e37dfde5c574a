//! The server's counters in Prometheus's text format (version 0.0.4): requests by endpoint
//! and status, request latencies, the image encoder's batch sizes and time, the text
//! decoder's generation batches and time (captions and answers), and the queue.
//! A handful of series, so they are kept and written here rather than through a metrics
//! crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Request latency buckets, in seconds.
const LATENCY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Encoder call buckets, in seconds.
const ENCODE_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Batch size buckets, in images.
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A cumulative histogram, as Prometheus keeps one.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not yet cumulative).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of `name` with `labels` (`a="b"`
    /// pairs, comma-separated, or empty).
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

#[derive(Debug)]
struct Counts {
    /// Requests answered, by endpoint and status.
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    batch_size: Histogram,
    encode_seconds: Histogram,
    generation_size: Histogram,
    generation_seconds: Histogram,
}

/// What the server has done so far.
#[derive(Debug)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            counts: Mutex::new(Counts {
                requests: BTreeMap::new(),
                latency: BTreeMap::new(),
                batch_size: Histogram::new(BATCH_BOUNDS),
                encode_seconds: Histogram::new(ENCODE_BOUNDS),
                generation_size: Histogram::new(BATCH_BOUNDS),
                generation_seconds: Histogram::new(LATENCY_BOUNDS),
            }),
        }
    }
}

/// The queue's state when the metrics are read.
#[derive(Debug, Clone, Copy)]
pub struct QueueState {
    pub depth: usize,
    pub capacity: usize,
}

impl Metrics {
    /// One request to `endpoint` answered with `status` after `elapsed`.
    pub fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.requests.entry((endpoint, status)).or_default() += 1;
            counts
                .latency
                .entry(endpoint)
                .or_insert_with(|| Histogram::new(LATENCY_BOUNDS))
                .observe(elapsed.as_secs_f64());
        }
    }

    /// One call of the image encoder on `images` images, taking `elapsed`.
    pub fn batch(&self, images: usize, elapsed: Duration) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.batch_size.observe(images as f64);
            counts.encode_seconds.observe(elapsed.as_secs_f64());
        }
    }

    /// One batch of `sequences` captions or answers generated together, taking `elapsed`.
    pub fn generation(&self, sequences: usize, elapsed: Duration) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.generation_size.observe(sequences as f64);
            counts.generation_seconds.observe(elapsed.as_secs_f64());
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.counts.lock().map_or(0, |c| c.requests.values().sum())
    }

    /// Everything, in Prometheus's text format.
    pub fn render(&self, queue: QueueState) -> String {
        let mut out = String::new();
        let Ok(counts) = self.counts.lock() else {
            return out;
        };
        out.push_str("# HELP vlm_requests_total HTTP requests answered, by endpoint and status.\n");
        out.push_str("# TYPE vlm_requests_total counter\n");
        for ((endpoint, status), n) in &counts.requests {
            let _ = writeln!(
                out,
                "vlm_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP vlm_request_duration_seconds Time from a request's arrival to its answer.\n",
        );
        out.push_str("# TYPE vlm_request_duration_seconds histogram\n");
        for (endpoint, histogram) in &counts.latency {
            histogram.write(
                &mut out,
                "vlm_request_duration_seconds",
                &format!("endpoint=\"{endpoint}\""),
            );
        }
        out.push_str("# HELP vlm_batch_size Images per call of the image encoder.\n");
        out.push_str("# TYPE vlm_batch_size histogram\n");
        counts.batch_size.write(&mut out, "vlm_batch_size", "");
        out.push_str("# HELP vlm_encode_seconds Time of each call of the image encoder.\n");
        out.push_str("# TYPE vlm_encode_seconds histogram\n");
        counts
            .encode_seconds
            .write(&mut out, "vlm_encode_seconds", "");
        out.push_str(
            "# HELP vlm_generation_batch_size Captions or answers generated together per \
             generation (BLIP models).\n",
        );
        out.push_str("# TYPE vlm_generation_batch_size histogram\n");
        counts
            .generation_size
            .write(&mut out, "vlm_generation_batch_size", "");
        out.push_str(
            "# HELP vlm_generation_seconds Time of each generation, from the image encodings \
             to the last token.\n",
        );
        out.push_str("# TYPE vlm_generation_seconds histogram\n");
        counts
            .generation_seconds
            .write(&mut out, "vlm_generation_seconds", "");
        out.push_str(
            "# HELP vlm_queue_depth Images accepted and not yet answered (decoding, waiting \
             for the encoder, or in it).\n",
        );
        out.push_str("# TYPE vlm_queue_depth gauge\n");
        let _ = writeln!(out, "vlm_queue_depth {}", queue.depth);
        out.push_str(
            "# HELP vlm_queue_capacity The most images the queue holds (--queue); past it, \
             requests are answered 429.\n",
        );
        out.push_str("# TYPE vlm_queue_capacity gauge\n");
        let _ = writeln!(out, "vlm_queue_capacity {}", queue.capacity);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_has_cumulative_buckets_sums_and_counts() {
        let metrics = Metrics::default();
        metrics.request("/v1/embeddings", 200, Duration::from_millis(3));
        metrics.request("/v1/embeddings", 200, Duration::from_millis(40));
        metrics.request("/v1/embeddings", 429, Duration::from_millis(1));
        metrics.batch(1, Duration::from_millis(2));
        metrics.batch(12, Duration::from_millis(20));
        metrics.generation(3, Duration::from_millis(30));
        let text = metrics.render(QueueState {
            depth: 3,
            capacity: 64,
        });
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "vlm_requests_total{endpoint=\"/v1/embeddings\",status=\"200\"} 2",
            "vlm_requests_total{endpoint=\"/v1/embeddings\",status=\"429\"} 1",
            "vlm_request_duration_seconds_bucket{endpoint=\"/v1/embeddings\",le=\"0.005\"} 2",
            "vlm_request_duration_seconds_bucket{endpoint=\"/v1/embeddings\",le=\"0.025\"} 2",
            "vlm_request_duration_seconds_bucket{endpoint=\"/v1/embeddings\",le=\"0.05\"} 3",
            "vlm_request_duration_seconds_bucket{endpoint=\"/v1/embeddings\",le=\"+Inf\"} 3",
            "vlm_request_duration_seconds_count{endpoint=\"/v1/embeddings\"} 3",
            "vlm_batch_size_bucket{le=\"1\"} 1",
            "vlm_batch_size_bucket{le=\"8\"} 1",
            "vlm_batch_size_bucket{le=\"16\"} 2",
            "vlm_batch_size_bucket{le=\"+Inf\"} 2",
            "vlm_batch_size_sum 13",
            "vlm_batch_size_count 2",
            "vlm_generation_batch_size_bucket{le=\"2\"} 0",
            "vlm_generation_batch_size_bucket{le=\"4\"} 1",
            "vlm_generation_batch_size_sum 3",
            "vlm_generation_seconds_count 1",
            "vlm_queue_depth 3",
            "vlm_queue_capacity 64",
            "# TYPE vlm_batch_size histogram",
        ] {
            assert!(lines.contains(&expected), "{expected:?} not in\n{text}");
        }
        assert_eq!(metrics.answered(), 3);
        // Every sample line is `name{labels} value` or `name value`, with a number.
        for line in lines.iter().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
