//! Once started, the daemon keeps mapped only the code and constants it goes on using.
//!
//! A page fault on a file mapping also maps the neighbouring pages that are in the page cache
//! (fault-around, 64 KiB by default), and startup runs much code the daemon never runs again
//! (argument and BTF parsing, loading the kernel programs, the store's integrity check): on this
//! 18 MB binary about 14 MB of it stayed counted in the daemon's RSS. After startup every
//! read-only file mapping that holds no private copy of a page (code, constants; not the data
//! that relocation wrote) is unmapped with MADV_DONTNEED: its pages come back from the page
//! cache at their next use, so what stays resident is what the steady state touches.
use std::io;

/// Unmaps the read-only, never-written file mappings of this process; returns their bytes.
pub fn trim() -> io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut unmapped = 0;
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(range) = mapping_header(line) {
            candidate = range;
            continue;
        }
        // "Anonymous: N kB": pages of the mapping that are private copies (written once, as
        // relocation writes .data.rel.ro before it is made read-only). Only a mapping with none
        // is safe to drop: the others would come back as the file's bytes.
        let Some(rest) = line.strip_prefix("Anonymous:") else {
            continue;
        };
        let Some((start, end)) = candidate.take() else {
            continue;
        };
        if rest.trim() != "0 kB" {
            continue;
        }
        // SAFETY: a whole mapping of this process as the kernel lists it, read-only and with no
        // private page: dropping its pages changes no byte a later read sees.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) }
            == 0
        {
            unmapped += (end - start) as u64;
        }
    }
    Ok(unmapped)
}

/// The range of a smaps header line for a private, read-only, file-backed mapping (None for
/// another mapping's header); None overall for a line that is not a header.
fn mapping_header(line: &str) -> Option<Option<(usize, usize)>> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    );
    let perms = fields.next()?;
    let (_offset, _dev, inode) = (fields.next()?, fields.next()?, fields.next()?);
    let read_only_private = perms.len() == 4 && perms.starts_with("r-") && perms.ends_with('p');
    Some((read_only_private && inode != "0").then_some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_pick_read_only_private_file_mappings() {
        let code = "55faaeb77000-55faaf45b000 r-xp 00460000 fe:00 5327331    /usr/bin/monitor";
        assert_eq!(
            mapping_header(code),
            Some(Some((0x55faaeb77000, 0x55faaf45b000)))
        );
        let data = "55faaf5a0000-55faaf5b0000 rw-p 00d88000 fe:00 5327331    /usr/bin/monitor";
        assert_eq!(mapping_header(data), Some(None));
        let ring = "7f44f652a000-7f44f692b000 r--s 00001000 00:10 26   anon_inode:bpf-map";
        assert_eq!(mapping_header(ring), Some(None));
        let heap = "55fae45cf000-55fae4e65000 rw-p 00000000 00:00 0    [heap]";
        assert_eq!(mapping_header(heap), Some(None));
        assert_eq!(mapping_header("Anonymous:        0 kB"), None);
    }

    #[test]
    fn trimming_keeps_the_process_running_right() {
        let before: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        trim().unwrap();
        let after: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(before, after);
    }
}
