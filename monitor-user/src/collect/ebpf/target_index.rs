//! The kernel's target index (one byte per pid: slot + 1, or 0), written through mmap.
//!
//! The kernel programs filter on this array before anything else. The fork and exit programs
//! store single bytes in it; user space must too, or a read-modify-write of a whole entry could
//! undo a byte the kernel stored meanwhile. An mmap of the array gives byte stores.
use std::{
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use anyhow::Context as _;
use aya::maps::{Map, MapData};
use monitor_common::TARGET_INDEX_SPAN;

const PID_MAX: &str = "/proc/sys/kernel/pid_max";

/// Entries the index needs to cover every pid below the host's pid_max.
pub fn entries_for_host() -> anyhow::Result<u32> {
    let text = fs::read_to_string(PID_MAX).with_context(|| format!("reading {PID_MAX}"))?;
    let pid_max: u32 = text
        .trim()
        .parse()
        .with_context(|| format!("{PID_MAX}: {:?} is not a number", text.trim()))?;
    Ok(pid_max.div_ceil(TARGET_INDEX_SPAN).max(1))
}

pub struct TargetIndex {
    base: NonNull<u8>,
    len: usize,
    /// Kept open: the mapping belongs to this map.
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory owned by this value; writes go through &mut self.
unsafe impl Send for TargetIndex {}

impl TargetIndex {
    pub fn new(map: Map) -> anyhow::Result<Self> {
        let Map::Array(data) = map else {
            anyhow::bail!("the target index is not an array map");
        };
        let entries = data
            .info()
            .context("reading the target index's size")?
            .max_entries();
        let len = entries as usize * TARGET_INDEX_SPAN as usize;
        // SAFETY: a new shared mapping of the map's value area; the kernel checks the length
        // and that the array was created mmapable.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error())
                .context("mapping the kernel's target index (needs BPF_F_MMAPABLE, Linux 5.5+)");
        }
        let base = NonNull::new(addr.cast()).context("mmap returned null")?;
        Ok(Self {
            base,
            len,
            _map: data,
        })
    }

    /// Marks `tgid` as a member of `slot`. Pids beyond the index (pid_max raised after load)
    /// are found through the TARGETS hash map instead.
    pub fn set(&mut self, tgid: u32, slot: u32) {
        self.store(tgid, u8::try_from(slot + 1).unwrap_or(0));
    }

    pub fn clear(&mut self, tgid: u32) {
        self.store(tgid, 0);
    }

    fn store(&mut self, tgid: u32, value: u8) {
        let i = tgid as usize;
        if i < self.len {
            // SAFETY: in bounds of our live mapping; a volatile byte store, as the kernel's.
            unsafe { self.base.as_ptr().add(i).write_volatile(value) };
        }
    }
}

impl Drop for TargetIndex {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
