//! The seccomp filter every bwrap sandbox gets (SPEC section 15): system calls that
//! only widen the kernel's attack surface or break out of the namespaces fail with
//! `EPERM`; everything else is allowed.
//!
//! Compiled once with `seccompiler` (Firecracker's) into classic BPF and handed to
//! bubblewrap as raw `struct sock_filter` bytes on an inherited file descriptor
//! (`bwrap --seccomp FD`); bwrap installs it last, just before it executes the
//! program, so bwrap's own setup (mounts, namespaces) is not affected. Inside,
//! `/proc/self/status` shows `Seccomp: 2`.
//!
//! Refused with `EPERM` rather than killing the process: a build tool that probes for
//! `io_uring` or `userfaultfd` falls back instead of dying.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The refused calls, each with why.
const REFUSED: &[(i64, &str)] = &[
    (libc::SYS_ptrace, "inspect or steer other processes"),
    (libc::SYS_process_vm_readv, "read another process's memory"),
    (
        libc::SYS_process_vm_writev,
        "write another process's memory",
    ),
    (libc::SYS_mount, "mount file systems"),
    (libc::SYS_umount2, "unmount what bwrap set up"),
    (libc::SYS_pivot_root, "change the root"),
    (libc::SYS_fsopen, "new mount API"),
    (libc::SYS_fsmount, "new mount API"),
    (libc::SYS_move_mount, "new mount API"),
    (libc::SYS_open_tree, "new mount API"),
    (libc::SYS_unshare, "new namespaces"),
    (libc::SYS_setns, "enter other namespaces"),
    (libc::SYS_keyctl, "the kernel keyring"),
    (libc::SYS_add_key, "the kernel keyring"),
    (libc::SYS_request_key, "the kernel keyring"),
    (libc::SYS_bpf, "load BPF programs"),
    (
        libc::SYS_perf_event_open,
        "performance counters (side channels)",
    ),
    (
        libc::SYS_io_uring_setup,
        "io_uring (bypasses syscall filtering)",
    ),
    (libc::SYS_io_uring_enter, "io_uring"),
    (libc::SYS_io_uring_register, "io_uring"),
    (
        libc::SYS_userfaultfd,
        "userfaultfd (race amplifier for kernel bugs)",
    ),
    (
        libc::SYS_open_by_handle_at,
        "open files by handle, past bind mounts",
    ),
    (libc::SYS_kexec_load, "load a new kernel"),
    (libc::SYS_init_module, "load kernel modules"),
    (libc::SYS_finit_module, "load kernel modules"),
    (libc::SYS_delete_module, "unload kernel modules"),
];

/// The filter as bwrap reads it: `struct sock_filter` entries in native byte order.
/// `None` on an architecture `seccompiler` does not know (the sandbox then runs
/// without a filter and `doctor` says so).
pub fn program() -> Option<&'static [u8]> {
    static PROGRAM: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    PROGRAM.get_or_init(compile).as_deref()
}

/// The names of the refused calls, for `doctor` and the README.
pub fn refused_count() -> usize {
    REFUSED.len()
}

fn compile() -> Option<Vec<u8>> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).ok()?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = REFUSED
        .iter()
        .map(|(call, _)| (*call, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .ok()?;
    let program: BpfProgram = filter.try_into().ok()?;
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_on_this_machine() {
        let bytes = program().expect("a filter for this architecture");
        // Whole instructions, and at least one per refused call plus the arch check.
        assert_eq!(bytes.len() % 8, 0);
        assert!(bytes.len() / 8 > refused_count(), "{}", bytes.len());
    }
}
