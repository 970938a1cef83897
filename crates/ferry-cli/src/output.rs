//! The one place that writes to the terminal: results (human or JSON) to stdout, errors,
//! progress bars and prompts to stderr. JSON mode prints exactly one document on stdout.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use ferry_migrate::{Direction, Observer};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::opt::OutputFormat;

pub struct Printer {
    pub format: OutputFormat,
}

impl Printer {
    pub fn json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Prints a result: its JSON form, or the text `human` renders.
    pub fn emit<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) {
        let text = if self.json() {
            serde_json::to_string_pretty(value)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        } else {
            human(value)
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", text.trim_end());
    }

    /// A warning: a sentence on stderr, in both modes (JSON mode also lists it in the result's
    /// `warnings`, see [`Warned`]).
    pub fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }

    /// A line of live progress on stdout (human mode only; JSON mode prints one document).
    pub fn line(&self, text: &str) {
        if !self.json() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    /// The sentence of an error whose result was already printed (a deploy report): stderr only.
    pub fn error_reported(&self, message: &str) {
        eprintln!("error: {message}");
    }

    /// Prints an error: always a sentence on stderr; in JSON mode also `{"error": ...}` on stdout.
    pub fn error(&self, message: &str, kind: &str, code: u8) {
        if self.json() {
            let doc = serde_json::json!({ "error": { "kind": kind, "message": message, "exit_code": code } });
            println!("{doc:#}");
        }
        eprintln!("error: {message}");
    }

    /// A progress bar at a terminal in human mode; hidden otherwise. It learns its length from
    /// the engine's first event, so nothing is planned outside the migration lock just to draw it.
    pub fn progress(&self) -> Progress {
        let bar = if !self.json() && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// Whether a person can answer a question now (a terminal, human output).
    pub fn can_ask(&self) -> bool {
        !self.json() && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    /// Asks a yes/no question when a person is at the terminal. Returns `None` when nobody can
    /// answer (no TTY, or JSON mode): the caller proceeds, as CI expects.
    pub fn confirm(&self, question: &str) -> Option<bool> {
        if !self.can_ask() {
            return None;
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() {
            return Some(false);
        }
        Some(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
    }
}

pub struct Progress {
    bar: ProgressBar,
}

/// A progress bar in bytes (with rate) for backups at a terminal in human mode; hidden otherwise.
pub fn byte_progress(printer: &Printer) -> std::sync::Arc<dyn ferry_backup::Progress> {
    let bar = if !printer.json() && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    std::sync::Arc::new(BytesBar { bar })
}

struct BytesBar {
    bar: ProgressBar,
}

impl ferry_backup::Progress for BytesBar {
    fn bytes(&self, phase: ferry_backup::Phase, done: u64, total: Option<u64>, _rate: f64) {
        let what = match phase {
            ferry_backup::Phase::Dump => "dumping",
            ferry_backup::Phase::Verify => "verifying",
            ferry_backup::Phase::Restore => "restoring",
        };
        match total {
            Some(total) => {
                if self.bar.length() != Some(total) {
                    self.bar.set_length(total);
                    self.bar.set_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                }
            }
            None => self.bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} {bytes} {binary_bytes_per_sec} ({elapsed})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        }
        self.bar.set_message(what);
        self.bar.set_position(done);
    }
}

impl Drop for BytesBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Progress {
    fn started(&self, label: &str, direction: Direction, index: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(index as u64);
        self.bar.set_message(format!("{direction} {label}"));
    }

    fn finished(&self, _label: &str, _direction: Direction, _elapsed: Duration) {
        self.bar.inc(1);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Renders rows as a left-aligned text table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The live lines of `ferry deploy` and `ferry rollback`: one per step as it ends (human mode),
/// and at a terminal a spinner with the running step, its time and the host being rolled out.
pub struct StepLines<'a> {
    printer: &'a Printer,
    bar: ProgressBar,
    current: std::sync::Mutex<String>,
}

impl<'a> StepLines<'a> {
    pub fn new(printer: &'a Printer) -> Self {
        let bar = if !printer.json() && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        StepLines {
            printer,
            bar,
            current: std::sync::Mutex::new(String::new()),
        }
    }
}

/// `  migrate      ok        120 ms  applied …`
pub fn step_line(step: &ferry_deploy::Step) -> String {
    let status = match step.status {
        ferry_deploy::StepStatus::Succeeded => "ok",
        ferry_deploy::StepStatus::Failed => "FAILED",
        ferry_deploy::StepStatus::Refused => "REFUSED",
        ferry_deploy::StepStatus::Skipped => "skipped",
        ferry_deploy::StepStatus::Running => "running",
        ferry_deploy::StepStatus::Interrupted => "INTERRUPTED",
        ferry_deploy::StepStatus::Planned => "plan",
    };
    format!(
        "  {:<12} {:<8} {:>7}  {}",
        step.name,
        status,
        format!("{} ms", step.duration_ms),
        step.detail
    )
}

impl ferry_rollout::RolloutObserver for StepLines<'_> {
    fn host(&self, name: &str, phase: ferry_rollout::HostPhase) {
        let step = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        let phase = phase.as_str();
        self.bar.set_message(format!("{step}: {name} {phase}"));
    }
}

impl ferry_deploy::DeployObserver for StepLines<'_> {
    fn step_started(&self, _phase: ferry_deploy::Phase, name: &str) {
        if let Ok(mut c) = self.current.lock() {
            *c = name.to_string();
        }
        self.bar.reset_elapsed();
        self.bar.set_message(name.to_string());
    }

    fn step_finished(&self, phase: ferry_deploy::Phase, step: &ferry_deploy::Step) {
        let prefix = if phase == ferry_deploy::Phase::Rollback {
            "  rollback"
        } else {
            ""
        };
        let line = format!("{prefix}{}", step_line(step));
        self.bar.suspend(|| self.printer.line(&line));
        self.bar.set_message(String::new());
    }
}

impl Drop for StepLines<'_> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A result with the warnings met while producing it: the result's own keys and `warnings`
/// (always present, empty when there were none) in JSON.
#[derive(Serialize)]
pub struct Warned<'a, T: Serialize> {
    #[serde(flatten)]
    pub result: &'a T,
    pub warnings: &'a [String],
}
