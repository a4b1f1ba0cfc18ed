//! Memory of the system's processes, read from `/proc` (Linux).

use std::{fs, path::Path};

/// A process of the system under test.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    /// The service it runs (`gateway`, `delivery-1`, `kafka`, ...).
    pub(crate) name: String,
    pub(crate) rss_bytes: u64,
    /// The highest RSS it has had (`VmHWM`).
    pub(crate) peak_rss_bytes: u64,
}

/// The binaries that make up the system, and how to name them.
const SERVICES: [&str; 5] = ["gateway", "auth", "messaging", "profile", "delivery"];

/// Every running RealChat service and the broker, by name. A delivery replica is named by its
/// node id. Processes this user may not read are skipped.
pub(crate) fn services() -> Vec<Process> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<Process> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let name = service_name(pid)?;
            let (rss_bytes, peak_rss_bytes) = memory(pid)?;
            Some(Process {
                name,
                rss_bytes,
                peak_rss_bytes,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn service_name(pid: u32) -> Option<String> {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    // A binary rebuilt while its process runs reads as "gateway (deleted)".
    let binary = exe.file_name()?.to_str()?;
    let binary = binary
        .strip_suffix(" (deleted)")
        .unwrap_or(binary)
        .to_owned();
    if binary == "tansu" {
        return Some("kafka".into());
    }
    if !SERVICES.contains(&binary.as_str()) {
        return None;
    }
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let var = |prefix: &str| {
        environ
            .split(|b| *b == 0)
            .filter_map(|var| std::str::from_utf8(var).ok())
            .find_map(|var| var.strip_prefix(prefix).map(str::to_owned))
    };
    if let Some(node) = var("REALCHAT_DELIVERY_NODE_ID=") {
        return Some(node);
    }
    // Messaging replicas have no node id: they are told apart by their gRPC address.
    if binary == "messaging"
        && let Some(addr) = var("REALCHAT_MESSAGING_GRPC_ADDR=")
    {
        return Some(format!("messaging@{addr}"));
    }
    Some(binary)
}

/// `(VmRSS, VmHWM)` in bytes.
pub(crate) fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The process listening on TCP `port` (IPv4 or IPv6), if this user can see it.
pub(crate) fn listening_on(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    let listening = *fields.get(3)? == "0A";
                    (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                        .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let fds = fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")).ok()?;
        fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
            .any(|link| {
                inodes
                    .iter()
                    .any(|inode| link.as_os_str() == inode.as_str())
            })
            .then_some(pid)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_own_listener_and_memory() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listening_on(port), Some(std::process::id()));
        let (rss, peak) = memory(std::process::id()).unwrap();
        assert!(rss > 0 && peak >= rss);
    }
}
