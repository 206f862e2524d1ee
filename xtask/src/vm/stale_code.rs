//! Telling a guest that QEMU's TCG ran stale code from one that failed on its own.
//!
//! Attaching or detaching a tracepoint flips a jump label: the kernel rewrites a 5-byte nop
//! into a jmp (or back) by way of an int3 on its first byte. On hardware, the kernel's
//! sync_core IPIs make every CPU see the new bytes. Under QEMU's multi-threaded TCG a vCPU can
//! keep running an old translation that still holds the int3 after the text no longer does.
//! The kernel then sees an int3 that is not there, and what follows depends on the kernel:
//! - 6.x without a handler for it: "Oops: int3" and a panic;
//! - 5.10 with kprobes: kprobe_int3_handler finds no int3 at the address, backs RIP up to
//!   re-run "the original instruction", and the vCPU runs the same stale int3 again. It loops
//!   there for good, and the soft-lockup watchdog reports a CPU "stuck" on a plain jmp or nop,
//!   which no CPU can be stuck on.
//!
//! Neither says anything about monitor, so the harness boots that kernel once more. Any other
//! failure, a real int3 or a lockup anywhere else, still fails at once.
//!
//! The guests now run single-threaded TCG (qemu.rs), where the vCPUs take turns and no stale
//! translation outlives a rewrite: the full matrix run that made the switch saw none. The check
//! stays as a guard: should it fire again, the log names it instead of a bare timeout.

/// What a serial log shows when TCG ran stale code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleCode {
    /// An int3 oops whose byte in the kernel's text is not an int3.
    Int3Oops,
    /// A soft lockup on the first byte of a jump label (a 5-byte jmp or nop).
    LockupOnJumpLabel,
}

impl std::fmt::Display for StaleCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Int3Oops => "an int3 oops where the kernel's text holds no int3",
            Self::LockupOnJumpLabel => "a CPU looping on a jump label's stale int3 (soft lockup)",
        })
    }
}

/// Lines after an oops or lockup header within which its `Code:` line comes.
const CODE_LINE_WITHIN: usize = 12;

/// Reads a console line by line and says when it has shown stale code.
#[derive(Debug, Default)]
pub struct Watch {
    /// The header seen last and how many lines ago.
    pending: Option<(Header, usize)>,
    pub seen: Option<StaleCode>,
}

#[derive(Debug, Clone, Copy)]
enum Header {
    Int3Oops,
    SoftLockup,
}

impl Watch {
    /// Takes the next console line; returns what it has seen so far.
    pub fn feed(&mut self, line: &str) -> Option<StaleCode> {
        if self.seen.is_some() {
            return self.seen;
        }
        if line.contains("Oops: int3") {
            self.pending = Some((Header::Int3Oops, 0));
        } else if line.contains("soft lockup") {
            self.pending = Some((Header::SoftLockup, 0));
        } else if let Some((header, n)) = self.pending {
            if let Some(code) = line.split_once("Code: ").map(|(_, c)| c) {
                self.pending = None;
                self.seen = match header {
                    Header::Int3Oops => int3_is_stale(code).then_some(StaleCode::Int3Oops),
                    Header::SoftLockup => {
                        on_jump_label(code).then_some(StaleCode::LockupOnJumpLabel)
                    }
                };
            } else if n + 1 > CODE_LINE_WITHIN {
                self.pending = None;
            } else {
                self.pending = Some((header, n + 1));
            }
        }
        self.seen
    }
}

/// The bytes of a `Code:` line: the one at RIP is in `<>`. Returns (before, at RIP and after).
fn split_code(code: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (before, rest) = code.split_once('<')?;
    let parse = |s: &str| -> Option<Vec<u8>> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b.trim_matches(|c| c == '<' || c == '>'), 16).ok())
            .collect()
    };
    Some((parse(before)?, parse(rest)?))
}

/// An int3 trap leaves RIP one past the int3: the byte before `<` is what the kernel's text
/// holds where it ran. A real int3 reads `cc`.
fn int3_is_stale(code: &str) -> bool {
    split_code(code).is_some_and(|(before, _)| before.last().is_some_and(|&b| b != 0xcc))
}

/// Whether RIP is on a jump label's instruction: a 5-byte nop (`0f 1f 44 00 00`) or a jmp
/// rel32 that does not jump to itself (`e9` and anything but -5).
fn on_jump_label(code: &str) -> bool {
    let Some((_, at)) = split_code(code) else {
        return false;
    };
    match at.as_slice() {
        [0x0f, 0x1f, 0x44, 0x00, 0x00, ..] => true,
        [0xe9, a, b, c, d, ..] => i32::from_le_bytes([*a, *b, *c, *d]) != -5,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a whole serial log shows.
    fn in_log(serial: &str) -> Option<StaleCode> {
        let mut watch = Watch::default();
        serial.lines().find_map(|l| watch.feed(l))
    }

    #[test]
    fn a_stale_int3_oops_is_told_from_a_real_one() {
        let oops = |byte: &str| {
            format!(
                "[  271.110263] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n\
                 [  271.111477] RIP: 0010:__schedule+0x343/0xbe0\n\
                 [  271.112079] Code: b1 48 89 45 b8 0f 85 e9 f4 02 00 00 {byte} <1f> 44 00 00 48\n"
            )
        };
        assert_eq!(in_log(&oops("0f")), Some(StaleCode::Int3Oops));
        assert_eq!(in_log(&oops("cc")), None);
        assert_eq!(in_log(""), None);
    }

    #[test]
    fn a_lockup_on_a_jump_label_is_stale_and_one_elsewhere_is_not() {
        // 5.10 under TCG: both CPUs "stuck" on syscall_trace_enter's tracepoint jmp.
        let lockup = |at: &str| {
            format!(
                "[  528.461114] watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [monitor:912]\n\
                 [  528.461114] Modules linked in: virtio_rng rng_core virtiofs fuse\n\
                 [  528.461114] RIP: 0010:syscall_trace_enter.constprop.0+0xed/0x1b0\n\
                 [  528.461114] Code: 49 c7 c4 ff ff ff ff e9 64 ff ff ff <{at}> 3c ff ff ff 48 8b\n"
            )
        };
        assert_eq!(
            in_log(&lockup("e9> 78 00 00 00 e9")),
            Some(StaleCode::LockupOnJumpLabel)
        );
        assert_eq!(
            in_log(&lockup("0f> 1f 44 00 00 e9")),
            Some(StaleCode::LockupOnJumpLabel)
        );
        // A jmp to itself and a spin loop's pause are real lockups.
        assert_eq!(in_log(&lockup("e9> fb ff ff ff e9")), None);
        assert_eq!(in_log(&lockup("f3> 90 eb fc 00 00")), None);
        // A soft lockup is not an int3 oops.
        assert_eq!(
            in_log("[ 1.0] BUG: soft lockup\n[ 1.1] Code: 0f <1f> 44\n"),
            None
        );
    }

    #[test]
    fn a_code_line_far_from_its_header_is_not_taken() {
        let mut log = String::from("[ 1.0] watchdog: BUG: soft lockup - CPU#0 stuck for 23s!\n");
        for _ in 0..CODE_LINE_WITHIN + 1 {
            log.push_str("[ 1.0] some other line\n");
        }
        log.push_str("[ 1.0] Code: 00 00 <e9> 78 00 00 00\n");
        assert_eq!(in_log(&log), None);
    }
}
