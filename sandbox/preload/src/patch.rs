//! glibc's *own* opens, sent through the recorder.
//!
//! Interposing a symbol only catches callers that go through the dynamic linker. glibc's
//! internal calls do not: `setlocale` loading `LC_*` files, `gettext` probing `*.mo`
//! catalogues, `iconv` reading `gconv-modules.cache` and glibc's own `fopen` call
//! `__open_nocancel` or `__open` directly. In a C build that is ~11 notified opens per
//! process, half of all notifications (BENCHMARKS.md). Likewise `posix_spawn`'s child
//! calls `__execve` directly: make starts every job that way.
//!
//! So, once the fast path is up, the constructor writes a `jmp` to the recorder's own
//! `open64`/`openat64` over the first instruction of those glibc functions, as function-hook
//! libraries do. Every caller, internal or not, then lands in the recorder, which makes the
//! same syscall glibc would have made.
//!
//! The entry is rewritten only where that is plainly safe: the symbol is found in the loaded
//! `libc.so.6` itself (never in another preloaded library that defines it too); it is an
//! ordinary function (not an IFUNC resolver) with one definition and room for the jump; the
//! recorder's code is within a `rel32` jump of it; and the page can be made writable. If
//! any check fails, that function is left alone and its opens stay notified: this is a fast
//! path, never a source of truth.
//!
//! No `dlsym`: it lives in libc only since glibc 2.34, and the recorder must load on older
//! ones. The symbol is looked up in libc's GNU hash table found through `dl_iterate_phdr`.

use core::ffi::{CStr, c_char, c_int, c_uint, c_void};

use crate::interpose::{exec, open_at};
use crate::syscall::traced;

/// The glibc functions redirected, and where to.
fn redirections() -> [(&'static CStr, usize); 4] {
    [
        // `open`, `open64`, `__open` and `__open64` share this address: glibc's fopen,
        // gettext's catalogue loading and every external caller.
        (c"__open64", redirected_open as *const () as usize),
        // The locale loader, gconv's cache, opendir: non-cancellable opens.
        (c"__open_nocancel", redirected_open as *const () as usize),
        (c"openat64", redirected_openat as *const () as usize),
        // `execve` and `__execve`: posix_spawn's child (on a stack of 32 KiB and the
        // arguments' size; recording an absolute path takes a few hundred bytes of it).
        (c"execve", redirected_execve as *const () as usize),
    ]
}

// The jump targets are private to this library. Jumping to the exported `open64` would go
// wherever the dynamic linker binds that name: in a program that wraps `open` itself (a
// sanitizer runtime, another preload) and calls glibc's through `dlsym(RTLD_NEXT)`, that
// wrapper, which would call the patched glibc function again, forever.

extern "C" fn redirected_open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    open_at(libc::AT_FDCWD, path, flags, mode)
}

extern "C" fn redirected_openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    open_at(dirfd, path, flags, mode)
}

extern "C" fn redirected_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    exec(path, argv, envp)
}

/// Redirects the functions of [`redirections`] in the loaded libc.
///
/// # Safety
/// Only from the constructor, after the fast path is up: the recorder's functions must be
/// able to make their syscalls by then.
pub unsafe fn redirect_libc_opens() {
    let Some(libc) = Libc::find() else {
        return;
    };
    let jumps = redirections()
        .map(|(name, replacement)| libc.function(name).and_then(|f| Jump::to(f, replacement)));
    // One protection change for all of them: they sit a few pages apart in libc's text,
    // and every mprotect there splits and re-merges its mapping.
    let Some(first) = jumps.iter().flatten().map(|j| j.at).min() else {
        return;
    };
    let last = jumps.iter().flatten().map(|j| j.at).max().unwrap_or(first);
    let end = last + 8;
    let page = first & !(PAGE - 1);
    let len = (end - page).div_ceil(PAGE) * PAGE;
    // Only ever libc's code: a range reaching past its executable segment would make
    // whatever lies beyond executable afterwards.
    if !(libc.text.0 <= page && page + len <= libc.text.1) {
        return;
    }
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    // SAFETY: widening the protection of libc's own text pages for the writes; they stay
    // executable throughout, so another thread running libc code is not faulted.
    if unsafe { traced(libc::SYS_mprotect, [page, len, rwx as usize, 0, 0, 0]) } != 0 {
        return;
    }
    for jump in jumps.iter().flatten() {
        // SAFETY: the pages are writable now; `jump` was checked against its function.
        unsafe { jump.write() };
    }
    let rx = libc::PROT_READ | libc::PROT_EXEC;
    // SAFETY: restoring the text pages' protection.
    unsafe { traced(libc::SYS_mprotect, [page, len, rx as usize, 0, 0, 0]) };
}

