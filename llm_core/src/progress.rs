//! A progress line for long loops: step/total, the metrics you set (loss …),
//! tokens per second and the time left.
//!
//! In a terminal the line is a bar redrawn in place by [`indicatif`] at
//! most every 0.25 s, with evaluations and samples printed above it. Anywhere else — a Jupyter notebook, a log file — a redrawn
//! line would be saved as dozens of fragments, so whole lines are printed
//! instead: one at each tenth of the way (no more often than every 10 s)
//! and the final one, so a saved notebook or log reads cleanly.
//!
//! ```
//! use llm_core::progress::Progress;
//!
//! let mut bar = Progress::new("epoch 1", 90);
//! for step in 0..90 {
//!     bar.set("loss", 3.0 / (step + 1) as f64);
//!     bar.add_tokens(512);
//!     bar.inc(1);
//! }
//! bar.finish(); // prints the final line and a newline
//! ```

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Redraw in place (a terminal), at most this often.
    InPlace(Duration),
    /// Print whole lines: one at each tenth of the way, at most this often.
    Lines(Duration),
    /// Print nothing at all.
    Quiet,
}

/// An in-place progress line. See the [module docs](self).
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: usize,
    position: usize,
    tokens: u64,
    metrics: Vec<(String, f64)>,
    start: Instant,
    last_draw: Option<Instant>,
    /// The position at the last drawn line.
    drawn_at: usize,
    mode: Mode,
    finished: bool,
    /// The terminal bar (in-place mode only).
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A progress line for `total` steps, labelled `label`.
    pub fn new(label: &str, total: usize) -> Self {
        let in_jupyter = std::env::var_os("EVCXR_IS_RUNTIME").is_some();
        let mode = if !in_jupyter && std::io::stdout().is_terminal() {
            Mode::InPlace(Duration::from_millis(250))
        } else {
            Mode::Lines(Duration::from_secs(10))
        };
        Progress {
            label: label.to_string(),
            total,
            position: 0,
            tokens: 0,
            metrics: Vec::new(),
            start: Instant::now(),
            last_draw: None,
            drawn_at: 0,
            mode,
            finished: false,
            bar: None,
        }
    }

    /// Print nothing at all, not even [`Progress::println`] and
    /// [`Progress::finish`] (for tests and `quiet` options).
    pub fn quiet(mut self) -> Self {
        self.mode = Mode::Quiet;
        self
    }

    /// Set a metric shown on the line (e.g. `loss`); keeps the order of first use.
    pub fn set(&mut self, name: &str, value: f64) {
        match self.metrics.iter_mut().find(|(n, _)| n == name) {
            Some(m) => m.1 = value,
            None => self.metrics.push((name.to_string(), value)),
        }
    }

    /// Count tokens processed (shown as tokens per second).
    pub fn add_tokens(&mut self, n: u64) {
        self.tokens += n;
    }

    /// Advance by `n` steps and redraw if it is time to.
    pub fn inc(&mut self, n: usize) {
        self.set_position(self.position + n);
    }

    /// Jump to step `position` and redraw if it is time to.
    pub fn set_position(&mut self, position: usize) {
        self.position = position;
        let due = match (self.mode, self.last_draw) {
            (Mode::Quiet, _) => false,
            (_, None) => true,
            (Mode::InPlace(every), Some(t)) => t.elapsed() >= every,
            (Mode::Lines(every), Some(t)) => {
                let tenth = |p: usize| p * 10 / self.total.max(1);
                tenth(position) > tenth(self.drawn_at) && t.elapsed() >= every
            }
        };
        if due {
            self.draw(false);
        }
    }

    /// Current step.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Time since the progress line was created.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Tokens per second so far.
    pub fn tokens_per_second(&self) -> f64 {
        let s = self.start.elapsed().as_secs_f64();
        if s > 0.0 {
            self.tokens as f64 / s
        } else {
            0.0
        }
    }

    /// The line as it would be drawn now.
    pub fn line(&self) -> String {
        let mut s = String::new();
        let width = self.total.max(1).to_string().len();
        let _ = write!(
            s,
            "{} [{:>width$}/{}]",
            self.label, self.position, self.total
        );
        if self.total > 0 {
            let _ = write!(
                s,
                " {:5.1}%",
                100.0 * self.position as f64 / self.total as f64
            );
        }
        for (name, value) in &self.metrics {
            let _ = write!(s, " | {name} {}", format_metric(*value));
        }
        if self.tokens > 0 {
            let _ = write!(s, " | {} tok/s", format_count(self.tokens_per_second()));
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let _ = write!(s, " | {}", format_duration(elapsed));
        if !self.finished && self.position > 0 && self.position < self.total {
            let left = elapsed / self.position as f64 * (self.total - self.position) as f64;
            let _ = write!(s, " ETA {}", format_duration(left));
        }
        s
    }

    fn draw(&mut self, last: bool) {
        let line = self.line();
        let mut out = std::io::stdout().lock();
        let _ = match self.mode {
            Mode::InPlace(_) => {
                let total = self.total as u64;
                let bar = self.bar.get_or_insert_with(|| {
                    let bar = indicatif::ProgressBar::with_draw_target(
                        Some(total),
                        indicatif::ProgressDrawTarget::stdout(),
                    );
                    if let Ok(style) =
                        indicatif::ProgressStyle::with_template("{bar:20.cyan/blue} {wide_msg}")
                    {
                        bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
                    }
                    bar
                });
                bar.set_position(self.position as u64);
                bar.set_message(line);
                if last {
                    bar.finish();
                }
                Ok(())
            }
            Mode::Lines(_) => writeln!(out, "{line}"),
            Mode::Quiet => return,
        };
        let _ = out.flush();
        self.last_draw = Some(Instant::now());
        self.drawn_at = self.position;
    }

    /// Print a whole line of text (such as an evaluation result) above the
    /// progress line, which is redrawn below it at the next step.
    pub fn println(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = match (&self.mode, &self.bar) {
            (Mode::Quiet, _) => return,
            // above the bar, which indicatif redraws below it
            (Mode::InPlace(_), Some(bar)) if !bar.is_finished() => {
                bar.println(text);
                Ok(())
            }
            _ => writeln!(out, "{text}"),
        };
        let _ = out.flush();
    }

    /// Draw the final line and end it with a newline.
    pub fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.draw(true);
        }
    }
}

