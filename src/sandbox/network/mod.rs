//! The sandbox's network policy (SPEC section 15): which phase of a job may reach what.
//!
//! Every sandbox gets its own network namespace with only a loopback interface, in every
//! mode: nothing inside can open a socket that reaches the host or the outside by
//! itself (no routes, no DNS, no `/etc/resolv.conf`; abstract Unix sockets are per
//! namespace too). In `allowlist` and `open` mode the only way out is the runner's
//! egress proxy ([`proxy`]): a forwarder ([`forward`]) listens on the sandbox's own
//! loopback, where `http_proxy`/`https_proxy` point, and carries each connection over
//! a Unix socket bound into the sandbox to the proxy, which decides per request
//! ([`Policy::decide`]) and dials out itself. The decision is made on the resolved
//! address, which is the address dialled, so a name that resolves (or rebinds) to the
//! host is refused however it is spelled.
//!
//! This is the design of Anthropic's `sandbox-runtime`, written for Repobox; the lesson
//! of claude-code-action #341 (an allowlist enforced only by proxy variables, on a
//! sandbox that shared the host's network, is bypassed by any program that ignores
//! them) is why the namespace, not the variables, is the boundary.

pub mod forward;
pub mod proxy;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where a sandbox runs in a job; each has its own mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `.repobox.yml` `setup` commands, before the agent.
    Setup,
    /// The agent (the `command` agent, the `claude` agent's shell).
    Agent,
    /// `.repobox.yml` `check` commands run by the runner.
    Check,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Setup, Phase::Agent, Phase::Check];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Agent => "agent",
            Phase::Check => "check",
        }
    }

    fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// How much network one phase gets, narrowest first (the order is used to compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only.
    None,
    /// HTTP(S) through the proxy to the allowlisted hosts.
    Allowlist,
    /// HTTP(S) through the proxy to anything but the host's own, link-local and
    /// metadata addresses.
    Open,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Allowlist => "allowlist",
            NetworkMode::Open => "open",
        }
    }

    fn parse(text: &str) -> Option<NetworkMode> {
        match text {
            "none" => Some(NetworkMode::None),
            "allowlist" => Some(NetworkMode::Allowlist),
            "open" => Some(NetworkMode::Open),
            _ => None,
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode per phase: the admin's widest (`REPOBOX_SANDBOX_MODES`) or a repository's
/// choice (`.repobox.yml` `network:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseModes {
    pub setup: NetworkMode,
    pub agent: NetworkMode,
    pub check: NetworkMode,
}

impl Default for PhaseModes {
    /// `setup:allowlist,agent:none,check:none`.
    fn default() -> Self {
        PhaseModes {
            setup: NetworkMode::Allowlist,
            agent: NetworkMode::None,
            check: NetworkMode::None,
        }
    }
}

impl PhaseModes {
    pub fn get(&self, phase: Phase) -> NetworkMode {
        match phase {
            Phase::Setup => self.setup,
            Phase::Agent => self.agent,
            Phase::Check => self.check,
        }
    }

    fn set(&mut self, phase: Phase, mode: NetworkMode) {
        match phase {
            Phase::Setup => self.setup = mode,
            Phase::Agent => self.agent = mode,
            Phase::Check => self.check = mode,
        }
    }

    /// `setup:allowlist,agent:none,check:none`; a phase left out keeps its default.
    pub fn parse(text: &str) -> Result<PhaseModes, String> {
        let mut modes = PhaseModes::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (phase, mode) = item
                .split_once(':')
                .ok_or_else(|| format!("`{item}` is not `phase:mode`"))?;
            let phase = Phase::parse(phase.trim())
                .ok_or_else(|| format!("unknown phase `{phase}` (setup, agent, check)"))?;
            let mode = NetworkMode::parse(mode.trim())
                .ok_or_else(|| format!("unknown mode `{mode}` (none, allowlist, open)"))?;
            modes.set(phase, mode);
        }
        Ok(modes)
    }

    /// The modes a repository asks for, checked against these (the admin's): each
    /// phase the repository names gets its mode if it is as narrow or narrower; one it
    /// leaves out gets the admin's. A wider request is an error naming both.
    pub fn narrowed_by(&self, wanted: &RepoNetwork) -> Result<PhaseModes, String> {
        let mut out = *self;
        for phase in Phase::ALL {
            let Some(mode) = wanted.get(phase) else {
                continue;
            };
            let allowed = self.get(phase);
            if mode > allowed {
                return Err(format!(
                    ".repobox.yml asks for network `{mode}` in {phase}, wider than the `{allowed}` this Repobox allows (REPOBOX_SANDBOX_MODES {phase}:{allowed})",
                    phase = phase.as_str()
                ));
            }
            out.set(phase, mode);
        }
        Ok(out)
    }
}

