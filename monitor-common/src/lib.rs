//! The one place where kernel and user space agree on map layouts.
//!
//! Every type here is `#[repr(C)]`, has no implicit padding, and its size is asserted, because the
//! kernel object and the daemon are compiled by different compilers for different targets.
#![no_std]

pub mod fd;
pub mod requests;

/// Target slots: each watched target (a root process and its descendants, or every process with
/// one name) owns one slot; per-target counters are arrays indexed by slot.
pub const MAX_TARGETS: u32 = 8;
/// Syscall numbers are below this on every 64-bit architecture the kernel crate builds for.
pub const MAX_SYSCALLS: u32 = 512;
/// Errno values are counted individually below this; larger ones land in slot 0.
pub const MAX_ERRNO: u32 = 136;
/// Syscall start slots, indexed by `tid & (START_SLOTS - 1)` and checked against the tid.
pub const START_SLOTS: u32 = 1 << 16;
/// The target index holds one byte per pid (0: not a target, else slot + 1), in entries of this
/// many bytes. Its number of entries is set at load time from /proc/sys/kernel/pid_max.
pub const TARGET_INDEX_SPAN: u32 = 64;
/// Entries in the kernel object's target index before the loader sizes it (pid_max 32768).
pub const TARGET_INDEX_DEFAULT_ENTRIES: u32 = 32768 / TARGET_INDEX_SPAN;
/// The kernel's map flag that lets user space mmap an array (BPF_F_MMAPABLE).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// Upper bound on processes in the target set (all targets together).
pub const MAX_TARGET_PROCESSES: u32 = 16384;
/// Upper bound on live target threads with a per-thread entry (switches, syscalls, exit state).
/// Entries are removed at each thread's final switch-out or free, so this bounds threads alive
/// at once, not threads ever made; a thread without an entry still has its on-CPU time counted
/// when it dies.
pub const MAX_TARGET_THREADS: u32 = 16384;
/// Syscall starts of target threads whose start slot another target thread holds mid-call
/// (their tids are equal modulo START_SLOTS).
pub const MAX_START_OVERFLOW: u32 = 4096;

/// The kernel maps whose inserts can fail for lack of room, as indices of the MAP_FULL counters
/// (`monitor_kernel_map_full_total{map}`).
pub mod map_full {
    /// A target's fork could not join the target set: the child is not followed.
    pub const TARGETS: u32 = 0;
    /// A target thread has no per-thread entry: its slices' syscalls are not in its request
    /// events, and if it is the last of its process, its time after its exit is not counted.
    pub const THREAD_STATS: u32 = 1;
    /// A syscall whose start slot was taken had no room in the overflow map: latency lost.
    pub const SYSCALL_STARTS: u32 = 2;
    /// Entries of MAP_FULL.
    pub const COUNT: u32 = 3;
    /// The `map` label of each index.
    pub const NAMES: [&str; COUNT as usize] = ["TARGETS", "THREAD_STATS", "SYSCALL_STARTS"];
}

/// Names of the kernel's maps, shared so that a rename breaks the build, not the daemon.
pub mod maps {
    pub const TARGETS: &str = "TARGETS";
    pub const TARGET_INDEX: &str = "TARGET_INDEX";
    pub const TARGET_COUNTERS: &str = "TARGET_COUNTERS";
    pub const SYSCALLS: &str = "SYSCALLS";
    pub const FD_OPEN_ERRORS: &str = "FD_OPEN_ERRORS";
    pub const SYSCALL_STARTS: &str = "SYSCALL_STARTS";
    pub const SYSCALL_START_OVERFLOW: &str = "SYSCALL_START_OVERFLOW";
    pub const THREAD_STATS: &str = "THREAD_STATS";
    pub const MAP_FULL: &str = "MAP_FULL";
    pub const SCHED_ATTACHED: &str = "SCHED_ATTACHED";
    pub const REQUEST_EVENTS: &str = "REQUEST_EVENTS";
    pub const REQUEST_EVENTS_LOST: &str = "REQUEST_EVENTS_LOST";
    pub const HTTP_CONNECTIONS: &str = "HTTP_CONNECTIONS";
    pub const HTTP_PROCESSES: &str = "HTTP_PROCESSES";
    pub const RUNNING_SLICES: &str = "RUNNING_SLICES";
}

