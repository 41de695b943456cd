//! CPU seconds and peak memory of every process taking part, read from
//! `/proc`: the three services, the broker, PostgreSQL (all its processes)
//! and this load generator.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The processes watched, by name, and how to find them.
#[derive(Debug, Clone)]
pub enum Who {
    Pid(u32),
    /// Every process whose command name is this (e.g. `postgres`).
    Command(&'static str),
    /// This process.
    Me,
}

#[derive(Debug, Default, Clone)]
struct Reading {
    /// Clock ticks of user + system time, per pid.
    ticks: HashMap<u32, u64>,
    /// Private resident memory plus the largest shared part, in kB.
    rss_kb: u64,
}

/// Samples every watched process periodically while it lives; keeps peaks.
#[derive(Debug, Clone)]
pub struct Resources {
    watched: Arc<Vec<(&'static str, Who)>>,
    peak_rss_kb: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

/// CPU seconds per process name at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot(BTreeMap<&'static str, HashMap<u32, u64>>);

impl Resources {
    /// Starts sampling `watched` every 200 ms until this is dropped.
    pub fn watch(watched: Vec<(&'static str, Who)>) -> Self {
        let this = Self {
            watched: Arc::new(watched),
            peak_rss_kb: Arc::default(),
        };
        let watched = Arc::clone(&this.watched);
        let peaks = Arc::downgrade(&this.peak_rss_kb);
        tokio::spawn(async move {
            while let Some(peaks) = peaks.upgrade() {
                sample_memory(&watched, &peaks);
                drop(peaks);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        this
    }

    /// The CPU ticks of every watched process now.
    pub fn cpu(&self) -> CpuSnapshot {
        CpuSnapshot(
            self.watched
                .iter()
                .map(|(name, who)| (*name, read(who).ticks))
                .collect(),
        )
    }

    /// Peak resident memory per name, in MB.
    pub fn peak_rss_mb(&self) -> BTreeMap<&'static str, f64> {
        sample_memory(&self.watched, &self.peak_rss_kb);
        self.peak_rss_kb
            .lock()
            .map(|p| p.iter().map(|(k, v)| (*k, *v as f64 / 1024.0)).collect())
            .unwrap_or_default()
    }
}

impl CpuSnapshot {
    /// CPU seconds spent per name since `earlier` (processes that appeared
    /// since count whole).
    pub fn since(&self, earlier: &CpuSnapshot) -> BTreeMap<&'static str, f64> {
        let ticks_per_second = 100.0; // USER_HZ on Linux
        self.0
            .iter()
            .map(|(name, now)| {
                let before = earlier.0.get(name);
                let ticks: u64 = now
                    .iter()
                    .map(|(pid, t)| {
                        t.saturating_sub(before.and_then(|b| b.get(pid)).copied().unwrap_or(0))
                    })
                    .sum();
                (*name, ticks as f64 / ticks_per_second)
            })
            .collect()
    }
}

fn sample_memory(watched: &[(&'static str, Who)], peaks: &Mutex<BTreeMap<&'static str, u64>>) {
    let Ok(mut peaks) = peaks.lock() else {
        return;
    };
    for (name, who) in watched {
        let rss = read(who).rss_kb;
        let peak = peaks.entry(name).or_default();
        *peak = (*peak).max(rss);
    }
}

fn pids(who: &Who) -> Vec<u32> {
    match who {
        Who::Pid(pid) => vec![*pid],
        Who::Me => vec![std::process::id()],
        Who::Command(command) => std::fs::read_dir("/proc")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|pid| {
                        std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .is_ok_and(|c| c.trim() == *command)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn read(who: &Who) -> Reading {
    let mut reading = Reading::default();
    let mut private_kb = 0;
    let mut shared_kb = 0;
    for pid in pids(who) {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((_, after_name)) = stat.rsplit_once(')')
        {
            // Fields after the name start at field 3; utime and stime are 14 and 15.
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
            if let (Some(user), Some(system)) = (field(14), field(15)) {
                reading.ticks.insert(pid, user + system);
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let kb = |key: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            private_kb += kb("RssAnon:");
            shared_kb = shared_kb.max(kb("RssShmem:") + kb("RssFile:"));
        }
    }
    reading.rss_kb = private_kb + shared_kb;
    reading
}
