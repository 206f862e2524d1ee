//! The requests family's ring buffer and its loss counter, as user space reads them.
use std::os::fd::{AsFd as _, BorrowedFd};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use monitor_common::maps as names;

pub struct RequestEvents {
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
}

impl RequestEvents {
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let ring = ebpf
            .take_map(names::REQUEST_EVENTS)
            .context("map REQUEST_EVENTS missing from the kernel object")?;
        let lost = ebpf
            .take_map(names::REQUEST_EVENTS_LOST)
            .context("map REQUEST_EVENTS_LOST missing from the kernel object")?;
        Ok(Self {
            ring: RingBuf::try_from(ring).context("REQUEST_EVENTS is not a ring buffer")?,
            lost: PerCpuArray::try_from(lost)
                .context("REQUEST_EVENTS_LOST has an unexpected type")?,
        })
    }

    /// Hands every record waiting in the ring to `f`, at most `max` of them; returns how many.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = self.ring.next() else { break };
            f(&item);
            n += 1;
        }
        n
    }

    /// The ring's fd: readable when it holds a record. The kernel wakes a reader that has
    /// caught up when the next record is submitted, so an idle reader costs nothing between
    /// records.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    /// Events the kernel had no room for since the programs attached.
    pub fn lost(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}
