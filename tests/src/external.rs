//! Running an external client program (curl, nghttp, h2load, Chromium) to completion within
//! a time limit, its standard output kept as bytes (a downloaded body) and its standard error
//! as text.
//!
//! The program leads its own process group ([`ProcessGuard`]): a timeout or a panic stops
//! it and every process it started (Chromium's renderers) by that group's id.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::synapse::ProcessGuard;

/// What a finished (or stopped) program left.
#[derive(Debug)]
pub struct Ran {
    /// What was run, for messages.
    pub shown: String,
    /// `None`: it did not finish within the limit and was stopped.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub seconds: f64,
}

impl Ran {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics, showing the command and its output, unless it exited 0.
    pub fn expect_success(&self, context: &str) -> &Ran {
        assert!(self.success(), "{context}: {}", self.describe(4000));
        self
    }

    /// The command, how it ended and (cut) what it printed.
    pub fn describe(&self, max: usize) -> String {
        let ended = match self.status {
            Some(s) => s.to_string(),
            None => "stopped: did not finish within its time limit".to_owned(),
        };
        format!(
            "`{}` ({ended}, {:.1} s)\n--- stdout:\n{}\n--- stderr:\n{}",
            cut(&self.shown, 600),
            self.seconds,
            crate::show(&self.stdout, max),
            cut(&self.stderr, max)
        )
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

/// Runs `cmd` (stdin empty) until it exits or `timeout` passes, then stops its process group.
/// `dir` receives its output files.
pub fn run(name: &'static str, mut cmd: Command, dir: &Path, timeout: Duration) -> Ran {
    let shown = format!("{cmd:?}");
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    let out = File::create(&out_path).expect("stdout file");
    let err = File::create(&err_path).expect("stderr file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let t0 = Instant::now();
    let mut guard = ProcessGuard::spawn(name, cmd)
        .unwrap_or_else(|e| panic!("cannot start {name} ({shown}): {e}"));
    let deadline = t0 + timeout;
    let status = loop {
        if let Some(st) = guard.exited() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            println!("{name} still running after {timeout:?}: stopping it");
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Also ends what it left running in its group.
    guard.stop();
    drop(guard);
    Ran {
        shown,
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&fs::read(&err_path).unwrap_or_default()).into_owned(),
        seconds: t0.elapsed().as_secs_f64(),
    }
}
