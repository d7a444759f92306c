//! How an agent learns its platform: `/etc/os-release` (or `/usr/lib/os-release`, where the
//! first is absent) for the distribution's `ID` and `VERSION_ID`, and the kernel's release from
//! `/proc/sys/kernel/osrelease`; the role comes from the node's configuration. Owns the reading of
//! those files' text and the probes it takes. It never guesses: what could not be read is
//! reported as unknown, with why.

use super::checks::{FileFacts, Observation, Probe};

pub const OS_RELEASE: &str = "/etc/os-release";
pub const OS_RELEASE_FALLBACK: &str = "/usr/lib/os-release";
pub const KERNEL_RELEASE: &str = "/proc/sys/kernel/osrelease";
/// What a platform field reads when it could not be detected.
pub const UNKNOWN: &str = "unknown";

/// The distribution's `ID` and `VERSION_ID` from os-release text (shell-style `KEY=value`
/// lines, values optionally quoted). A distribution without `VERSION_ID` (a rolling one) reads
/// as version `rolling`.
pub fn parse_os_release(text: &str) -> Result<(String, String), String> {
    let mut id = None;
    let mut version = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = unquote(value.trim());
        if value.is_empty() || value.len() > 64 || value.chars().any(|c| c.is_control() || c == '/') {
            continue;
        }
        match key.trim() {
            "ID" => id = Some(value),
            "VERSION_ID" => version = Some(value),
            _ => {}
        }
    }
    let id = id.ok_or_else(|| "os-release names no ID".to_owned())?;
    Ok((id, version.unwrap_or_else(|| "rolling".to_owned())))
}

/// A value with its quotes (and the backslash escapes os-release allows inside them) removed.
fn unquote(value: &str) -> String {
    let inner = match value.as_bytes() {
        [b'"', .., b'"'] | [b'\'', .., b'\''] if value.len() >= 2 => &value[1..value.len() - 1],
        _ => value,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// The kernel release: the first line of `/proc/sys/kernel/osrelease`, if it is printable.
pub fn parse_kernel(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty() && line.len() <= 128 && !line.chars().any(char::is_control)).then(|| line.to_owned())
}

/// What detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub os: String,
    pub os_version: String,
    pub kernel: Option<String>,
    /// Why the distribution could not be read, when it could not.
    pub error: Option<String>,
}

/// Which file a detection probe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    OsRelease,
    OsReleaseFallback,
    Kernel,
}

/// A detection under way: the probes it waits on, by number.
#[derive(Debug, Default)]
pub struct Detection {
    waiting: Vec<(u64, Reading)>,
    os: Option<Result<(String, String), String>>,
    kernel: Option<String>,
}

impl Detection {
    /// Starts detecting: returns the probes to make, numbered from `next_probe`.
    pub fn start(next_probe: &mut u64) -> (Detection, Vec<(u64, Probe)>) {
        let mut detection = Detection::default();
        let probes = [Reading::OsRelease, Reading::Kernel]
            .into_iter()
            .map(|reading| detection.ask(next_probe, reading))
            .collect();
        (detection, probes)
    }

    fn ask(&mut self, next_probe: &mut u64, reading: Reading) -> (u64, Probe) {
        let probe = *next_probe;
        *next_probe += 1;
        self.waiting.push((probe, reading));
        let path = match reading {
            Reading::OsRelease => OS_RELEASE,
            Reading::OsReleaseFallback => OS_RELEASE_FALLBACK,
            Reading::Kernel => KERNEL_RELEASE,
        };
        (probe, Probe::Inspect { path: path.to_owned(), read: true })
    }

    pub fn waits_on(&self, probe: u64) -> bool {
        self.waiting.iter().any(|(p, _)| *p == probe)
    }

