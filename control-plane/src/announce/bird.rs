//! BGP announcements through BIRD 2, the daemon an operator already runs.
//!
//! The agent owns one file, included by the operator's `bird.conf`: it holds
//! two static protocols, `xlb_vips_v4` and `xlb_vips_v6`, with a host route
//! per VIP to announce. The operator's BGP sessions export them (`export
//! where proto = "xlb_vips_v4";`) with their own policy (next hop, communities,
//! MED). To change the set the agent rewrites the file (a new file renamed over
//! the old: BIRD never reads half of one) and asks BIRD to reconfigure over its
//! control socket, which only re-announces the routes that changed: BGP
//! sessions stay up. A BIRD that restarts reads the file as the agent left it.
//!
//! The routes are blackholes: BIRD never installs them (the operator's
//! configuration has no kernel export for these protocols), they only carry
//! the prefix into BGP.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::{self, BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

/// How long BIRD may take to answer one command (a reconfiguration of a
/// large configuration takes a while).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The names of the static protocols in the included file.
pub const PROTOCOL_V4: &str = "xlb_vips_v4";
pub const PROTOCOL_V6: &str = "xlb_vips_v6";

/// Why BIRD did not take an announcement.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("BIRD's control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// BIRD answered with an error (its code and text): a configuration it
    /// cannot parse, a reconfiguration it refuses.
    #[error("BIRD refused `configure`: {code} {text}")]
    Refused { code: u16, text: String },
}

/// A BIRD daemon reached through its control socket, and the file of routes
/// it includes.
#[derive(Clone, Debug)]
pub struct Bird {
    socket: PathBuf,
    include: PathBuf,
}

impl Bird {
    pub fn new(socket: PathBuf, include: PathBuf) -> Self {
        Self { socket, include }
    }

    /// Makes BIRD announce exactly `vips`.
    pub fn announce(&self, vips: &BTreeSet<IpAddr>) -> Result<(), BirdError> {
        write_atomically(&self.include, &routes_file(vips)).map_err(|source| BirdError::Write {
            path: self.include.clone(),
            source,
        })?;
        configure(&self.socket)
    }

    /// The VIPs the included file routes, as the last agent to write it
    /// left it: what BIRD announces once it has read it (an agent that has
    /// not announced yet shows it, [`super::Announcer::views`]). No file:
    /// none.
    pub fn routed(&self) -> io::Result<BTreeSet<IpAddr>> {
        match std::fs::read_to_string(&self.include) {
            Ok(text) => routed_vips(&text).map_err(|line| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not a route of the agent's: {line:?}",
                        self.include.display()
                    ),
                )
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(error) => Err(error),
        }
    }
}

/// The included file: both protocols always exist (empty when nothing is
/// announced), so the operator's filters can name them.
pub fn routes_file(vips: &BTreeSet<IpAddr>) -> String {
    let mut out = String::from(
        "# Written by the xlb agent: the VIPs it can serve. Do not edit; \
         included from bird.conf.\n",
    );
    for (name, channel, v4) in [(PROTOCOL_V4, "ipv4", true), (PROTOCOL_V6, "ipv6", false)] {
        let _ = writeln!(out, "protocol static {name} {{\n    {channel};");
        for vip in vips.iter().filter(|vip| vip.is_ipv4() == v4) {
            let bits = if v4 { 32 } else { 128 };
            let _ = writeln!(out, "    route {vip}/{bits} blackhole;");
        }
        out.push_str("}\n");
    }
    out
}

/// The VIPs of a file [`routes_file`] wrote; the first `route` line it
/// cannot read (not the agent's own, say) is the error.
fn routed_vips(text: &str) -> Result<BTreeSet<IpAddr>, &str> {
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with("route "))
        .map(|line| {
            line.strip_prefix("route ")
                .and_then(|rest| rest.strip_suffix(" blackhole;"))
                .and_then(|prefix| prefix.split_once('/'))
                .and_then(|(vip, _bits)| vip.parse().ok())
                .ok_or(line)
        })
        .collect()
}

