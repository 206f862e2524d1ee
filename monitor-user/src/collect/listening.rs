//! The TCP ports a process listens on, from its fds and /proc/PID/net/tcp{,6}: where the
//! requests family fetches the application's OpenAPI document.
use std::{collections::HashSet, fs, path::Path};

/// Ports of listening sockets the process holds, bound to loopback or to every address (so
/// they answer on 127.0.0.1), in ascending order.
pub fn loopback_listening_ports(proc_root: &Path, pid: u32) -> Vec<u16> {
    let mut inodes = HashSet::new();
    if let Ok(fds) = fs::read_dir(proc_root.join(format!("{pid}/fd"))) {
        for fd in fds.flatten() {
            if let Ok(link) = fs::read_link(fd.path())
                && let Some(inode) = link
                    .to_str()
                    .and_then(|l| l.strip_prefix("socket:["))
                    .and_then(|l| l.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut ports: Vec<u16> = ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| fs::read_to_string(proc_root.join(format!("{pid}/net/{f}"))).ok())
        .flat_map(|text| listening(&text, &inodes))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Listening entries of a /proc/net/tcp{,6} table whose inode is in `inodes`.
fn listening(table: &str, inodes: &HashSet<String>) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" || !inodes.contains(f[9]) {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            let loopback_or_any = matches!(
                addr,
                "00000000"
                    | "0100007F"
                    | "00000000000000000000000000000000"
                    | "00000000000000000000000001000000"
            );
            loopback_or_any.then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listening_sockets_of_the_process_on_loopback_or_any() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n\
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0\n\
   2: 0A000001:0051 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0\n\
   3: 0100007F:1F90 0100007F:D000 01 00000000:00000000 00:00000000 00000000     0        0 444 1 0 100 0 0 10 0\n\
   4: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0 100 0 0 10 0\n";
        let inodes: HashSet<String> = ["111", "222", "333", "444"].map(String::from).into();
        // 10.0.0.1:81 is not reachable on loopback; 444 is a connection; 555 is another's.
        assert_eq!(listening(table, &inodes), vec![8080, 80]);
    }

    #[test]
    fn a_process_that_is_gone_listens_on_nothing() {
        assert!(loopback_listening_ports(Path::new("/proc"), u32::MAX).is_empty());
    }
}