    /// One probe's observation; may ask one more probe (the fallback os-release).
    pub fn observed(&mut self, probe: u64, seen: &Observation, next_probe: &mut u64) -> Option<(u64, Probe)> {
        let at = self.waiting.iter().position(|(p, _)| *p == probe)?;
        let (_, reading) = self.waiting.remove(at);
        let content = |seen: &Observation| -> Result<Option<Vec<u8>>, String> {
            match seen {
                Observation::File(Ok(Some(FileFacts { content: Some(bytes), .. }))) => {
                    Ok(Some(bytes.clone()))
                }
                Observation::File(Ok(Some(_))) => Err("it could not be read".to_owned()),
                Observation::File(Ok(None)) => Ok(None),
                Observation::File(Err(e)) => Err(e.clone()),
                Observation::Ran { .. } | Observation::Sockets(_) => {
                    Err("an unexpected observation".to_owned())
                }
            }
        };
        match (reading, content(seen)) {
            (Reading::Kernel, Ok(Some(bytes))) => self.kernel = parse_kernel(&bytes),
            (Reading::Kernel, _) => {}
            (Reading::OsRelease, Ok(None)) => return Some(self.ask(next_probe, Reading::OsReleaseFallback)),
            (Reading::OsRelease | Reading::OsReleaseFallback, Ok(Some(bytes))) => {
                self.os = Some(parse_os_release(&String::from_utf8_lossy(&bytes)));
            }
            (Reading::OsReleaseFallback, Ok(None)) => {
                self.os = Some(Err(format!("neither {OS_RELEASE} nor {OS_RELEASE_FALLBACK} exists")));
            }
            (_, Err(e)) => self.os = Some(Err(format!("{OS_RELEASE}: {e}"))),
        }
        None
    }

    /// What was found, once nothing is awaited.
    pub fn finished(&self) -> Option<Detected> {
        if !self.waiting.is_empty() {
            return None;
        }
        let (os, os_version, error) = match &self.os {
            Some(Ok((os, version))) => (os.clone(), version.clone(), None),
            Some(Err(e)) => (UNKNOWN.to_owned(), UNKNOWN.to_owned(), Some(e.clone())),
            None => (UNKNOWN.to_owned(), UNKNOWN.to_owned(), Some("os-release was not read".to_owned())),
        };
        Some(Detected { os, os_version, kernel: self.kernel.clone(), error })
    }
}

/// What the driver reports for a readable file holding `text` (for tests).
#[cfg(test)]
pub(crate) fn readable(text: &str) -> Observation {
    Observation::File(Ok(Some(FileFacts {
        is_file: true,
        mode: 0o644,
        size: text.len() as u64,
        content: Some(text.as_bytes().to_vec()),
        ..FileFacts::default()
    })))
}

#[cfg(test)]
mod tests {
    use super::readable as file;
    use super::*;

    #[test]
    fn os_release_as_distributions_write_it() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(parse_os_release(debian), Ok(("debian".into(), "12".into())));
        let rhel = "# comment\nID='rhel'\nVERSION_ID=\"9.4\"\n";
        assert_eq!(parse_os_release(rhel), Ok(("rhel".into(), "9.4".into())));
        assert_eq!(parse_os_release("ID=arch\nBUILD_ID=rolling\n"), Ok(("arch".into(), "rolling".into())));
        assert!(parse_os_release("NAME=x\n").is_err());
        // A value that would break the platform key (`os/version/role`) is not taken.
        assert!(parse_os_release("ID=\"a/b\"\n").is_err());
    }

    #[test]
    fn detection_reads_both_files_and_falls_back_when_the_first_is_absent() {
        let mut next = 1;
        let (mut d, probes) = Detection::start(&mut next);
        assert_eq!(probes.len(), 2);
        let (os_probe, kernel_probe) = (probes[0].0, probes[1].0);
        let fallback =
            d.observed(os_probe, &Observation::File(Ok(None)), &mut next).expect("asks the fallback");
        assert_eq!(fallback.1, Probe::Inspect { path: OS_RELEASE_FALLBACK.into(), read: true });
        assert!(d.observed(kernel_probe, &file("6.1.0-21-amd64\n"), &mut next).is_none());
        assert_eq!(d.finished(), None, "still waiting on the fallback");
        d.observed(fallback.0, &file("ID=ubuntu\nVERSION_ID=\"24.04\"\n"), &mut next);
        assert_eq!(
            d.finished(),
            Some(Detected {
                os: "ubuntu".into(),
                os_version: "24.04".into(),
                kernel: Some("6.1.0-21-amd64".into()),
                error: None
            })
        );
    }

    #[test]
    fn an_unreadable_os_release_is_unknown_and_says_why() {
        let mut next = 1;
        let (mut d, probes) = Detection::start(&mut next);
        d.observed(probes[0].0, &Observation::File(Err("permission denied".into())), &mut next);
        d.observed(probes[1].0, &Observation::File(Ok(None)), &mut next);
        let found = d.finished().expect("done");
        assert_eq!((found.os.as_str(), found.kernel), (UNKNOWN, None));
        assert!(found.error.is_some_and(|e| e.contains("permission denied")));
    }
}
