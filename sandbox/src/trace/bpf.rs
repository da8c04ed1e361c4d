//! Classic BPF for seccomp, as plain data.
//!
//! The filter is a `Vec<sock_filter>` that unit tests can run through [`evaluate`] (a tiny
//! interpreter for exactly the instructions we emit) before the kernel ever sees it.

use libc::sock_filter;

/// Offsets into `struct seccomp_data` (x86_64, little endian).
pub const OFFSET_NR: u32 = 0;
pub const OFFSET_ARCH: u32 = 4;
/// Low and high 32 bits of the instruction pointer.
pub const OFFSET_IP_LOW: u32 = 8;
pub const OFFSET_IP_HIGH: u32 = 12;
/// Low 32 bits of syscall argument `index`.
pub const fn offset_arg_low(index: u8) -> u32 {
    16 + 8 * index as u32
}
/// High 32 bits of syscall argument `index`.
pub const fn offset_arg_high(index: u8) -> u32 {
    offset_arg_low(index) + 4
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

pub fn load(offset: u32) -> sock_filter {
    sock_filter {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

pub fn jump_eq(value: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k: value,
    }
}

pub fn jump_ge(value: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JGE_K,
        jt,
        jf,
        k: value,
    }
}

pub fn jump_set(mask: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JSET_K,
        jt,
        jf,
        k: mask,
    }
}

pub fn ret(action: u32) -> sock_filter {
    sock_filter {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: action,
    }
}

/// The input of a seccomp filter, as the tests build it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    fn word(&self, offset: u32) -> Option<u32> {
        Some(match offset {
            0 => self.nr as u32,
            4 => self.arch,
            8 => self.instruction_pointer as u32,
            12 => (self.instruction_pointer >> 32) as u32,
            16..=63 if offset.is_multiple_of(4) => {
                let arg = self.args[((offset - 16) / 8) as usize];
                if (offset - 16).is_multiple_of(8) {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => return None,
        })
    }
}

/// Runs `program` on `data` and returns the action, or an error for anything the kernel's
/// checker would also reject (jumps past the end, unknown opcodes, falling off the end).
pub fn evaluate(program: &[sock_filter], data: &SeccompData) -> Result<u32, String> {
    let mut accumulator: u32 = 0;
    let mut pc = 0usize;
    while let Some(insn) = program.get(pc) {
        let next = pc + 1;
        pc = match insn.code {
            LD_W_ABS => {
                accumulator = data
                    .word(insn.k)
                    .ok_or_else(|| format!("bad load offset {} at {pc}", insn.k))?;
                next
            }
            JEQ_K | JGE_K | JSET_K => {
                let taken = match insn.code {
                    JEQ_K => accumulator == insn.k,
                    JGE_K => accumulator >= insn.k,
                    _ => accumulator & insn.k != 0,
                };
                next + usize::from(if taken { insn.jt } else { insn.jf })
            }
            RET_K => return Ok(insn.k),
            other => return Err(format!("unsupported opcode {other:#x} at {pc}")),
        };
    }
    Err(format!("fell off the end of the program at {pc}"))
}