/// Writes `path` whole, through a new file renamed over it: BIRD never
/// reads half of it. Its directory is not created: the agent checked it at
/// start (`--bird-include`).
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// Sends `configure` and reads BIRD's reply to the end.
fn configure(socket: &Path) -> Result<(), BirdError> {
    let failed = |source| BirdError::Socket {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(failed)?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
        .map_err(failed)?;
    let mut lines = BufReader::new(stream.try_clone().map_err(failed)?).lines();
    // The greeting: "0001 BIRD 2.0.12 ready."
    reply(&mut lines).map_err(failed)?;
    stream.write_all(b"configure\n").map_err(failed)?;
    let (code, text) = reply(&mut lines).map_err(failed)?;
    match code {
        // Reconfigured; in progress; queued behind one in progress.
        3..=5 => Ok(()),
        _ => Err(BirdError::Refused { code, text }),
    }
}

/// Reads one reply: lines `NNNN-text` continue it, `NNNN text` ends it, and
/// lines starting with a space continue the previous line. Returns the final
/// code and every line's text (the error is usually on an earlier line).
fn reply(lines: &mut impl Iterator<Item = io::Result<String>>) -> io::Result<(u16, String)> {
    let mut text = Vec::new();
    loop {
        let line = lines.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "BIRD closed the connection")
        })??;
        if let Some(rest) = line.strip_prefix(' ') {
            text.push(rest.to_owned());
            continue;
        }
        let (code, rest) = line.split_at_checked(4).unwrap_or((&line, ""));
        let code: u16 = code.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a BIRD reply line: {line:?}"),
            )
        })?;
        let (last, message) = match rest.chars().next() {
            Some('-') => (false, &rest[1..]),
            _ => (true, rest.trim_start()),
        };
        text.push(message.to_owned());
        if last {
            return Ok((code, text.join("; ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::net::UnixListener, thread};

    use super::*;

    #[test]
    fn the_file_holds_one_host_route_per_vip_in_its_family() {
        let vips: BTreeSet<IpAddr> = ["198.19.0.1", "2001:2:1::1", "198.19.0.2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let file = routes_file(&vips);
        let body: Vec<&str> = file.lines().skip(1).collect();
        assert_eq!(
            body,
            [
                "protocol static xlb_vips_v4 {",
                "    ipv4;",
                "    route 198.19.0.1/32 blackhole;",
                "    route 198.19.0.2/32 blackhole;",
                "}",
                "protocol static xlb_vips_v6 {",
                "    ipv6;",
                "    route 2001:2:1::1/128 blackhole;",
                "}",
            ]
        );
        let empty = routes_file(&BTreeSet::new());
        assert!(empty.contains("protocol static xlb_vips_v4 {\n    ipv4;\n}"));
        assert!(empty.contains("protocol static xlb_vips_v6 {\n    ipv6;\n}"));
    }

    #[test]
    fn the_vips_are_read_back_from_the_file_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let include = dir.path().join("xlb-vips.conf");
        let bird = Bird::new(dir.path().join("bird.ctl"), include.clone());
        // Never written: nothing routed.
        assert_eq!(bird.routed().unwrap(), BTreeSet::new());
        let vips: BTreeSet<IpAddr> = ["198.19.0.1", "2001:2:1::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        std::fs::write(&include, routes_file(&vips)).unwrap();
        assert_eq!(bird.routed().unwrap(), vips);
        // Someone else's route is an error, not a guess.
        std::fs::write(
            &include,
            "protocol static x {\n    route 198.19.0.0/24 via 198.18.0.1;\n}\n",
        )
        .unwrap();
        let error = bird.routed().unwrap_err();
        assert!(error.to_string().contains("198.19.0.0/24 via"), "{error}");
    }

    /// A stand-in for BIRD's control socket that answers `configure` with
    /// `answer` and records what it was sent.
    fn fake_bird(dir: &Path, answer: &'static str) -> (PathBuf, thread::JoinHandle<String>) {
        let socket = dir.join("bird.ctl");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
            let mut command = String::new();
            BufReader::new(&stream).read_line(&mut command).unwrap();
            stream.write_all(answer.as_bytes()).unwrap();
            command
        });
        (socket, server)
    }

    #[test]
    fn a_reconfiguration_bird_accepts_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, server) = fake_bird(
            dir.path(),
            "0002-Reading configuration from /etc/bird/bird.conf\n0003 Reconfigured\n",
        );
        let include = dir.path().join("xlb-vips.conf");
        let vips = BTreeSet::from(["198.19.0.1".parse().unwrap()]);
        Bird::new(socket, include.clone()).announce(&vips).unwrap();
        assert_eq!(server.join().unwrap(), "configure\n");
        assert_eq!(
            std::fs::read_to_string(include).unwrap(),
            routes_file(&vips)
        );
    }

    #[test]
    fn a_configuration_error_is_reported_with_birds_words() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, server) = fake_bird(
            dir.path(),
            "0002-Reading configuration from /etc/bird/bird.conf\n\
             8002 /run/xlb/bird-vips.conf:3:5 syntax error\n",
        );
        let error = Bird::new(socket, dir.path().join("vips.conf"))
            .announce(&BTreeSet::new())
            .unwrap_err();
        server.join().unwrap();
        let BirdError::Refused { code, text } = &error else {
            panic!("{error}");
        };
        assert_eq!(*code, 8002);
        assert!(text.contains("syntax error"), "{text}");
        assert!(text.contains("Reading configuration"), "{text}");
    }

    #[test]
    fn no_daemon_is_a_socket_error_and_the_file_is_still_written() {
        let dir = tempfile::tempdir().unwrap();
        let include = dir.path().join("vips.conf");
        let error = Bird::new(dir.path().join("missing.ctl"), include.clone())
            .announce(&BTreeSet::new())
            .unwrap_err();
        assert!(matches!(error, BirdError::Socket { .. }), "{error}");
        // A BIRD that starts later reads it.
        assert!(include.exists());
    }

    #[test]
    fn continuation_lines_join_the_reply() {
        let mut lines = ["1002-first", " more of it", "0000 done"]
            .into_iter()
            .map(|l| Ok(l.to_owned()));
        assert_eq!(
            reply(&mut lines).unwrap(),
            (0, "first; more of it; done".to_owned())
        );
        let mut garbage = std::iter::once(Ok("hello".to_owned()));
        assert_eq!(
            reply(&mut garbage).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
