//! The facts a heartbeat carries, read from Linux: uptime, load averages and memory from
//! `/proc`, the root filesystem's size from `statvfs`, and the kernel's boot id.
//!
//! The parsers are pure functions over the files' text; bad input is a [`FactsError`],
//! never a panic.

use std::path::{Path, PathBuf};

use hearth_protocol::{BootId, Filesystem, Heartbeat, Memory, ProtocolVersion};
use time::OffsetDateTime;

/// A fact that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{file}: {detail}")]
    Parse { file: &'static str, detail: String },
}

fn parse_err(file: &'static str, detail: impl Into<String>) -> FactsError {
    FactsError::Parse { file, detail: detail.into() }
}

/// One reading of the appliance's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub boot_id: BootId,
    pub uptime_s: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    pub memory: Memory,
    pub root_fs: Filesystem,
    /// Seconds east of UTC now, from the time zone (`TZ`, else `/etc/localtime`); `None`
    /// when it cannot be read.
    pub utc_offset_s: Option<i32>,
}

impl Facts {
    /// The heartbeat carrying these facts.
    pub fn heartbeat(&self, seq: u64, sent_at: OffsetDateTime) -> Heartbeat {
        Heartbeat {
            v: ProtocolVersion,
            sent_at,
            boot_id: self.boot_id,
            seq,
            agent_version: crate::VERSION.to_string(),
            uptime_s: self.uptime_s,
            load: self.load,
            memory: self.memory,
            root_fs: self.root_fs,
            utc_offset_s: self.utc_offset_s,
        }
    }
}

/// Where facts are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactsSource {
    /// Normally `/proc`.
    pub proc_root: PathBuf,
    /// The filesystem reported as `root_fs`.
    pub root_fs_path: PathBuf,
}

impl Default for FactsSource {
    fn default() -> Self {
        Self { proc_root: PathBuf::from("/proc"), root_fs_path: PathBuf::from("/") }
    }
}

impl FactsSource {
    /// Reads every fact once.
    pub fn collect(&self) -> Result<Facts, FactsError> {
        let read = |rel: &str| -> Result<String, FactsError> {
            let path = self.proc_root.join(rel);
            std::fs::read_to_string(&path).map_err(|source| FactsError::Read { path, source })
        };
        Ok(Facts {
            boot_id: parse_boot_id(&read("sys/kernel/random/boot_id")?)?,
            uptime_s: parse_uptime(&read("uptime")?)?,
            load: parse_loadavg(&read("loadavg")?)?,
            memory: parse_meminfo(&read("meminfo")?)?,
            root_fs: filesystem(&self.root_fs_path)?,
            utc_offset_s: utc_offset(),
        })
    }
}

/// The local time zone's offset from UTC now, in seconds (DST included); `None` if the
/// time zone cannot be read (a rollout's window then takes the appliance's hours as UTC).
pub fn utc_offset() -> Option<i32> {
    offset_now(&tz::TimeZone::local().ok()?)
}

fn offset_now(zone: &tz::TimeZone) -> Option<i32> {
    zone.find_current_local_time_type().ok().map(|t| t.ut_offset())
}

/// `/proc/uptime`: `"350735.47 234388.90"` → whole seconds since boot.
pub fn parse_uptime(text: &str) -> Result<u64, FactsError> {
    const FILE: &str = "uptime";
    let first = text.split_whitespace().next().ok_or_else(|| parse_err(FILE, "empty"))?;
    let secs: f64 = first.parse().map_err(|_| parse_err(FILE, format!("{first:?} is not a number")))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(parse_err(FILE, format!("{first:?} is not a non-negative number")));
    }
    // Truncation is intended; `as` saturates at u64::MAX.
    Ok(secs.trunc() as u64)
}

