//! Latency histograms and the report a run prints.

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// Latencies in microseconds, from 1 µs to 10 minutes, to three significant digits.
#[derive(Debug, Clone)]
pub(crate) struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    /// Records one duration (clamped into the histogram's range).
    pub(crate) fn record(&mut self, duration: std::time::Duration) {
        let micros = duration.as_micros().clamp(1, 600_000_000) as u64;
        self.0.saturating_record(micros);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at `percentile` (0..=100), in milliseconds; `None` when nothing was recorded.
    pub(crate) fn ms(&self, percentile: f64) -> Option<f64> {
        (self.count() > 0).then(|| self.0.value_at_percentile(percentile) as f64 / 1000.0)
    }

    pub(crate) fn max_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.0.max() as f64 / 1000.0)
    }

    /// `<prefix>_p50_ms` ... `<prefix>_max_ms` into `report`.
    pub(crate) fn write(&self, prefix: &str, report: &mut Report) {
        for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)] {
            report.set(&format!("{prefix}_{name}_ms"), round(self.ms(p)));
        }
        report.set(&format!("{prefix}_max_ms"), round(self.max_ms()));
    }

    /// `p50 1.23 ms  p90 ...` for people.
    pub(crate) fn line(&self) -> String {
        let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} ms"));
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            show(self.ms(50.0)),
            show(self.ms(90.0)),
            show(self.ms(99.0)),
            show(self.ms(99.9)),
            show(self.max_ms())
        )
    }
}

fn round(value: Option<f64>) -> Value {
    value.map_or(Value::Null, |v| json!((v * 1000.0).round() / 1000.0))
}

/// The figures of one run, in the order they were set: one JSON object, or lines for people.
#[derive(Debug, Default)]
pub(crate) struct Report {
    fields: Map<String, Value>,
    lines: Vec<String>,
    /// What the checker found wrong; empty means the run passed.
    pub(crate) violations: Vec<String>,
}

impl Report {
    pub(crate) fn new(scenario: &str) -> Self {
        let mut report = Self::default();
        report.set("scenario", scenario);
        report
    }

    pub(crate) fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.insert(key.to_owned(), value.into());
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// A line for people (not part of the JSON).
    pub(crate) fn say(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    pub(crate) fn fail(&mut self, violation: impl Into<String>) {
        self.violations.push(violation.into());
    }

    /// Prints the report; JSON gets the verdict as `passed` and `violations`.
    pub(crate) fn print(mut self, json: bool) {
        let passed = self.violations.is_empty();
        if json {
            self.set("passed", passed);
            self.set("violations", self.violations.clone());
            println!("{}", Value::Object(self.fields));
        } else {
            for line in &self.lines {
                println!("{line}");
            }
            if passed {
                println!("checker     ok");
            } else {
                for violation in &self.violations {
                    println!("checker     FAIL: {violation}");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let mut latency = Latency::default();
        assert_eq!(latency.ms(50.0), None);
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        let p50 = latency.ms(50.0).unwrap();
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        let p99 = latency.ms(99.0).unwrap();
        assert!((98.9..=99.1).contains(&p99), "{p99}");
        assert!((99.9..=100.1).contains(&latency.max_ms().unwrap()));
        let mut report = Report::new("x");
        latency.write("e2e", &mut report);
        assert!(report.get("e2e_p999_ms").unwrap().as_f64().unwrap() > 99.0);
    }
}