/// A libc function: its address and size.
struct Function {
    addr: usize,
    size: usize,
}

/// What is needed of the loaded libc's dynamic section.
struct Libc {
    base: usize,
    /// The executable segment, page-aligned: `[start, end)`.
    text: (usize, usize),
    symtab: *const Sym,
    strtab: *const u8,
    gnu_hash: *const u32,
}

/// `Elf64_Sym`.
#[repr(C)]
struct Sym {
    name: u32,
    info: u8,
    other: u8,
    shndx: u16,
    value: u64,
    size: u64,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PF_X: u32 = 1;
const DT_NULL: i64 = 0;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const STT_FUNC: u8 = 2;

impl Libc {
    fn find() -> Option<Libc> {
        let mut found: Option<Libc> = None;
        // SAFETY: the callback only reads the loader's own program headers and dynamic
        // section, which stay mapped while libc is loaded (for the life of the process).
        unsafe {
            libc::dl_iterate_phdr(
                Some(visit),
                (&mut found as *mut Option<Libc>).cast::<c_void>(),
            );
        }
        found
    }

    /// The one ordinary function called `name` that libc defines.
    fn function(&self, name: &CStr) -> Option<Function> {
        let name = name.to_bytes();
        let mut found: Option<Function> = None;
        // SAFETY: the GNU hash table's layout, from the ELF gABI extension glibc's own
        // loader reads: header, bloom words, buckets, then one chain word per symbol from
        // `symoffset` on, the last of each chain marked by its low bit.
        unsafe {
            let h = self.gnu_hash;
            let (nbuckets, symoffset, bloom_words) = (*h, *h.add(1), *h.add(2));
            if nbuckets == 0 {
                return None;
            }
            let buckets = h.add(4 + 2 * bloom_words as usize);
            let chain = buckets.add(nbuckets as usize);
            let hash = gnu_hash(name);
            let mut i = *buckets.add((hash % nbuckets) as usize);
            if i < symoffset {
                return None;
            }
            loop {
                let entry = *chain.add((i - symoffset) as usize);
                if entry | 1 == hash | 1 {
                    let sym = &*self.symtab.add(i as usize);
                    let sym_name = CStr::from_ptr(self.strtab.add(sym.name as usize).cast());
                    if sym_name.to_bytes() == name {
                        if sym.info & 0xf != STT_FUNC || sym.shndx == 0 {
                            return None;
                        }
                        let f = Function {
                            addr: self.base + sym.value as usize,
                            size: sym.size as usize,
                        };
                        // Two versions of one name at different addresses: which one the
                        // caller meant is not knowable here.
                        match &found {
                            Some(prev) if prev.addr != f.addr => return None,
                            _ => found = Some(f),
                        }
                    }
                }
                if entry & 1 == 1 {
                    break;
                }
                i += 1;
            }
        }
        found
    }
}

/// glibc's GNU hash (`dl_new_hash`).
fn gnu_hash(name: &[u8]) -> u32 {
    name.iter()
        .fold(5381u32, |h, &c| h.wrapping_mul(33).wrapping_add(c as u32))
}

/// `dl_iterate_phdr`'s callback: stops at `libc.so.6` with its tables in `data`.
unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the loader passes a valid info and our `data`.
    let (info, found) = unsafe { (&*info, &mut *data.cast::<Option<Libc>>()) };
    if info.dlpi_name.is_null() {
        return 0;
    }
    // SAFETY: the loader's NUL-terminated object name.
    let name = unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes();
    if !(name == b"libc.so.6" || name.ends_with(b"/libc.so.6")) {
        return 0;
    }
    let base = info.dlpi_addr as usize;
    let mut tables = (0usize, 0usize, 0usize);
    let mut text = None;
    let mut executable_segments = 0;
    for k in 0..info.dlpi_phnum as usize {
        // SAFETY: `dlpi_phnum` program headers at `dlpi_phdr`.
        let ph = unsafe { &*info.dlpi_phdr.add(k) };
        if ph.p_type == PT_LOAD && ph.p_flags & PF_X != 0 {
            let start = (base + ph.p_vaddr as usize) & !(PAGE - 1);
            let end = (base + (ph.p_vaddr + ph.p_memsz) as usize).div_ceil(PAGE) * PAGE;
            text = Some((start, end));
            executable_segments += 1;
        }
        if ph.p_type != PT_DYNAMIC {
            continue;
        }
        let mut d = (base + ph.p_vaddr as usize) as *const [i64; 2];
        // SAFETY: the dynamic section is an array of (tag, value) ended by DT_NULL.
        unsafe {
            while (*d)[0] != DT_NULL {
                let [tag, value] = *d;
                // The loader rebases these in place on most targets; not on all.
                let addr = if (value as usize) < base {
                    base + value as usize
                } else {
                    value as usize
                };
                match tag {
                    DT_SYMTAB => tables.0 = addr,
                    DT_STRTAB => tables.1 = addr,
                    DT_GNU_HASH => tables.2 = addr,
                    _ => {}
                }
                d = d.add(1);
            }
        }
    }
    // One executable segment, as glibc is linked; anything else is not the libc this
    // was written against.
    let text = text.filter(|_| executable_segments == 1);
    if let (Some(text), true) = (text, tables.0 != 0 && tables.1 != 0 && tables.2 != 0) {
        *found = Some(Libc {
            base,
            text,
            symtab: tables.0 as *const Sym,
            strtab: tables.1 as *const u8,
            gnu_hash: tables.2 as *const u32,
        });
    }
    1
}

