//! The last hour of activity per front-end for the status page: a thread of its own reads the
//! metrics' counters every [`SAMPLE_EVERY`] (so the history runs whether anybody looks or
//! not) into a ring of an hour's samples, and the page draws their rates as an inline SVG (no
//! script needed).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics::{Metrics, ACTIVITY};

/// How often the counters are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Samples kept: an hour of intervals, and the one before the first.
const SAMPLES: usize = 361;

/// The counters of [`ACTIVITY`] at moments, oldest first.
pub struct History {
    samples: Mutex<VecDeque<(SystemTime, [u64; ACTIVITY.len()])>>,
}

/// The rates of [`ACTIVITY`] (per second) over the interval that ended at `at` (Unix seconds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rates {
    pub at: u64,
    pub per_second: [f64; ACTIVITY.len()],
}

impl History {
    /// The history, and the thread that samples `metrics` into it.
    pub fn start(metrics: Arc<Metrics>) -> Result<Arc<History>, String> {
        let history = Arc::new(History {
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
        });
        let sampled = history.clone();
        std::thread::Builder::new()
            .name("admin-history".into())
            .spawn(move || loop {
                sampled.sample(SystemTime::now(), metrics.activity());
                std::thread::sleep(SAMPLE_EVERY);
            })
            .map_err(|e| format!("admin: {e}"))?;
        Ok(history)
    }

    fn sample(&self, at: SystemTime, counts: [u64; ACTIVITY.len()]) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back((at, counts));
    }

    /// The rates of [`ACTIVITY`] from the newest sample at least `window` before `now`
    /// (the oldest sample if none is that old) to `now`'s counts; zero over less than a
    /// second.
    pub fn rates_since(
        &self,
        (now, counts): (SystemTime, [u64; ACTIVITY.len()]),
        window: Duration,
    ) -> [f64; ACTIVITY.len()] {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let age = |at: &SystemTime| now.duration_since(*at).unwrap_or_default();
        let from = samples
            .iter()
            .rev()
            .find(|(at, _)| age(at) >= window)
            .or(samples.front());
        let mut rates = [0.0; ACTIVITY.len()];
        if let Some((at, then)) = from.filter(|(at, _)| age(at) >= Duration::from_secs(1)) {
            let seconds = age(at).as_secs_f64();
            for (n, rate) in rates.iter_mut().enumerate() {
                *rate = counts[n].saturating_sub(then[n]) as f64 / seconds;
            }
        }
        rates
    }

    /// The rate of each interval between two samples, oldest first.
    pub fn rates(&self) -> Vec<Rates> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|((before, then), (at, now))| {
                let seconds = at
                    .duration_since(*before)
                    .unwrap_or_default()
                    .as_secs_f64()
                    .max(0.001);
                let mut per_second = [0.0; ACTIVITY.len()];
                for (n, rate) in per_second.iter_mut().enumerate() {
                    *rate = now[n].saturating_sub(then[n]) as f64 / seconds;
                }
                Rates {
                    at: at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                    per_second,
                }
            })
            .collect()
    }
}

/// Colours of the chart's lines, in [`ACTIVITY`]'s order.
const COLOURS: [&str; ACTIVITY.len()] = ["#c83c28", "#285ab4", "#3c963c", "#a050b4"];

/// The last hour's rates as an SVG line chart: time across (now at the right), rate up.
pub fn svg(rates: &[Rates], now: SystemTime) -> String {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 220.0;
    const LEFT: f64 = 60.0;
    const BOTTOM: f64 = 30.0;
    const TOP: f64 = 30.0;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as f64;
    let hour = 3600.0;
    let highest = rates.iter().flat_map(|r| r.per_second).fold(1.0, f64::max) * 1.1;
    let x = |at: u64| LEFT + (WIDTH - LEFT - 10.0) * (1.0 - ((now - at as f64) / hour).min(1.0));
    let y = |rate: f64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - rate / highest);
    let mut svg = format!(
        "<svg id=\"rates-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\
         <line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#999\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}/s</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\
         <text x=\"{LEFT}\" y=\"{}\">an hour ago</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">now</text>",
        HEIGHT - BOTTOM,
        WIDTH - 10.0,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
        LEFT - 4.0,
        TOP + 4.0,
        highest,
        LEFT - 4.0,
        HEIGHT - BOTTOM,
        HEIGHT - 10.0,
        WIDTH - 10.0,
        HEIGHT - 10.0,
    );
    for (n, (name, colour)) in ACTIVITY.iter().zip(COLOURS).enumerate() {
        let points: Vec<String> = rates
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r.at), y(r.per_second[n])))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"18\" fill=\"{colour}\">{name}</text>",
            points.join(" "),
            LEFT + 160.0 * n as f64,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_counters_differences_over_the_seconds_between_samples() {
        let history = History {
            samples: Mutex::new(VecDeque::new()),
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        history.sample(start, [0, 0, 0, 0]);
        history.sample(start + Duration::from_secs(10), [100, 50, 0, 10]);
        history.sample(start + Duration::from_secs(20), [100, 150, 20, 10]);
        let rates = history.rates();
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[0].at, 1_010);
        assert_eq!(rates[0].per_second, [10.0, 5.0, 0.0, 1.0]);
        assert_eq!(rates[1].per_second, [0.0, 10.0, 2.0, 0.0]);
        let chart = svg(&rates, start + Duration::from_secs(20));
        assert_eq!(chart.matches("<polyline").count(), ACTIVITY.len());
        assert!(chart.starts_with("<svg") && chart.ends_with("</svg>"));
    }

    #[test]
    fn recent_rates_run_from_the_newest_sample_old_enough_to_now() {
        let history = History {
            samples: Mutex::new(VecDeque::new()),
        };
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let now = |s| start + Duration::from_secs(s);
        assert_eq!(
            history.rates_since((now(5), [9; 4]), SAMPLE_EVERY),
            [0.0; 4]
        );
        history.sample(start, [0, 0, 0, 0]);
        history.sample(now(10), [100, 0, 0, 0]);
        history.sample(now(20), [300, 0, 0, 0]);
        // 15 s after the start: the last 10 s began at the sample of 10 s before or older.
        let counts = [400, 0, 0, 0];
        assert_eq!(
            history.rates_since((now(25), counts), SAMPLE_EVERY)[0],
            20.0
        );
        // A minute: older than every sample, so from the oldest.
        let minute = Duration::from_secs(60);
        assert_eq!(history.rates_since((now(25), counts), minute)[0], 16.0);
    }

    #[test]
    fn the_ring_keeps_an_hour() {
        let history = History {
            samples: Mutex::new(VecDeque::new()),
        };
        for n in 0..1000 {
            history.sample(UNIX_EPOCH + Duration::from_secs(10 * n), [n; 4]);
        }
        assert_eq!(history.rates().len(), SAMPLES - 1);
    }
}
