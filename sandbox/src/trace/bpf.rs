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
    let taken = path(program, data)?;
    Ok(taken.last().map_or(0, |ret| ret.k))
}

/// Where one of [`dispatch`]'s comparisons goes when it decides.
#[derive(Debug, Clone, Copy)]
enum Jump {
    /// This many instructions on, inside the tree.
    Skip(usize),
    /// The start of this block.
    Block(usize),
}

/// A comparison of the tree before its jumps are known as offsets.
struct Comparison {
    code: u16,
    k: u32,
    taken: Jump,
    not_taken: Jump,
}

/// A jump on the syscall number in the accumulator to one of `blocks`: number `cases[i].0`
/// to block `cases[i].1` (the first case listed for a number wins), any other number to
/// block `default`. The comparisons form a
/// binary search tree (`JGE` on a middle number, then at most three `JEQ`s), followed by
/// the blocks in order; each block must end every path in a return and jump only within
/// itself.
///
/// Why a tree and not one comparison per number: when a filter is installed, the kernel
/// runs it for every syscall number of both ABIs to learn which numbers it always allows
/// (seccomp's action cache, `seccomp_cache_prepare_bitmap`), emulating it from the first
/// instruction each time. Through a chain of ~45 comparisons that emulation was ~55 µs of
/// every `seccomp()` call (a 106-instruction deny-list took 92 µs to install, the same
/// program starting with a load the emulator gives up on 37 µs), paid at every task's
/// start; through the tree each number takes about eight steps. The filter itself runs
/// fewer comparisons too for the numbers the cache cannot decide.
///
/// # Panics
/// If a jump is longer than classic BPF's 255 instructions (the programs are fixed at
/// compile time; their tests build them).
pub fn dispatch(
    cases: &[(u32, usize)],
    default: usize,
    blocks: &[Vec<sock_filter>],
) -> Vec<sock_filter> {
    // Stable, so that of two cases for one number the first listed wins.
    let mut sorted = cases.to_vec();
    sorted.sort_by_key(|(nr, _)| *nr);
    sorted.dedup_by_key(|(nr, _)| *nr);
    let tree = search(&sorted, default);
    let mut starts = Vec::with_capacity(blocks.len());
    let mut at = tree.len();
    for block in blocks {
        starts.push(at);
        at += block.len();
    }
    let mut program = Vec::with_capacity(at);
    for (pc, comparison) in tree.iter().enumerate() {
        let offset = |jump: Jump| {
            let target = match jump {
                Jump::Skip(n) => pc + 1 + n,
                Jump::Block(b) => starts[b],
            };
            u8::try_from(target - (pc + 1)).expect("a dispatch jump within 255 instructions")
        };
        program.push(sock_filter {
            code: comparison.code,
            jt: offset(comparison.taken),
            jf: offset(comparison.not_taken),
            k: comparison.k,
        });
    }
    for block in blocks {
        program.extend_from_slice(block);
    }
    program
}

/// The tree for `cases` (sorted, distinct numbers), every path ending in a jump to a block.
fn search(cases: &[(u32, usize)], default: usize) -> Vec<Comparison> {
    if cases.len() <= 3 {
        let Some(((last, last_block), rest)) = cases.split_last() else {
            // No case at all: one comparison that always reaches the default.
            return vec![Comparison {
                code: JSET_K,
                k: 0,
                taken: Jump::Block(default),
                not_taken: Jump::Block(default),
            }];
        };
        let mut tree: Vec<Comparison> = rest
            .iter()
            .map(|(nr, block)| Comparison {
                code: JEQ_K,
                k: *nr,
                taken: Jump::Block(*block),
                not_taken: Jump::Skip(0),
            })
            .collect();
        tree.push(Comparison {
            code: JEQ_K,
            k: *last,
            taken: Jump::Block(*last_block),
            not_taken: Jump::Block(default),
        });
        return tree;
    }
    let (below, from) = cases.split_at(cases.len() / 2);
    let below = search(below, default);
    let mut tree = vec![Comparison {
        code: JGE_K,
        k: from[0].0,
        taken: Jump::Skip(below.len()),
        not_taken: Jump::Skip(0),
    }];
    tree.extend(below);
    tree.extend(search(from, default));
    tree
}