const PAGE: usize = 4096;
const JMP_LEN: usize = 5;

/// A `jmp rel32` to write at `at`, the start of a function of `room` bytes from there.
struct Jump {
    at: usize,
    room: usize,
    rel: i32,
}

impl Jump {
    /// The jump from the start of `f` (after its `endbr64` if it has one) to `replacement`,
    /// if it fits in the function and in a `rel32`.
    fn to(f: Function, replacement: usize) -> Option<Jump> {
        const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
        // SAFETY: reading the function's own first bytes (at least 4 + JMP_LEN are its).
        let starts_with_endbr = f.size >= 4 + JMP_LEN
            && unsafe { core::ptr::read_unaligned(f.addr as *const [u8; 4]) } == ENDBR64;
        let at = if starts_with_endbr {
            f.addr + 4
        } else {
            f.addr
        };
        let room = f.size.checked_sub(at - f.addr)?;
        if room < JMP_LEN {
            return None;
        }
        let rel = i32::try_from(replacement as i64 - (at + JMP_LEN) as i64).ok()?;
        Some(Jump { at, room, rel })
    }

    /// # Safety
    /// The page(s) at `at` are writable, and nothing jumps into the middle of the
    /// function's first instruction bytes (glibc's entry points: callers call or tail-jump
    /// to the start).
    unsafe fn write(&self) {
        let mut code = [0u8; 8];
        code[0] = 0xe9;
        code[1..5].copy_from_slice(&self.rel.to_le_bytes());
        let at = self.at;
        if at.is_multiple_of(8) && self.room >= 8 {
            // One aligned 8-byte store: a thread running the function sees the old entry
            // or the new one, never half of each.
            // SAFETY: 8 aligned bytes of the function, writable now.
            unsafe {
                let old = core::ptr::read_volatile(at as *const [u8; 8]);
                code[5..8].copy_from_slice(&old[5..8]);
                let word = u64::from_ne_bytes(code);
                (*(at as *const core::sync::atomic::AtomicU64))
                    .store(word, core::sync::atomic::Ordering::SeqCst);
            }
        } else {
            // SAFETY: JMP_LEN bytes of the function, writable now.
            unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, JMP_LEN) };
        }
    }
}