impl fmt::Display for PhaseModes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "setup:{},agent:{},check:{}",
            self.setup, self.agent, self.check
        )
    }
}

/// `.repobox.yml` `network: {setup: …, agent: …, check: …}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepoNetwork {
    pub setup: Option<NetworkMode>,
    pub agent: Option<NetworkMode>,
    pub check: Option<NetworkMode>,
}

impl RepoNetwork {
    fn get(&self, phase: Phase) -> Option<NetworkMode> {
        match phase {
            Phase::Setup => self.setup,
            Phase::Agent => self.agent,
            Phase::Check => self.check,
        }
    }
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `host` or `host:port`: that name (any port without one).
    Name { name: String, port: Option<u16> },
    /// `*.domain` or `*.domain:port`: every name below `domain` (not `domain` itself).
    Suffix { domain: String, port: Option<u16> },
    /// `ip` (any port; never the host's own addresses) or `ip:port` (that socket, the
    /// only entry that may reach the host: SPEC 15).
    Ip { ip: IpAddr, port: Option<u16> },
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim();
        let bad =
            |why: &str| format!("`{text}` {why} (expected host, *.domain, host:port or ip:port)");
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        let (host, port) = split_host_port(text).ok_or_else(|| bad("has a bad port"))?;
        if let Some(ip) = parse_ip(host) {
            return Ok(HostPattern::Ip { ip, port });
        }
        let name = normalize_name(host);
        if let Some(domain) = name.strip_prefix("*.") {
            if !valid_name(domain) {
                return Err(bad("is not a domain pattern"));
            }
            return Ok(HostPattern::Suffix {
                domain: domain.to_owned(),
                port,
            });
        }
        if !valid_name(&name) {
            return Err(bad("is not a host name"));
        }
        Ok(HostPattern::Name { name, port })
    }

    fn port(&self) -> Option<u16> {
        match self {
            HostPattern::Name { port, .. }
            | HostPattern::Suffix { port, .. }
            | HostPattern::Ip { port, .. } => *port,
        }
    }

    /// Whether a request for `host` (a normalised name or an IP literal) and `port`
    /// matches this entry.
    fn matches(&self, host: &Host, port: u16) -> bool {
        if self.port().is_some_and(|p| p != port) {
            return false;
        }
        match (self, host) {
            (HostPattern::Name { name, .. }, Host::Name(h)) => name == h,
            (HostPattern::Suffix { domain, .. }, Host::Name(h)) => h
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            (HostPattern::Ip { ip, .. }, Host::Ip(h)) => ip == h,
            _ => false,
        }
    }

    /// An `ip:port` entry for exactly this socket: may reach the host's own addresses.
    fn is_explicit_socket(&self, ip: IpAddr, port: u16) -> bool {
        matches!(self, HostPattern::Ip { ip: i, port: Some(p) } if *i == ip && *p == port)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, port) = match self {
            HostPattern::Name { name, port } => (name.clone(), port),
            HostPattern::Suffix { domain, port } => (format!("*.{domain}"), port),
            HostPattern::Ip {
                ip: IpAddr::V6(ip),
                port: Some(p),
            } => {
                return write!(f, "[{ip}]:{p}");
            }
            HostPattern::Ip { ip, port } => (ip.to_string(), port),
        };
        match port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

/// The allowlist: `REPOBOX_SANDBOX_ALLOW` plus the admin setting `sandbox_allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(pub Vec<HostPattern>);