/// The instructions `program` runs on `data`, in order (for tests of what the kernel's
/// emulation of a filter meets on its way).
pub fn path(program: &[sock_filter], data: &SeccompData) -> Result<Vec<sock_filter>, String> {
    let mut taken = Vec::new();
    let mut accumulator: u32 = 0;
    let mut pc = 0usize;
    while let Some(insn) = program.get(pc) {
        taken.push(*insn);
        let next = pc + 1;
        pc = match insn.code {
            LD_W_ABS => {
                accumulator = data
                    .word(insn.k)
                    .ok_or_else(|| format!("bad load offset {} at {pc}", insn.k))?;
                next
            }
            JEQ_K | JGE_K | JSET_K => {
                let jumps = match insn.code {
                    JEQ_K => accumulator == insn.k,
                    JGE_K => accumulator >= insn.k,
                    _ => accumulator & insn.k != 0,
                };
                next + usize::from(if jumps { insn.jt } else { insn.jf })
            }
            RET_K => return Ok(taken),
            other => return Err(format!("unsupported opcode {other:#x} at {pc}")),
        };
    }
    Err(format!("fell off the end of the program at {pc}"))
}

/// The instructions `program` runs for syscall `nr` on x86_64 (arguments all ones), as the
/// kernel's emulation meets them when the filter is installed ([`dispatch`]).
#[cfg(test)]
pub(crate) fn path_of_number(program: &[sock_filter], nr: i32) -> Vec<sock_filter> {
    let data = SeccompData {
        nr,
        arch: crate::trace::filter::AUDIT_ARCH_X86_64,
        instruction_pointer: 0x7f00_1234_5678,
        args: [u64::MAX; 6],
    };
    path(program, &data).unwrap_or_else(|e| panic!("nr {nr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a `dispatch` program for `nr`; each block returns its own index.
    fn block_of(program: &[sock_filter], nr: u32) -> u32 {
        let data = SeccompData {
            nr: nr as i32,
            ..SeccompData::default()
        };
        let mut with_load = vec![load(OFFSET_NR)];
        with_load.extend_from_slice(program);
        evaluate(&with_load, &data).expect("runs to a return")
    }

    fn blocks(n: u32) -> Vec<Vec<sock_filter>> {
        (0..n).map(|b| vec![ret(b)]).collect()
    }

    #[test]
    fn every_number_reaches_its_block_and_the_rest_the_default() {
        for count in [0usize, 1, 2, 3, 4, 5, 7, 45, 120] {
            // Numbers spread out, listed unsorted, to blocks 1 and 2; the default is 0.
            let cases: Vec<(u32, usize)> = (0..count as u32)
                .rev()
                .map(|i| (i * 3 + 1, 1 + (i as usize % 2)))
                .collect();
            let program = dispatch(&cases, 0, &blocks(3));
            for nr in 0..(count as u32 * 3 + 5) {
                let expected = cases.iter().find(|(n, _)| *n == nr).map_or(0, |(_, b)| *b);
                assert_eq!(
                    block_of(&program, nr) as usize,
                    expected,
                    "{count} cases, nr {nr}"
                );
            }
            assert_eq!(block_of(&program, u32::MAX), 0);
        }
    }

    #[test]
    fn of_two_cases_for_one_number_the_first_listed_wins() {
        let program = dispatch(&[(7, 2), (5, 1), (7, 1)], 0, &blocks(3));
        assert_eq!(block_of(&program, 7), 2);
        assert_eq!(block_of(&program, 5), 1);
        assert_eq!(block_of(&program, 6), 0);
    }
}