/// Names of the kernel's global constants, set by the loader before load.
pub mod globals {
    /// Byte offset of `pid` in `struct task_struct`, from the running kernel's BTF.
    pub const TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
    /// Byte offset of `tgid` in `struct task_struct`, from the running kernel's BTF.
    pub const TASK_TGID_OFFSET: &str = "TASK_TGID_OFFSET";
    /// Byte offset of `se.sum_exec_runtime` in `struct task_struct`.
    pub const TASK_SUM_EXEC_OFFSET: &str = "TASK_SUM_EXEC_OFFSET";
    /// Byte offsets of `min_flt` and `maj_flt` in `struct task_struct`.
    pub const TASK_MIN_FLT_OFFSET: &str = "TASK_MIN_FLT_OFFSET";
    pub const TASK_MAJ_FLT_OFFSET: &str = "TASK_MAJ_FLT_OFFSET";
    /// 1 when sys_enter is attached (counts and start times); 0 when only sys_exit runs, for
    /// fd counts alone.
    pub const SYS_ENTER_ATTACHED: &str = "SYS_ENTER_ATTACHED";
    /// Byte offset of the task's scheduler state (`__state` since 5.14, `state` before), read by
    /// the sched_switch variant for kernels whose tracepoint does not pass `prev_state` (< 5.18).
    pub const TASK_STATE_OFFSET: &str = "TASK_STATE_OFFSET";
    /// Byte offset of `group_leader` in `struct task_struct`, read by sched_process_free.
    pub const TASK_GROUP_LEADER_OFFSET: &str = "TASK_GROUP_LEADER_OFFSET";
    /// 1 when the exit variant reads `group_dead` (6.16+), so sched_process_free only cleans up;
    /// 0 and the group leader's free also ends the process's membership.
    pub const EXIT_KNOWS_GROUP_DEAD: &str = "EXIT_KNOWS_GROUP_DEAD";
    /// 1 when the requests family is attached: sched_switch then notes when each CPU's running
    /// slice began and sys_exit counts its syscalls (RUNNING_SLICES), so request events can say
    /// how much CPU their thread has had.
    pub const REQUESTS_ENABLED: &str = "REQUESTS_ENABLED";
    /// 1 when the syscalls family's sys_exit program does the requests family's exit work (both
    /// families attached), so requests_sys_exit is not attached.
    pub const REQUESTS_IN_SYS_EXIT: &str = "REQUESTS_IN_SYS_EXIT";
}

/// Per-target counters, one per CPU (a per-CPU array indexed by slot), summed in user space.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetCounters {
    /// On-CPU time of target threads that have ended, as the scheduler accounts it
    /// (se.sum_exec_runtime), each counted whole and once. With sched_switch that happens at the
    /// thread's final switch-out, when it has left /proc (user space reads live threads' time
    /// there, so no thread is ever taken from both). Without it, at its exit (stale by the
    /// running slice; user space then skips exiting threads) and the rest at its free.
    pub exited_oncpu_ns: u64,
    /// Switches out while blocking (not preempted, not runnable).
    pub switches_voluntary: u64,
    /// Switches out by preemption.
    pub switches_involuntary: u64,
    /// Page-fault exceptions raised in user mode.
    pub faults_user: u64,
    /// Page-fault exceptions raised in kernel mode on user addresses (copy_to/from_user).
    pub faults_kernel: u64,
    /// New file descriptors (pipe, pipe2 and socketpair count two).
    pub fd_opens: u64,
    /// Successful close() calls.
    pub fd_closes: u64,
    /// Successful close_range() calls (each may close any number of descriptors).
    pub fd_close_range_calls: u64,
    /// Failed open, openat, openat2, creat and open_by_handle_at calls.
    pub fd_open_errors: u64,
    /// Syscall exits without a start (attached mid-call, or a start slot shared by two target
    /// threads): counted at entry, latency not measured.
    pub syscall_starts_lost: u64,
    /// Target processes that exited (whole thread group).
    pub process_exits: u64,
    /// Processes that joined the target set by fork.
    pub process_forks: u64,
    /// Minor faults of target threads that have exited (task->min_flt read at exit).
    pub exited_minflt: u64,
    /// Major faults of target threads that have exited (task->maj_flt read at exit).
    pub exited_majflt: u64,
}