impl Allowlist {
    /// A comma (or whitespace) separated list.
    pub fn parse(text: &str) -> Result<Allowlist, String> {
        text.split([',', ' ', '\n', '\t', '\r'])
            .filter(|s| !s.trim().is_empty())
            .map(HostPattern::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Allowlist)
    }

    /// Both lists, this one's entries first.
    pub fn extended(&self, more: &[HostPattern]) -> Allowlist {
        let mut all = self.0.clone();
        all.extend(more.iter().filter(|p| !self.0.contains(p)).cloned());
        Allowlist(all)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join(","))
    }
}

/// The host part of a request, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    pub fn parse(text: &str) -> Host {
        match parse_ip(text) {
            Some(ip) => Host::Ip(ip),
            None => Host::Name(normalize_name(text)),
        }
    }
}

/// Why the proxy refused a connection; the text goes to the job log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// As the request named it.
    pub host: String,
    pub port: u16,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.host, self.port, self.reason)
    }
}

/// What the egress proxy of one sandbox lets through.
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: NetworkMode,
    pub allow: Allowlist,
    /// The addresses no name, pattern or `open` may reach ([`host_addresses`] plus the
    /// fixed ranges of [`always_forbidden`]).
    pub host_addresses: Vec<IpAddr>,
}

impl Policy {
    pub fn new(mode: NetworkMode, allow: Allowlist) -> Policy {
        Policy {
            mode,
            allow,
            host_addresses: host_addresses(),
        }
    }

    /// The addresses to dial for `host:port`, or why not. `resolve` turns a name into
    /// addresses (the proxy passes the system resolver; tests pass a table).
    pub async fn decide<F, Fut>(
        &self,
        host: &str,
        port: u16,
        resolve: F,
    ) -> Result<Vec<SocketAddr>, Refusal>
    where
        F: FnOnce(String, u16) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<Vec<SocketAddr>>>,
    {
        let refuse = |reason: &str| Refusal {
            host: host.to_owned(),
            port,
            reason: reason.to_owned(),
        };
        let parsed = Host::parse(host);
        if let Host::Name(name) = &parsed
            && !valid_name(name)
        {
            return Err(refuse("not a host name"));
        }
        if port == 0 {
            return Err(refuse("port 0"));
        }
        match self.mode {
            NetworkMode::None => return Err(refuse("this phase has no network")),
            NetworkMode::Allowlist => {
                if !self.allow.0.iter().any(|p| p.matches(&parsed, port)) {
                    return Err(refuse("not in the allowlist"));
                }
            }
            NetworkMode::Open => {}
        }
        // Only a literal address can match an explicit `ip:port` entry: a name never
        // reaches the host, whatever it resolves to.
        let literal = matches!(parsed, Host::Ip(_));
        let addrs = match parsed {
            Host::Ip(ip) => vec![SocketAddr::new(ip, port)],
            Host::Name(name) => resolve(name, port)
                .await
                .map_err(|e| refuse(&format!("does not resolve: {e}")))?,
        };
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .map(|a| SocketAddr::new(canonical(a.ip()), a.port()))
            .filter(|a| self.may_dial(*a, literal))
            .collect();
        if allowed.is_empty() {
            return Err(refuse(if addrs.is_empty() {
                "does not resolve"
            } else {
                "an address of the runner host, link-local or metadata"
            }));
        }
        Ok(allowed)
    }

    /// Whether the proxy may connect to `addr`: never to the host's own, link-local or
    /// metadata addresses, except an `ip:port` allowlist entry naming exactly it when
    /// the request named the address itself (`literal`).
    fn may_dial(&self, addr: SocketAddr, literal: bool) -> bool {
        let ip = addr.ip();
        if literal
            && self
                .allow
                .0
                .iter()
                .any(|p| p.is_explicit_socket(ip, addr.port()))
        {
            return true;
        }
        !(always_forbidden(ip) || self.host_addresses.contains(&ip))
    }
}