/// `/proc/loadavg`: `"0.15 0.10 0.05 1/123 4567"` → the three load averages.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], FactsError> {
    const FILE: &str = "loadavg";
    let mut fields = text.split_whitespace();
    let mut load = [0.0; 3];
    for (i, slot) in load.iter_mut().enumerate() {
        let field = fields.next().ok_or_else(|| parse_err(FILE, format!("has {i} fields, expected at least 3")))?;
        let v: f64 = field.parse().map_err(|_| parse_err(FILE, format!("{field:?} is not a number")))?;
        if !v.is_finite() || v < 0.0 {
            return Err(parse_err(FILE, format!("{field:?} is not a non-negative number")));
        }
        *slot = v;
    }
    Ok(load)
}

/// `/proc/meminfo`: `MemTotal` and `MemAvailable` (kB) → bytes. Available is clamped to
/// total.
pub fn parse_meminfo(text: &str) -> Result<Memory, FactsError> {
    const FILE: &str = "meminfo";
    let field = |name: &str| -> Result<u64, FactsError> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
            .ok_or_else(|| parse_err(FILE, format!("no {name} line")))?;
        let mut parts = line.split_whitespace();
        let value = parts.next().ok_or_else(|| parse_err(FILE, format!("{name} has no value")))?;
        let value: u64 =
            value.parse().map_err(|_| parse_err(FILE, format!("{name} value {value:?} is not a whole number")))?;
        let multiplier = match parts.next() {
            Some("kB") => 1024,
            None => 1,
            Some(unit) => return Err(parse_err(FILE, format!("{name} has unknown unit {unit:?}"))),
        };
        value.checked_mul(multiplier).ok_or_else(|| parse_err(FILE, format!("{name} is too large")))
    };
    let total_bytes = field("MemTotal")?;
    let available_bytes = field("MemAvailable")?.min(total_bytes);
    Ok(Memory { total_bytes, available_bytes })
}

/// `/proc/sys/kernel/random/boot_id`: one UUID and a newline.
pub fn parse_boot_id(text: &str) -> Result<BootId, FactsError> {
    text.trim().parse().map_err(|e: hearth_protocol::IdParseError| parse_err("boot_id", e.to_string()))
}

/// Size and free space (for unprivileged users) of the filesystem holding `path`.
pub fn filesystem(path: &Path) -> Result<Filesystem, FactsError> {
    let st = rustix::fs::statvfs(path).map_err(|e| FactsError::Read { path: path.to_path_buf(), source: e.into() })?;
    Ok(filesystem_from_blocks(st.f_blocks, st.f_bavail, st.f_frsize))
}