fn format_metric(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn format_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// `m:ss`, or `h:mm:ss` past an hour.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_step_metrics_and_eta() {
        let _rng = crate::rng_lock();
        let mut p = Progress::new("train", 200).quiet();
        p.set("loss", 3.25);
        p.set("lr", 4e-4);
        p.set("loss", 2.5);
        p.inc(50);
        let line = p.line();
        assert!(line.starts_with("train [ 50/200]  25.0%"), "{line}");
        assert!(line.contains("| loss 2.5000 | lr 4.000e-4"), "{line}");
        assert!(line.contains("ETA"), "{line}");
        p.finish();
        assert!(!p.line().contains("ETA"));
    }

    #[test]
    fn lines_mode_draws_at_each_tenth_at_most() {
        let _rng = crate::rng_lock();
        let mut p = Progress::new("train", 1000);
        p.mode = Mode::Lines(Duration::ZERO);
        let mut drawn = Vec::new();
        for _ in 0..1000 {
            p.inc(1);
            if p.drawn_at == p.position {
                drawn.push(p.position);
            }
        }
        assert_eq!(
            drawn,
            [1, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
        );
    }

    #[test]
    fn durations() {
        let _rng = crate::rng_lock();
        assert_eq!(format_duration(59.4), "0:59");
        assert_eq!(format_duration(61.0), "1:01");
        assert_eq!(format_duration(3723.0), "1:02:03");
    }
}