/// Addresses no sandbox reaches through a name, a pattern or `open`: loopback,
/// unspecified ("this host"), link-local (which holds the cloud metadata address
/// 169.254.169.254), multicast and broadcast, and the metadata addresses outside
/// link-local (AWS's IPv6 `fd00:ec2::254`, Alibaba's `100.100.100.200`).
pub fn always_forbidden(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 0
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// IPv4-mapped (`::ffff:127.0.0.1`) and -compatible IPv6 addresses as the IPv4 address
/// they reach, so no spelling slips past a check.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                if s[..6].iter().all(|x| *x == 0) && !v6.is_loopback() && !v6.is_unspecified() {
                    IpAddr::V4(Ipv4Addr::new(
                        (s[6] >> 8) as u8,
                        s[6] as u8,
                        (s[7] >> 8) as u8,
                        s[7] as u8,
                    ))
                } else {
                    ip
                }
            }
        },
        v4 => v4,
    }
}

/// Every address of the runner host's interfaces (canonical), from `getifaddrs`.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = match nix::ifaddrs::getifaddrs() {
        Ok(list) => list
            .filter_map(|ifa| {
                let addr = ifa.address?;
                if let Some(v4) = addr.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    addr.as_sockaddr_in6()
                        .map(|v6| canonical(IpAddr::V6(v6.ip())))
                }
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
pub(crate) fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    if text.matches(':').count() > 1 {
        // A bare IPv6 address has no port.
        return Some((text, None));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim_start_matches('[').trim_end_matches(']');
    text.parse::<IpAddr>().ok().map(canonical)
}

fn normalize_name(text: &str) -> String {
    text.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Letters, digits, `-`, `_` and dots between non-empty labels (`*.` allowed first).
fn valid_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(
        addrs: &'static [&'static str],
    ) -> impl FnOnce(String, u16) -> std::future::Ready<std::io::Result<Vec<SocketAddr>>> {
        move |_, port| {
            std::future::ready(Ok(addrs
                .iter()
                .map(|a| SocketAddr::new(a.parse().unwrap(), port))
                .collect()))
        }
    }

    fn policy(mode: NetworkMode, allow: &str) -> Policy {
        Policy {
            mode,
            allow: Allowlist::parse(allow).unwrap(),
            host_addresses: vec!["10.1.2.3".parse().unwrap()],
        }
    }

    #[test]
    fn modes_parse_with_defaults_for_phases_left_out() {
        assert_eq!(
            PhaseModes::parse("setup:allowlist,agent:none,check:none").unwrap(),
            PhaseModes::default()
        );
        let m = PhaseModes::parse("agent:open").unwrap();
        assert_eq!(m.agent, NetworkMode::Open);
        assert_eq!(m.setup, NetworkMode::Allowlist);
        assert_eq!(m.to_string(), "setup:allowlist,agent:open,check:none");
        assert!(
            PhaseModes::parse("agent:wide")
                .unwrap_err()
                .contains("wide")
        );
        assert!(
            PhaseModes::parse("build:none")
                .unwrap_err()
                .contains("build")
        );
        assert!(PhaseModes::parse("agent").is_err());
    }

    #[test]
    fn a_repository_may_narrow_but_not_widen() {
        let admin = PhaseModes::default();
        let narrower = RepoNetwork {
            setup: Some(NetworkMode::None),
            ..Default::default()
        };
        assert_eq!(
            admin.narrowed_by(&narrower).unwrap().setup,
            NetworkMode::None
        );
        let wider = RepoNetwork {
            agent: Some(NetworkMode::Allowlist),
            ..Default::default()
        };
        let err = admin.narrowed_by(&wider).unwrap_err();
        assert!(err.contains("`allowlist` in agent"), "{err}");
        assert!(err.contains("agent:none"), "{err}");
    }

    #[test]
    fn patterns_parse_and_print() {
        for text in [
            "example.com",
            "*.npmjs.org",
            "registry.example.com:8443",
            "127.0.0.1:8080",
            "10.0.0.5",
            "[::1]:9000",
        ] {
            assert_eq!(HostPattern::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            HostPattern::parse("Example.COM.").unwrap().to_string(),
            "example.com"
        );
        for bad in ["", "exa mple.com", "host:port", "*.", "a..b", "http://x"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn allowlist_mode_lets_listed_names_through_and_refuses_the_rest() {
        let p = policy(
            NetworkMode::Allowlist,
            "example.com,*.npmjs.org,pypi.org:443",
        );
        let public = table(&["93.184.215.14"]);
        assert!(p.decide("example.com", 8080, public).await.is_ok());
        assert!(
            p.decide("EXAMPLE.com.", 443, table(&["93.184.215.14"]))
                .await
                .is_ok()
        );
        assert!(
            p.decide("registry.npmjs.org", 443, table(&["1.2.3.4"]))
                .await
                .is_ok()
        );
        let r = p
            .decide("npmjs.org", 443, table(&["1.2.3.4"]))
            .await
            .unwrap_err();
        assert_eq!(r.reason, "not in the allowlist");
        assert!(
            p.decide("evilnpmjs.org", 443, table(&["1.2.3.4"]))
                .await
                .is_err()
        );
        assert!(p.decide("pypi.org", 443, table(&["1.2.3.4"])).await.is_ok());
        assert!(p.decide("pypi.org", 80, table(&["1.2.3.4"])).await.is_err());
        assert!(p.decide("93.184.215.14", 443, table(&[])).await.is_err());
    }

    #[tokio::test]
    async fn names_never_reach_the_host_however_they_resolve() {
        let p = policy(NetworkMode::Allowlist, "example.com,10.1.2.3");
        for addr in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "fe80::1",
            "10.1.2.3",
            "fd00:ec2::254",
        ] {
            let resolve = move |_: String, port: u16| {
                std::future::ready(Ok(vec![SocketAddr::new(addr.parse().unwrap(), port)]))
            };
            let r = p.decide("example.com", 80, resolve).await.unwrap_err();
            assert!(r.reason.contains("runner host"), "{addr}: {r}");
        }
        // A listed IP without a port is no way to the host either.
        assert!(p.decide("10.1.2.3", 80, table(&[])).await.is_err());
        // A name with one good and one bad address dials only the good one.
        let two = table(&["127.0.0.1", "93.184.215.14"]);
        let addrs = p.decide("example.com", 80, two).await.unwrap();
        assert_eq!(addrs, vec!["93.184.215.14:80".parse().unwrap()]);
    }

    #[tokio::test]
    async fn only_an_explicit_ip_port_entry_reaches_the_host() {
        let p = policy(NetworkMode::Allowlist, "127.0.0.1:8080");
        assert!(p.decide("127.0.0.1", 8080, table(&[])).await.is_ok());
        assert!(
            p.decide("[::ffff:127.0.0.1]", 8080, table(&[]))
                .await
                .is_ok()
        );
        assert!(p.decide("127.0.0.1", 8081, table(&[])).await.is_err());
        let r = p
            .decide("localhost", 8080, table(&["127.0.0.1"]))
            .await
            .unwrap_err();
        assert_eq!(r.reason, "not in the allowlist");
        // Open mode never reaches the host, except the same explicit entry.
        let open = policy(NetworkMode::Open, "127.0.0.1:8080");
        assert!(
            open.decide("anything.example", 443, table(&["8.8.8.8"]))
                .await
                .is_ok()
        );
        assert!(open.decide("127.0.0.1", 6379, table(&[])).await.is_err());
        assert!(
            open.decide("169.254.169.254", 80, table(&[]))
                .await
                .is_err()
        );
        assert!(
            open.decide("localhost", 8080, table(&["127.0.0.1"]))
                .await
                .is_err()
        );
        assert!(open.decide("10.1.2.3", 22, table(&[])).await.is_err());
        assert!(open.decide("127.0.0.1", 8080, table(&[])).await.is_ok());
    }

    #[test]
    fn ipv4_in_ipv6_spellings_are_caught() {
        for text in ["::ffff:127.0.0.1", "::127.0.0.1", "::ffff:169.254.169.254"] {
            assert!(always_forbidden(text.parse().unwrap()), "{text}");
        }
        assert!(!always_forbidden("93.184.215.14".parse().unwrap()));
        assert!(!always_forbidden("2606:2800:220:1::".parse().unwrap()));
    }

    #[test]
    fn the_host_has_addresses() {
        let addrs = host_addresses();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
    }
}
