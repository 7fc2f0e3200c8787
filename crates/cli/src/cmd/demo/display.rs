//! How the demo shows itself: a live table on a terminal, plain lines when stdout is a
//! pipe or a file, nothing but the final JSON with `--format json`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    Lines,
    Quiet,
}

pub struct Display {
    mode: Mode,
    multi: MultiProgress,
    spinner: ProgressBar,
}

impl Display {
    pub fn new(json: bool) -> Display {
        let mode = if json {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            Mode::Live
        } else {
            Mode::Lines
        };
        let multi = MultiProgress::with_draw_target(if mode == Mode::Live {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        });
        let spinner = multi.add(ProgressBar::new_spinner());
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        if mode == Mode::Live {
            spinner.enable_steady_tick(Duration::from_millis(80));
        }
        Display {
            mode,
            multi,
            spinner,
        }
    }

    /// A line of the story (above the live parts on a terminal).
    pub fn line(&self, text: impl AsRef<str>) {
        match self.mode {
            Mode::Live => {
                let _ = self.multi.println(text.as_ref());
            }
            Mode::Lines => println!("{}", text.as_ref()),
            Mode::Quiet => {}
        }
    }

    /// What the demo is waiting for now (a spinner on a terminal, nothing elsewhere).
    pub fn working(&self, what: impl Into<String>) {
        self.spinner.set_message(what.into());
    }

    /// A table with one row per `rows` entry, updated in place on a terminal; elsewhere
    /// each row prints once, when it is done.
    pub fn table(&self, rows: &[String]) -> Table {
        let bars = rows
            .iter()
            .map(|name| {
                let bar = self
                    .multi
                    .insert_before(&self.spinner, ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {prefix:<12} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(name.clone());
                bar
            })
            .collect();
        Table {
            mode: self.mode,
            names: rows.to_vec(),
            bars,
        }
    }

    pub fn finish(&self) {
        self.spinner.finish_and_clear();
    }
}

pub struct Table {
    mode: Mode,
    names: Vec<String>,
    bars: Vec<ProgressBar>,
}

impl Table {
    /// Row `i` changes (shown only on a terminal).
    pub fn update(&self, i: usize, text: String) {
        if let Some(b) = self.bars.get(i) {
            b.set_message(text);
        }
    }

    /// Row `i` reached its final state.
    pub fn done(&self, i: usize, text: String) {
        match self.mode {
            Mode::Live => {
                if let Some(b) = self.bars.get(i) {
                    b.finish_with_message(text);
                }
            }
            Mode::Lines => {
                let name = self.names.get(i).map(String::as_str).unwrap_or_default();
                println!("  {name:<12} {text}");
            }
            Mode::Quiet => {}
        }
    }
}