/// Count and total latency of one syscall number for one target, per CPU.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SyscallStat {
    pub count: u64,
    pub total_ns: u64,
}

/// Where a target thread's current syscall started. Indexed by `tid & (START_SLOTS - 1)`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SyscallStart {
    /// bpf_ktime_get_ns() at entry; 0 when the slot holds no syscall in flight.
    pub start_ns: u64,
    pub tid: u32,
    pub nr: u16,
    pub slot: u8,
    /// `START_FLAG_*` bits.
    pub flags: u8,
}

/// fcntl() was called with F_DUPFD or F_DUPFD_CLOEXEC, so its result is a new descriptor.
pub const START_FLAG_DUPFD: u8 = 1;

/// Per-thread scheduler totals (hash keyed by tid); only the thread itself writes its entry.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    /// What of the thread's on-CPU time is in `TargetCounters::exited_oncpu_ns` already: 0
    /// until it exits, and, without sched_switch, its total at exit (its free adds the rest).
    pub oncpu_counted_ns: u64,
    pub switches_voluntary: u64,
    pub switches_involuntary: u64,
    pub tgid: u32,
    /// The target slot the thread's time goes to (where the process may have left the target set
    /// by the time the thread is freed).
    pub slot: u16,
    /// `THREAD_*`: where the thread is in its life. The entry is removed at the thread's final
    /// switch-out or when the task is freed, and a stale one (a reused tid) at a target's fork.
    pub exit_state: u16,
    /// Syscalls the thread made while the requests family ran, up to its last switch-out (the
    /// syscall exits of its slices, added at each switch-out): what request events count from.
    pub syscalls: u64,
}

/// The thread runs: its on-CPU time is user space's to read from /proc.
pub const THREAD_LIVE: u16 = 0;
/// The thread exited as the last of its process (kernels whose sched_process_exit says
/// `group_dead`): its final switch-out also ends the process's membership.
pub const THREAD_LAST_OF_GROUP: u16 = 1;
/// The thread exited: its final switch-out counts its time, and its free counts whatever that
/// did not (sched_switch not attached, or the process left the target set before it ran).
pub const THREAD_EXITING: u16 = 2;

const _: () = assert!(core::mem::size_of::<TargetCounters>() == 14 * 8);
const _: () = assert!(core::mem::size_of::<SyscallStat>() == 16);
const _: () = assert!(core::mem::size_of::<SyscallStart>() == 16);
const _: () = assert!(core::mem::size_of::<ThreadStats>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), Copy, without padding, and valid for any bit pattern.
    unsafe impl aya::Pod for super::TargetCounters {}
    unsafe impl aya::Pod for super::SyscallStat {}
    unsafe impl aya::Pod for super::SyscallStart {}
    unsafe impl aya::Pod for super::ThreadStats {}
}

impl TargetCounters {
    /// Field-wise sum, used to fold per-CPU copies together.
    pub fn add(&mut self, o: &Self) {
        self.exited_oncpu_ns += o.exited_oncpu_ns;
        self.switches_voluntary += o.switches_voluntary;
        self.switches_involuntary += o.switches_involuntary;
        self.faults_user += o.faults_user;
        self.faults_kernel += o.faults_kernel;
        self.fd_opens += o.fd_opens;
        self.fd_closes += o.fd_closes;
        self.fd_close_range_calls += o.fd_close_range_calls;
        self.fd_open_errors += o.fd_open_errors;
        self.syscall_starts_lost += o.syscall_starts_lost;
        self.process_exits += o.process_exits;
        self.process_forks += o.process_forks;
        self.exited_minflt += o.exited_minflt;
        self.exited_majflt += o.exited_majflt;
    }
}
