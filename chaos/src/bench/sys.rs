//! What the kernel says about the run's processes, from `/proc`: CPU time of a process
//! and its descendants, a process's peak RSS, and the whole machine's busy time (to tell
//! how much of the machine the run had to share with processes outside it).
//!
//! CPU is counted by process tree, not by process group: Postgres puts each backend in a
//! session of its own (`setsid`), so only the parent links find them all.

use std::collections::HashMap;
use std::process::Command;

/// Clock ticks per second of `/proc`'s CPU times (`getconf CLK_TCK`; 100 if unknown).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One process's `/proc/<pid>/stat`: its parent and user + system CPU ticks of itself
/// and of the children it reaped.
#[derive(Clone, Copy, Debug)]
struct Stat {
    ppid: u32,
    ticks: u64,
}

/// Parses `/proc/<pid>/stat` (the command name may hold spaces and parentheses: the
/// fields are counted after the last `)`).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after the name: state(3) ppid(4) pgrp(5) ... utime(14) stime(15) cutime(16) cstime(17)
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(n(4)?).ok()?,
        ticks: n(14)? + n(15)? + n(16)? + n(17)?,
    })
}

fn stat_of(pid: &str) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds of this process so far (reaped children included: the `psql` and
/// `pgbench` it ran).
pub fn own_cpu_seconds(ticks_per_sec: f64) -> f64 {
    stat_of("self").map_or(0.0, |s| s.ticks as f64 / ticks_per_sec)
}

/// Every process's parent and CPU ticks, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Processes {
    stats: HashMap<u32, Stat>,
    ticks_per_sec: f64,
}

impl Processes {
    /// Reads `/proc` now.
    pub fn read(ticks_per_sec: f64) -> Self {
        let mut stats = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some(s) = stat_of(&pid.to_string()) {
                    stats.insert(pid, s);
                }
            }
        }
        Self {
            stats,
            ticks_per_sec,
        }
    }

    /// CPU seconds so far of `root` and every descendant of it (user + system; a process
    /// that exited is in the count of the parent that reaped it).
    pub fn tree_seconds(&self, root: u32) -> f64 {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, s) in &self.stats {
            children.entry(s.ppid).or_default().push(*pid);
        }
        let (mut ticks, mut todo) = (0u64, vec![root]);
        while let Some(pid) = todo.pop() {
            if let Some(s) = self.stats.get(&pid) {
                ticks += s.ticks;
                todo.extend(children.get(&pid).into_iter().flatten());
            }
        }
        ticks as f64 / self.ticks_per_sec
    }
}

/// Busy CPU seconds of the whole machine so far, every CPU summed (`/proc/stat`: all but
/// idle and iowait), and the number of CPUs.
pub fn machine_busy_seconds(ticks_per_sec: f64) -> (f64, usize) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    let busy = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal (guest is inside user)
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            at(0) + at(1) + at(2) + at(5) + at(6) + at(7)
        })
        .unwrap_or(0);
    (busy as f64 / ticks_per_sec, cpus.max(1))
}

/// Peak resident set size of process `pid` (`VmHWM`), bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size of this process now (`VmRSS`), bytes.
pub fn own_rss_bytes() -> Option<u64> {
    status_kb("self", "VmRSS:").map(|kb| kb * 1024)
}

/// Peak resident set size of this process so far (`VmHWM`), bytes.
pub fn own_peak_rss_bytes() -> Option<u64> {
    status_kb("self", "VmHWM:").map(|kb| kb * 1024)
}

fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The soft limit on open files of this process (`/proc/self/limits`, "Max open files");
/// `None` when unlimited or unreadable.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&text)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Total memory of the machine (`MemTotal`), bytes.
pub fn memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_after_the_command_name_whatever_it_holds() {
        let line = "42 (weird) name (x)) S 1 40 40 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.ppid, 1);
        assert_eq!(s.ticks, 250 + 50 + 7 + 3);
    }

    #[test]
    fn this_process_has_a_peak_rss_and_the_machine_a_cpu() {
        assert!(peak_rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert!(machine_busy_seconds(clock_ticks()).1 >= 1);
    }

    #[test]
    fn the_soft_open_files_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95541                95541                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(1024));
        assert_eq!(
            parse_open_files_limit(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert!(own_rss_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn a_tree_counts_its_descendants_and_nothing_else() {
        let stat = |ppid, ticks| Stat { ppid, ticks };
        let p = Processes {
            stats: HashMap::from([
                (10, stat(1, 100)),
                (11, stat(10, 50)),
                (12, stat(11, 25)),
                (20, stat(1, 1000)),
            ]),
            ticks_per_sec: 100.0,
        };
        assert_eq!(p.tree_seconds(10), 1.75);
        assert_eq!(p.tree_seconds(11), 0.75);
        assert_eq!(p.tree_seconds(99), 0.0);
    }
}