/// Blocks × fragment size, saturating; available clamped to total.
pub fn filesystem_from_blocks(blocks: u64, available_blocks: u64, fragment_size: u64) -> Filesystem {
    let total_bytes = blocks.saturating_mul(fragment_size);
    let available_bytes = available_blocks.saturating_mul(fragment_size).min(total_bytes);
    Filesystem { total_bytes, available_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        2009484 kB\nMemFree:          123456 kB\nMemAvailable:    1004742 kB\nBuffers:           10000 kB\nHugePages_Total:       0\n";

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime("350735.47 234388.90\n").unwrap(), 350_735);
        assert_eq!(parse_uptime("0.99 0.5").unwrap(), 0);
        for bad in ["", "   \n", "abc 1.0", "-5.0 1", "NaN 1", "inf 1"] {
            let err = parse_uptime(bad).unwrap_err();
            assert!(err.to_string().starts_with("uptime: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn loadavg() {
        assert_eq!(parse_loadavg("0.15 0.10 0.05 1/123 4567\n").unwrap(), [0.15, 0.10, 0.05]);
        assert_eq!(parse_loadavg("1 2 3").unwrap(), [1.0, 2.0, 3.0]);
        for bad in ["", "0.1 0.2", "0.1 x 0.3", "0.1 -0.2 0.3", "NaN 0 0", "inf 0 0"] {
            let err = parse_loadavg(bad).unwrap_err();
            assert!(err.to_string().starts_with("loadavg: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn meminfo() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m, Memory { total_bytes: 2_009_484 * 1024, available_bytes: 1_004_742 * 1024 });

        let clamped = parse_meminfo("MemTotal: 10 kB\nMemAvailable: 20 kB\n").unwrap();
        assert_eq!(clamped.available_bytes, clamped.total_bytes);

        for (bad, expect) in [
            ("", "no MemTotal line"),
            ("MemTotal: 10 kB\n", "no MemAvailable line"),
            ("MemTotal: x kB\nMemAvailable: 1 kB", "MemTotal value \"x\" is not a whole number"),
            ("MemTotal:\nMemAvailable: 1 kB", "MemTotal has no value"),
            ("MemTotal: 1 MB\nMemAvailable: 1 kB", "MemTotal has unknown unit \"MB\""),
            ("MemTotal: 18446744073709551615 kB\nMemAvailable: 1 kB", "MemTotal is too large"),
        ] {
            let err = parse_meminfo(bad).unwrap_err();
            assert_eq!(err.to_string(), format!("meminfo: {expect}"), "{bad:?}");
        }
    }

    #[test]
    fn boot_id() {
        let id = parse_boot_id("5b1f6a0e-2c4d-4e8f-9a1b-3c5d7e9f1a2b\n").unwrap();
        assert_eq!(id.to_string(), "5b1f6a0e-2c4d-4e8f-9a1b-3c5d7e9f1a2b");
        for bad in ["", "nope", "5B1F6A0E-2C4D-4E8F-9A1B-3C5D7E9F1A2B"] {
            assert!(parse_boot_id(bad).unwrap_err().to_string().starts_with("boot_id: "));
        }
    }

    #[test]
    fn filesystem_arithmetic() {
        let fs = filesystem_from_blocks(1000, 250, 4096);
        assert_eq!(fs, Filesystem { total_bytes: 4_096_000, available_bytes: 1_024_000 });
        let fs = filesystem_from_blocks(u64::MAX, u64::MAX, 4096);
        assert_eq!(fs.total_bytes, u64::MAX);
        assert_eq!(fs.available_bytes, u64::MAX);
        assert_eq!(filesystem_from_blocks(10, 20, 1).available_bytes, 10);
    }

    #[test]
    fn collects_from_an_injected_proc() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        std::fs::create_dir_all(p.join("sys/kernel/random")).unwrap();
        std::fs::write(p.join("sys/kernel/random/boot_id"), "5b1f6a0e-2c4d-4e8f-9a1b-3c5d7e9f1a2b\n").unwrap();
        std::fs::write(p.join("uptime"), "100.5 50.0\n").unwrap();
        std::fs::write(p.join("loadavg"), "0.15 0.10 0.05 1/123 4567\n").unwrap();
        std::fs::write(p.join("meminfo"), MEMINFO).unwrap();
        let source = FactsSource { proc_root: p.to_path_buf(), root_fs_path: p.to_path_buf() };
        let facts = source.collect().unwrap();
        assert_eq!(facts.uptime_s, 100);
        assert!(facts.root_fs.total_bytes > 0);

        let hb = facts.heartbeat(1, OffsetDateTime::now_utc());
        let bytes = hearth_protocol::encode(&hb).unwrap();
        assert_eq!(hearth_protocol::decode::<Heartbeat>(&bytes).unwrap(), hb);
        assert_eq!(hb.agent_version, crate::VERSION);

        std::fs::remove_file(p.join("uptime")).unwrap();
        let err = source.collect().unwrap_err();
        assert!(err.to_string().starts_with(&format!("{}: ", p.join("uptime").display())), "{err}");
    }

    #[test]
    fn collects_from_this_machine() {
        // Linux only, like the agent.
        let facts = FactsSource::default().collect().unwrap();
        assert!(facts.memory.total_bytes > 0);
        assert!(facts.root_fs.total_bytes > 0);
    }

    #[test]
    fn the_utc_offset_comes_from_the_time_zone() {
        let india = tz::TimeZone::from_posix_tz("<+0530>-5:30").expect("zone");
        assert_eq!(offset_now(&india), Some(19_800));
        let utc = tz::TimeZone::utc();
        assert_eq!(offset_now(&utc), Some(0));
    }
}
